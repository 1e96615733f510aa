//! Verified-token cache: a token that passed signature (and `iss`/`aud`)
//! verification once is not verified again while it stays cached.
//!
//! The same access token arrives with every request of a session, so most
//! checks present a token already seen; verifying it again is the largest
//! CPU cost of a check (ECDSA ~50 µs, RSA ~20 µs, HMAC ~2 µs with the
//! decoding around it), while hashing it is a fraction of a microsecond.
//!
//! What makes it safe:
//! - Entries are keyed by the SHA-256 of the whole compact token: a hit is
//!   the very same bytes that verified (collision resistance), so a forged or
//!   altered token never matches. The raw token itself is not kept.
//! - Only successes are cached: a flood of bad tokens cannot fill it, and a
//!   bad token pays the full verification every time.
//! - Only what does not change is cached: the signature, key, `iss` and
//!   `aud` checks. Each entry remembers the key that verified it, and a hit
//!   counts only while the verifier still holds that key: a key an identity
//!   provider removed from its set no longer vouches for any token, cached
//!   or not (local keys are fixed for the life of the process). `exp` and
//!   `nbf` are checked against the caller's `now` on every hit, and
//!   revocation is looked up on every check after this, cached or not.
//! - It is bounded in memory: `REVOKD_VERIFY_CACHE_SIZE` × 512 bytes, each
//!   entry weighed by what it holds (its claims can be large), tokens over
//!   4 KiB never cached; S3-FIFO eviction by `quick_cache`. An expired token
//!   left in it only takes space until evicted, since every hit re-checks the
//!   time.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::token::{KeyRef, Unverified, VerifiedToken, Verifier};

/// Memory budget per configured entry: the cache holds at most `capacity`
/// times this many (estimated) bytes, so a few tokens with huge claims
/// cannot take more room than many ordinary ones.
const BYTES_PER_ENTRY: u64 = 512;
/// Tokens longer than this are verified every time, never cached.
const MAX_CACHED_TOKEN_LEN: usize = 4 * 1024;

/// Weighs an entry by the bytes it holds (estimated).
#[derive(Clone)]
struct Footprint;

/// A verified token and the key that verified it.
type Entry = (Arc<VerifiedToken>, KeyRef);

impl quick_cache::Weighter<[u8; 32], Entry> for Footprint {
    fn weight(&self, _: &[u8; 32], (token, _): &Entry) -> u64 {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let bytes = 32
            + std::mem::size_of::<VerifiedToken>()
            + std::mem::size_of::<KeyRef>()
            + token.token_id.len()
            + text(&token.sub)
            + text(&token.jti)
            + text(&token.iss)
            + text(&token.twin_token_id)
            + token.aud.as_ref().map_or(0, json_footprint);
        u64::try_from(bytes).unwrap_or(u64::MAX).max(1)
    }
}

/// Bytes a JSON value takes in memory, roughly (`aud` may be any JSON).
fn json_footprint(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    let node = std::mem::size_of::<Value>();
    match value {
        Value::String(s) => node + s.len(),
        Value::Array(items) => node + items.iter().map(json_footprint).sum::<usize>(),
        Value::Object(map) => {
            node + map
                .iter()
                .map(|(k, v)| node + k.len() + json_footprint(v))
                .sum::<usize>()
        }
        _ => node,
    }
}

/// A bounded map from SHA-256(token) to what verifying that token found.
pub struct VerifyCache {
    entries: quick_cache::sync::Cache<[u8; 32], Entry, Footprint>,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.entries.capacity())
            .finish()
    }
}

/// Whether [`VerifyCache::verify`] found the token cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Verified earlier: only the time was checked.
    Hit,
    /// Verified now (and cached if it passed).
    Miss,
}

