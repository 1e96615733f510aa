//! Job payloads: what a producer asks revokd's workers to apply.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One unit of work in revokd's queue, tagged by `kind` in JSON.
///
/// Applying a job is idempotent: applying it twice, or out of order with
/// others, leaves the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Revoke one token.
    Revoke(RevokeToken),
    /// Revoke every token of a subject issued before a moment.
    RevokeAll(RevokeSubject),
    /// Revoke every token of an issuer issued before a moment.
    RevokeIssuer(RevokeIssuer),
    /// Delete expired records and re-check Redis against Postgres.
    Cleanup(Cleanup),
    /// Register a newly issued refresh token, or a rotation.
    RegisterRefresh(RegisterRefresh),
    /// Revoke every refresh token of a family (logout, reuse detected).
    RevokeFamily(RevokeFamily),
    /// Revoke many tokens at once (one chunk of a bulk revocation).
    RevokeBatch(RevokeBatch),
    /// A kind this version does not know (written by a newer producer).
    /// Workers set it aside instead of failing on it.
    #[serde(other)]
    Unknown,
}

impl Job {
    /// What every job carries: its id, who asked and when. `None` for a
    /// kind this version does not know.
    pub fn meta(&self) -> Option<&JobMeta> {
        match self {
            Job::Revoke(j) => Some(&j.meta),
            Job::RevokeAll(j) => Some(&j.meta),
            Job::RevokeIssuer(j) => Some(&j.meta),
            Job::Cleanup(j) => Some(&j.meta),
            Job::RegisterRefresh(j) => Some(&j.meta),
            Job::RevokeFamily(j) => Some(&j.meta),
            Job::RevokeBatch(j) => Some(&j.meta),
            Job::Unknown => None,
        }
    }

    /// The job's own id, used in responses and to wait for completion.
    pub fn job_id(&self) -> Option<&str> {
        self.meta().map(|m| m.job_id.as_str())
    }

    /// The kind as the `kind` tag spells it (`unknown` for one this
    /// version does not know).
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Revoke(_) => "revoke",
            Job::RevokeAll(_) => "revoke_all",
            Job::RevokeIssuer(_) => "revoke_issuer",
            Job::Cleanup(_) => "cleanup",
            Job::RegisterRefresh(_) => "register_refresh",
            Job::RevokeFamily(_) => "revoke_family",
            Job::RevokeBatch(_) => "revoke_batch",
            Job::Unknown => "unknown",
        }
    }
}

/// What every job carries, flattened into its JSON: `job_id`,
/// `requested_by` (omitted when empty) and `requested_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMeta {
    /// Unique id of this request (UUID v7 text).
    pub job_id: String,
    /// Who asked (an API key's name, an application name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requested_by: String,
    /// When the request was made (unix seconds).
    pub requested_at: i64,
}

impl JobMeta {
    /// A request made now, with a fresh job id and no requester yet.
    pub fn now() -> Self {
        Self {
            job_id: new_job_id(),
            requested_by: String::new(),
            requested_at: now_unix(),
        }
    }

    /// The same request, asked by `by`.
    pub fn by(mut self, by: impl Into<String>) -> Self {
        self.requested_by = by.into();
        self
    }
}

