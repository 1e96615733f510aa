//! The deny-list's and registry's Lua scripts, one file each under `lua/`.
//! Every write goes through one of them, so that a write, its event on the
//! stream replicas follow and its count move in one atomic step, and repeated
//! or reordered jobs converge on the same state. With the last argument
//! "repeats" set to 1 (the job applier's and the resync's writes, see
//! [`super::DenyList::announcing_repeats`]) an entry found already as it
//! would be written is announced on the stream all the same.

use std::sync::LazyLock;

use redis::Script;

/// Sets each of a list of entries unless one ending as late or later is
/// already there and, for each it changed, appends the event that local
/// replicas follow — in the same script, so the stream never lags the
/// deny-list — and moves the entry in the count hash. Ends are compared as
/// absolute times (`EXPIRETIME`, Redis 7.0), so a rebuild or cleanup that
/// finds an entry as it would write it leaves it alone (a rounded remaining
/// TTL against a floored target rewrote most keys). Many entries go in one
/// call: a call's own cost (~9 µs of Redis, measured with `INFO
/// commandstats` while `bench_worker` drained 100,000 jobs, one call each)
/// was larger than its entry's writes (~6 µs).
/// KEYS[1] event stream, KEYS[2] count hash, KEYS[3..] entry keys; ARGV[1]
/// stream MAXLEN, ARGV[2] repeats, then per entry (in the order of the
/// keys) its value, its token_id and the unix time it ends. Returns one
/// code per entry: 2 when the key was missing, 1 when its end was moved
/// later, 0 when unchanged.
pub(super) static REVOKE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/count_move.lua"),
        include_str!("lua/revoke_many.lua")
    ))
});

/// Raises a watermark (a subject's or an issuer's), never lowers it,
/// appends the event and moves it in the count hash when it did. KEYS[1]
/// watermark key, KEYS[2] event stream, KEYS[3] count hash; ARGV[1]
/// not_before, ARGV[2] TTL in seconds, ARGV[3] subject or issuer, ARGV[4]
/// unix time the watermark ends, ARGV[5] stream MAXLEN, ARGV[6] the event's
/// kind (`s` or `i`), ARGV[7] repeats.
/// Returns 2 when the key was missing, 1 when raised, 0 when already as high.
pub(super) static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/count_move.lua"),
        include_str!("lua/raise.lua")
    ))
});

/// Sums the count hashes' minutes from the current one on, and drops the
/// minutes that have passed (their keys have expired). KEYS: the count
/// hashes (tokens, subjects, issuers); ARGV[1] the current minute (unix
/// time / 60). Returns one total per hash.
pub(super) static COUNT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/count.lua")));

/// Sets the marker only if the rebuild's own key survived. KEYS[1] rebuild
/// key, KEYS[2] marker; ARGV[1] the server's run id.
pub(super) static FINISH_REBUILD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/finish_rebuild.lua")));

/// Deletes a key (a lease, the marker) only if its value matches. KEYS[1]
/// the key; ARGV[1] the expected value (a lease's holder).
pub(super) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/release.lua")));

/// Writes a refresh-token entry, raising its state (never lowering it) and
/// forcing `revoked` when the family is marked revoked; its end only moves
/// later. An entry already as it would be written, ending as late or later,
/// is left alone (no write; an event only with repeats), so a rebuild
/// rewrites nothing unchanged. KEYS[1] entry, KEYS[2] family marker, KEYS[3]
/// event stream; ARGV[1] subject ('' for none), ARGV[2] family, ARGV[3] exp,
/// ARGV[4] state rank, ARGV[5] unix time the entry ends, ARGV[6] token_id,
/// ARGV[7] stream MAXLEN, ARGV[8] repeats. Returns the state rank stored.
pub(super) static SET_REFRESH_ENTRY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/set_refresh_entry.lua")));

/// Marks a family revoked (SET NX) and, for the first caller, appends the
/// event replicas follow. KEYS[1] family marker, KEYS[2] event stream;
/// ARGV[1] reason, ARGV[2] TTL, ARGV[3] family, ARGV[4] stream MAXLEN,
/// ARGV[5] unix time the marker ends, ARGV[6] repeats. Returns 1 for the
/// first caller.
pub(super) static MARK_FAMILY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/mark_family.lua")));

/// Reads a refresh-token entry, whether its family is marked revoked and
/// whether the marker is present (Redis holds the whole registry), in one
/// round trip. KEYS[1] entry, KEYS[2] marker; ARGV[1] family marker prefix.
pub(super) static READ_REFRESH_ENTRY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/read_refresh_entry.lua")));