impl VerifyCache {
    /// A cache of about `capacity` ordinary tokens (at most `capacity` ×
    /// 512 estimated bytes); `None` for 0 (off).
    pub fn new(capacity: usize) -> Option<Self> {
        let budget = u64::try_from(capacity)
            .unwrap_or(u64::MAX)
            .saturating_mul(BYTES_PER_ENTRY);
        (capacity > 0).then(|| Self {
            entries: quick_cache::sync::Cache::with_weighter(capacity, budget, Footprint),
        })
    }

    /// [`Verifier::attempt`] and the time check of `token` as of `now`,
    /// skipping the signature check when this exact token passed it before
    /// with a key the verifier still holds.
    pub fn verify(
        &self,
        verifier: &Verifier,
        token: &str,
        now: i64,
    ) -> (Result<Arc<VerifiedToken>, Unverified>, Lookup) {
        let timed = |(verified, key): Entry| {
            verifier
                .check_time(&verified, key, now)
                .map(|()| verified)
                .map_err(Unverified::from)
        };
        if token.len() > MAX_CACHED_TOKEN_LEN {
            let result = verifier
                .attempt(token)
                .and_then(|(verified, key)| timed((Arc::new(verified), key)));
            return (result, Lookup::Miss);
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(entry) = self.entries.get(&hash) {
            if verifier.holds(entry.1) {
                return (timed(entry), Lookup::Hit);
            }
            self.entries.remove(&hash);
        }
        let result = verifier
            .attempt(token)
            .map(|(verified, key)| (Arc::new(verified), key));
        if let Ok(entry) = &result {
            self.entries.insert(hash, entry.clone());
        }
        (result.and_then(timed), Lookup::Miss)
    }

    /// Tokens cached now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::token::{KeySettings, Minter, Reason};

    const SECRET: &str = "verify-cache-test-secret-long-enough-for-hs256";
    const OTHER: &str = "another-test-secret-that-is-long-enough-for-hs256";

    fn settings(secret: &str) -> KeySettings {
        KeySettings {
            secret: Some(secret.to_owned()),
            leeway_secs: 0,
            ..KeySettings::default()
        }
    }

    /// A token issued at `now`: the tests verify it as of that same
    /// second (minted a second later it would be issued in their future).
    fn mint(secret: &str, sub: &str, ttl: i64, now: i64) -> String {
        Minter::new(&settings(secret))
            .unwrap()
            .mint(sub, ttl, true, now)
            .unwrap()
    }

    #[test]
    fn a_token_is_verified_once_then_served_from_the_cache() {
        let verifier = Verifier::new(&settings(SECRET)).unwrap();
        let cache = VerifyCache::new(16).unwrap();
        let now = revokd_jobs::now_unix();
        let token = mint(SECRET, "alice", 600, now);
        let (first, lookup) = cache.verify(&verifier, &token, now);
        assert_eq!(lookup, Lookup::Miss);
        let (second, lookup) = cache.verify(&verifier, &token, now);
        assert_eq!(lookup, Lookup::Hit);
        assert_eq!(first.unwrap(), second.unwrap());
        assert_eq!(
            *cache.verify(&verifier, &token, now).0.unwrap(),
            verifier.verify(&token, now).unwrap()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn failures_are_not_cached_and_a_forgery_never_hits() {
        let verifier = Verifier::new(&settings(SECRET)).unwrap();
        let cache = VerifyCache::new(16).unwrap();
        let now = revokd_jobs::now_unix();
        let good = mint(SECRET, "alice", 600, now);
        assert!(cache.verify(&verifier, &good, now).0.is_ok());
        // Same claims signed with another key, and the good token with its
        // payload swapped: both differ in bytes, so both are verified — and fail.
        let other_key = mint(OTHER, "alice", 600, now);
        let (result, lookup) = cache.verify(&verifier, &other_key, now);
        assert_eq!(
            (result.unwrap_err(), lookup),
            (Unverified::Inactive(Reason::InvalidSignature), Lookup::Miss)
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        let bob = mint(SECRET, "bob", 600, now);
        parts[1] = bob.split('.').nth(1).unwrap();
        let spliced = parts.join(".");
        let (result, lookup) = cache.verify(&verifier, &spliced, now);
        assert_eq!(
            (result.unwrap_err(), lookup),
            (Unverified::Inactive(Reason::InvalidSignature), Lookup::Miss)
        );
        assert_eq!(
            cache.verify(&verifier, "garbage", now).0.unwrap_err(),
            Unverified::Inactive(Reason::Malformed)
        );
        // Failing again is still a miss: nothing of them was kept.
        assert_eq!(cache.verify(&verifier, &other_key, now).1, Lookup::Miss);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_cached_token_still_expires() {
        let verifier = Verifier::new(&settings(SECRET)).unwrap();
        let cache = VerifyCache::new(16).unwrap();
        let now = revokd_jobs::now_unix();
        let token = mint(SECRET, "alice", 60, now);
        assert!(cache.verify(&verifier, &token, now).0.is_ok());
        let exp = verifier.verify(&token, now).unwrap().exp;
        let (later, lookup) = cache.verify(&verifier, &token, exp);
        assert_eq!(
            (later.unwrap_err(), lookup),
            (Unverified::Inactive(Reason::Expired), Lookup::Hit)
        );
        // An expired token verified for the first time is cached (its
        // signature is good) but answered expired, as the verifier does.
        let fresh = mint(SECRET, "carol", 60, now);
        let (first, lookup) = cache.verify(&verifier, &fresh, now + 3600);
        assert_eq!(
            (first.unwrap_err(), lookup),
            (Unverified::Inactive(Reason::Expired), Lookup::Miss)
        );
        assert!(cache.verify(&verifier, &fresh, now).0.is_ok());
    }

    #[test]
    fn entries_are_weighed_by_what_they_hold_and_long_tokens_are_not_cached() {
        let verifier = Verifier::new(&settings(SECRET)).unwrap();
        let cache = VerifyCache::new(4).unwrap();
        let now = revokd_jobs::now_unix();
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
        };
        // 400 numbers in `aud` are ~1.6 KB of JSON but ~13 KB in memory,
        // more than this cache's whole budget (4 × 512 bytes): none is kept,
        // however many arrive.
        let big_aud: Vec<u32> = (0..400).collect();
        for i in 0..4 {
            let token = sign(
                serde_json::json!({ "sub": format!("u{i}"), "exp": now + 60, "aud": big_aud }),
            );
            assert!(token.len() <= MAX_CACHED_TOKEN_LEN);
            assert!(cache.verify(&verifier, &token, now).0.is_ok());
        }
        assert_eq!(cache.len(), 0, "heavy entries kept");
        // Over 4 KiB: verified (and answered) every time, never kept.
        let long_aud: Vec<String> = (0..400).map(|i| format!("audience-{i}")).collect();
        let long = sign(serde_json::json!({ "sub": "v", "exp": now + 60, "aud": long_aud }));
        assert!(long.len() > MAX_CACHED_TOKEN_LEN);
        let empty = VerifyCache::new(16).unwrap();
        for _ in 0..2 {
            let (result, lookup) = empty.verify(&verifier, &long, now);
            assert_eq!(
                (result.map(|t| t.exp), lookup),
                (Ok(now + 60), Lookup::Miss)
            );
        }
        assert!(empty.is_empty());
    }

    #[test]
    fn size_zero_is_off_and_the_cache_stays_bounded() {
        assert!(VerifyCache::new(0).is_none());
        let verifier = Verifier::new(&settings(SECRET)).unwrap();
        let cache = VerifyCache::new(8).unwrap();
        let now = revokd_jobs::now_unix();
        for i in 0..100 {
            let token = mint(SECRET, &format!("user-{i}"), 600, now);
            assert!(cache.verify(&verifier, &token, now).0.is_ok());
        }
        assert!(cache.len() < 50, "{} of 100 entries kept", cache.len());
    }
}