/// Revoke one token: put its `token_id` on the deny-list until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeToken {
    /// Id, requester and time of the request.
    #[serde(flatten)]
    pub meta: JobMeta,
    /// The token's id: its `jti`, or a hash (see [`token_id`], [`jti_id`]).
    pub token_id: String,
    /// The token's subject as [`subject_id`] gives it, if it has a `sub`.
    #[serde(default)]
    pub subject: Option<String>,
    /// The token's `exp` claim (unix seconds).
    pub expires_at: i64,
    /// Why it was revoked (free text, e.g. `logout`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl RevokeToken {
    /// A revocation of `token_id` requested now, with a fresh job id.
    pub fn new(token_id: impl Into<String>, subject: Option<String>, expires_at: i64) -> Self {
        Self {
            meta: JobMeta::now(),
            token_id: token_id.into(),
            subject,
            expires_at,
            reason: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Most items one [`RevokeBatch`] job carries when revokd or
/// [`crate::Producer::revoke_many`] splits a bulk revocation into chunks:
/// one job (one queue push, one pipelined Redis write, one Postgres
/// statement) per 1,000 tokens. Workers accept up to [`MAX_BATCH_ITEMS`].
pub const BATCH_CHUNK: usize = 1_000;

/// Most items a worker applies from one [`RevokeBatch`] job (a longer one
/// is set aside as invalid), and most items one bulk request may carry.
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// One token of a [`RevokeBatch`]: the fields of a [`RevokeToken`] without
/// the job's own id, requester and time, which the batch carries once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeItem {
    /// The token's id: its `jti`, or a hash (see [`token_id`], [`jti_id`]).
    pub token_id: String,
    /// The token's subject as [`subject_id`] gives it, if it has a `sub`.
    #[serde(default)]
    pub subject: Option<String>,
    /// The token's `exp` claim (unix seconds).
    pub expires_at: i64,
    /// Why it was revoked (free text, e.g. `logout`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl RevokeItem {
    /// A revocation of `token_id`.
    pub fn new(token_id: impl Into<String>, subject: Option<String>, expires_at: i64) -> Self {
        Self {
            token_id: token_id.into(),
            subject,
            expires_at,
            reason: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Revoke many tokens in one job: applying it is applying a [`RevokeToken`]
/// per item (see [`RevokeBatch::tokens`]), in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeBatch {
    /// Id, requester and time of the request.
    #[serde(flatten)]
    pub meta: JobMeta,
    /// The tokens, at most [`MAX_BATCH_ITEMS`].
    pub items: Vec<RevokeItem>,
}

impl RevokeBatch {
    /// A batch of `items` requested now, with a fresh job id.
    pub fn new(items: Vec<RevokeItem>) -> Self {
        Self {
            meta: JobMeta::now(),
            items,
        }
    }

    /// Each item as the revoke job it stands for: the batch's requester and
    /// time, and the job id `{job_id}:{index}` (revokd audits the batch in
    /// one row keyed `job_id`; a refresh token's family revoked with an
    /// item is audited as `{job_id}:{index}:family`, so a batch applied
    /// twice adds no audit rows).
    pub fn tokens(&self) -> Vec<RevokeToken> {
        self.items
            .iter()
            .enumerate()
            .map(|(index, item)| RevokeToken {
                meta: JobMeta {
                    job_id: format!("{}:{index}", self.meta.job_id),
                    ..self.meta.clone()
                },
                token_id: item.token_id.clone(),
                subject: item.subject.clone(),
                expires_at: item.expires_at,
                reason: item.reason.clone(),
            })
            .collect()
    }
}

/// Revoke every token of `subject` whose `iat` is earlier than `not_before`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeSubject {
    /// Id, requester and time of the request.
    #[serde(flatten)]
    pub meta: JobMeta,
    /// The subject whose tokens are revoked, as [`subject_id`] gives it.
    pub subject: String,
    /// Tokens issued strictly before this moment (unix seconds) are revoked.
    pub not_before: i64,
    /// Why (free text, e.g. `password_change`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl RevokeSubject {
    /// A revoke-all of `subject` as of `not_before`, with a fresh job id.
    pub fn new(subject: impl Into<String>, not_before: i64) -> Self {
        Self {
            meta: JobMeta::now(),
            subject: subject.into(),
            not_before,
            reason: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Revoke every token whose `iss` is `issuer` and whose `iat` is earlier
/// than `not_before` (a leaked signing key, a compromised tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeIssuer {
    /// Id, requester and time of the request.
    #[serde(flatten)]
    pub meta: JobMeta,
    /// The issuer whose tokens are revoked, as [`issuer_id`] gives it.
    pub issuer: String,
    /// Tokens issued strictly before this moment (unix seconds) are revoked.
    pub not_before: i64,
    /// Why (free text, e.g. `key_leak`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl RevokeIssuer {
    /// A revoke-all of `issuer` as of `not_before`, with a fresh job id.
    pub fn new(issuer: impl Into<String>, not_before: i64) -> Self {
        Self {
            meta: JobMeta::now(),
            issuer: issuer.into(),
            not_before,
            reason: None,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Registers a refresh token in the allow-list. With `rotated_from`, the
/// token replaces that one: the old becomes `rotated`, the new joins its family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRefresh {
    /// Id, requester and time of the request.
    #[serde(flatten)]
    pub meta: JobMeta,
    /// The new refresh token's `token_id`.
    pub token_id: String,
    /// Its subject, as [`subject_id`] gives it.
    #[serde(default)]
    pub subject: Option<String>,
    /// Its expiry (unix seconds).
    pub expires_at: i64,
    /// The family: the `token_id` of the chain's first token.
    pub family_id: String,
    /// The token this one replaces, if this is a rotation.
    #[serde(default)]
    pub rotated_from: Option<RotatedFrom>,
}

/// The token a rotation replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotatedFrom {
    /// Its `token_id`.
    pub token_id: String,
    /// Its expiry (unix seconds).
    pub expires_at: i64,
}

impl RegisterRefresh {
    /// Registers a new chain: the token is its own family.
    pub fn new(token_id: impl Into<String>, subject: Option<String>, expires_at: i64) -> Self {
        let token_id = token_id.into();
        Self {
            meta: JobMeta::now(),
            family_id: token_id.clone(),
            token_id,
            subject,
            expires_at,
            rotated_from: None,
        }
    }

    /// Makes this a rotation of `old` within `family_id`.
    pub fn rotating(mut self, old: RotatedFrom, family_id: impl Into<String>) -> Self {
        self.rotated_from = Some(old);
        self.family_id = family_id.into();
        self
    }
}

/// Revokes a whole refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeFamily {
    /// Id, requester and time of the request.
    #[serde(flatten)]
    pub meta: JobMeta,
    /// The family.
    pub family_id: String,
    /// Why (`reused`, `revoked`, ...).
    #[serde(default)]
    pub reason: Option<String>,
}

impl RevokeFamily {
    /// A revocation of `family_id`.
    pub fn new(family_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            meta: JobMeta::now(),
            family_id: family_id.into(),
            reason: Some(reason.into()),
        }
    }
}

/// Maintenance: purge expired rows, re-check Redis against Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    /// Id, requester and time of the request.
    #[serde(flatten)]
    pub meta: JobMeta,
}

/// A new job id: a UUID v7, so ids sort by creation time.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The current time in unix seconds.
pub fn now_unix() -> i64 {
    now_unix_ms().div_euclid(1000)
}

/// The current time in unix milliseconds: revokd's one reader of the wall
/// clock (clippy's `disallowed-methods` refuses any other).
#[allow(clippy::disallowed_methods)]
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Prefix of the id of a token without `jti`: the SHA-256 of the compact token.
pub const TOKEN_HASH_PREFIX: &str = "sha256:";
/// Prefix of the id of a `jti` revokd does not store verbatim: the SHA-256 of
/// the `jti`. Its own namespace, so no `jti` can take a jti-less token's id.
pub const JTI_HASH_PREFIX: &str = "jti-sha256:";
/// Prefix of a subject revokd does not store verbatim: the SHA-256 of the `sub`.
pub const SUBJECT_HASH_PREFIX: &str = "sha256:";
/// Prefix of an issuer revokd does not store verbatim: the SHA-256 of the `iss`.
pub const ISSUER_HASH_PREFIX: &str = "sha256:";
/// Longest id (a `jti`, a `sub` or an `iss`) revokd stores verbatim, in bytes.
pub const MAX_VERBATIM_ID: usize = 256;

/// The `token_id` revokd tracks a token by: for a token with a (non-empty)
/// `jti`, [`jti_id`] of it; else `sha256:` and the lowercase hex SHA-256 of
/// the compact token. Use it to revoke a token without sending the token
/// itself anywhere.
pub fn token_id(compact_token: &str, jti: Option<&str>) -> String {
    match jti.filter(|j| !j.is_empty()) {
        Some(jti) => jti_id(jti),
        None => format!("{TOKEN_HASH_PREFIX}{}", sha256_hex(compact_token)),
    }
}

/// The `token_id` of a token whose `jti` is `jti`: the `jti` itself when
/// revokd can store it verbatim (1 to 256 bytes, no control characters, not
/// starting with `sha256:` or `jti-sha256:`), else `jti-sha256:` and the
/// lowercase hex SHA-256 of the `jti`. Hashed `jti`s and jti-less tokens live
/// in separate namespaces, so a `jti` of `sha256:<hex of another token>`
/// never shares that token's id.
pub fn jti_id(jti: &str) -> String {
    let reserved = jti.starts_with(TOKEN_HASH_PREFIX) || jti.starts_with(JTI_HASH_PREFIX);
    if storable(jti) && !reserved {
        jti.to_owned()
    } else {
        format!("{JTI_HASH_PREFIX}{}", sha256_hex(jti))
    }
}

/// The key revokd keeps a subject's watermark (and its revocations and
/// refresh tokens) under: the `sub` itself when revokd can store it verbatim
/// (1 to 256 bytes, no control characters, not starting with `sha256:`),
/// else `sha256:` and the lowercase hex SHA-256 of the `sub`. Apply it once,
/// to the `sub` claim as the token carries it (a numeric `sub` as its
/// decimal string), before putting a subject into a job.
pub fn subject_id(sub: &str) -> String {
    verbatim_or_hashed(sub, SUBJECT_HASH_PREFIX)
}

/// The key revokd keeps an issuer's watermark under, by the rule of
/// [`subject_id`]: the `iss` claim itself when revokd can store it verbatim,
/// else `sha256:` and the lowercase hex SHA-256 of it. Apply it once, to
/// the `iss` claim as the token carries it, before putting an issuer into
/// a job.
pub fn issuer_id(iss: &str) -> String {
    verbatim_or_hashed(iss, ISSUER_HASH_PREFIX)
}

fn verbatim_or_hashed(id: &str, prefix: &str) -> String {
    if storable(id) && !id.starts_with(prefix) {
        id.to_owned()
    } else {
        format!("{prefix}{}", sha256_hex(id))
    }
}

/// Whether revokd stores an id verbatim: 1 to [`MAX_VERBATIM_ID`] bytes, no
/// control characters.
fn storable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_VERBATIM_ID && !id.chars().any(char::is_control)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_decodes_to_unknown() {
        let job: Job = serde_json::from_str(r#"{"kind":"from_the_future","x":1}"#).unwrap();
        assert_eq!(job, Job::Unknown);
    }

    #[test]
    fn revoke_batch_items_become_revoke_jobs_with_their_own_ids() {
        let mut batch = RevokeBatch::new(vec![
            RevokeItem::new("a", Some("alice".into()), 10).reason("logout"),
            RevokeItem::new("b", None, 20),
        ]);
        batch.meta.requested_by = "app".into();
        let text = serde_json::to_string(&Job::RevokeBatch(batch.clone())).unwrap();
        assert!(text.contains(r#""kind":"revoke_batch""#), "{text}");
        assert_eq!(
            serde_json::from_str::<Job>(&text).unwrap(),
            Job::RevokeBatch(batch.clone())
        );
        let tokens = batch.tokens();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[1].meta.job_id, format!("{}:1", batch.meta.job_id));
        assert_eq!(tokens[0].meta.requested_by, "app");
        assert_eq!(tokens[0].reason.as_deref(), Some("logout"));
        assert_eq!(
            (tokens[1].token_id.as_str(), tokens[1].expires_at),
            ("b", 20)
        );
    }

    #[test]
    fn revoke_round_trips_with_kind_tag() {
        let job = Job::Revoke(RevokeToken::new("j1", Some("alice".into()), 10).reason("logout"));
        let text = serde_json::to_string(&job).unwrap();
        assert!(text.contains(r#""kind":"revoke""#), "{text}");
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
    }

    #[test]
    fn job_meta_is_flat_on_the_wire() {
        let mut job = RevokeToken::new("j1", None, 10);
        job.meta = JobMeta {
            job_id: "id-1".into(),
            requested_by: "app".into(),
            requested_at: 5,
        };
        let value = serde_json::to_value(Job::Revoke(job)).unwrap();
        assert_eq!(value["job_id"], "id-1");
        assert_eq!(value["requested_by"], "app");
        assert_eq!(value["requested_at"], 5);
        assert!(value.get("meta").is_none(), "{value}");
        // Older producers' cleanup jobs carry no requester.
        let old = r#"{"kind":"cleanup","job_id":"c","requested_at":7}"#;
        let job: Job = serde_json::from_str(old).unwrap();
        assert_eq!(
            job.meta()
                .map(|m| (m.requested_at, m.requested_by.as_str())),
            Some((7, ""))
        );
        assert_eq!(job.kind(), "cleanup");
        assert_eq!(serde_json::to_string(&job).unwrap(), old);
    }

    #[test]
    fn token_id_prefers_jti_and_hashes_otherwise() {
        assert_eq!(token_id("a.b.c", Some("j")), "j");
        let id = token_id("a.b.c", None);
        assert!(id.starts_with("sha256:") && id.len() == 7 + 64, "{id}");
        assert!(!id.contains("a.b.c"));
    }

    #[test]
    fn storable_jti_is_its_own_token_id() {
        assert_eq!(token_id("a.b.c", Some("3f2a-jti")), "3f2a-jti");
        let longest = "j".repeat(MAX_VERBATIM_ID);
        assert_eq!(jti_id(&longest), longest);
        assert_eq!(jti_id("ünïcode jti"), "ünïcode jti");
        // Only the exact lowercase prefixes are reserved.
        assert_eq!(jti_id("SHA256:abc"), "SHA256:abc");
        assert_eq!(jti_id("sha256"), "sha256");
    }

    #[test]
    fn unstorable_jti_is_hashed_into_its_own_namespace() {
        for jti in [
            "j".repeat(MAX_VERBATIM_ID + 1),
            "line\nbreak".to_owned(),
            "nul\0byte".to_owned(),
            "tab\t".to_owned(),
        ] {
            let id = token_id("a.b.c", Some(&jti));
            assert_eq!(id, format!("jti-sha256:{}", sha256_hex(&jti)));
            assert_eq!(id.len(), JTI_HASH_PREFIX.len() + 64);
            assert_eq!(jti_id(&jti), id);
        }
    }

    #[test]
    fn jti_with_a_reserved_prefix_never_collides_with_a_hashed_id() {
        let other = token_id("x.y.z", None);
        assert!(other.starts_with("sha256:"));
        // A jti equal to another token's hashed id gets a different id.
        let id = token_id("a.b.c", Some(&other));
        assert_ne!(id, other);
        assert_eq!(id, format!("jti-sha256:{}", sha256_hex(&other)));
        // And a jti spelling a hashed jti's id is hashed again, not kept.
        let hashed = jti_id(&"j".repeat(300));
        assert_ne!(jti_id(&hashed), hashed);
        assert!(jti_id(&hashed).starts_with(JTI_HASH_PREFIX));
    }

    #[test]
    fn empty_jti_counts_as_absent() {
        assert_eq!(token_id("a.b.c", Some("")), token_id("a.b.c", None));
    }

    #[test]
    fn subject_id_keeps_storable_subjects_and_hashes_the_rest() {
        assert_eq!(subject_id("alice@example.com"), "alice@example.com");
        assert_eq!(subject_id("auth0|42"), "auth0|42");
        assert_eq!(subject_id("12345"), "12345");
        let long = "s".repeat(MAX_VERBATIM_ID + 1);
        for sub in [long.as_str(), "a\u{7f}b", "a\nb", "", "sha256:abc"] {
            let id = subject_id(sub);
            assert_eq!(id, format!("sha256:{}", sha256_hex(sub)), "{sub:?}");
            assert!(id.len() <= MAX_VERBATIM_ID);
        }
        assert_eq!(subject_id(&"s".repeat(256)), "s".repeat(256));
    }

    #[test]
    fn issuer_id_keeps_storable_issuers_and_hashes_the_rest() {
        assert_eq!(
            issuer_id("https://idp.example.com/"),
            "https://idp.example.com/"
        );
        let long = "i".repeat(MAX_VERBATIM_ID + 1);
        for iss in ["", "a\nb", "sha256:abc", long.as_str()] {
            assert_eq!(
                issuer_id(iss),
                format!("sha256:{}", sha256_hex(iss)),
                "{iss:?}"
            );
        }
    }

    #[test]
    fn revoke_issuer_is_tagged_and_round_trips() {
        let job = Job::RevokeIssuer(RevokeIssuer::new("https://idp", 42).reason("key_leak"));
        let value = serde_json::to_value(&job).unwrap();
        assert_eq!(value["kind"], "revoke_issuer");
        assert_eq!(value["issuer"], "https://idp");
        assert_eq!(value["not_before"], 42);
        assert_eq!(job.kind(), "revoke_issuer");
        assert_eq!(serde_json::from_value::<Job>(value).unwrap(), job);
    }
}
