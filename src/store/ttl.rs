//! How long revokd keeps what it stores. Every deny-list entry, watermark,
//! refresh entry and capped expiry is derived from two settings: the clock
//! leeway checks allow on `exp`/`iat`, and the longest lifetime a token may
//! have. One value carries both, so no caller re-derives a rule.

use revokd_jobs::RevokeToken;

/// The lifetime rules of stored revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Clock leeway on `exp`/`nbf`/`iat`, in seconds.
    pub leeway: i64,
    /// The longest lifetime a token may have, in seconds.
    pub max_lifetime: i64,
}

impl TtlPolicy {
    /// Seconds a deny-list entry lives: until the token's expiry plus leeway,
    /// capped at the maximum token lifetime. `None` for a token that checks
    /// already call expired (past `exp` + leeway): it gets no Redis key.
    pub fn deny(&self, expires_at: i64, now: i64) -> Option<i64> {
        ttl(expires_at, now, self.leeway, self.max_lifetime)
    }

    /// The moment a deny-list entry written `now` lapses: [`Self::deny`] as
    /// an instant (it may be in the past for a token already expired).
    pub fn deny_until(&self, expires_at: i64, now: i64) -> i64 {
        expires_at
            .saturating_add(self.leeway)
            .min(now.saturating_add(self.max_lifetime))
    }

    /// Seconds a refresh-token entry lives: until its expiry, capped at the
    /// maximum lifetime. No leeway: a refresh token is only ever presented
    /// to revokd, which judges its expiry itself.
    pub fn refresh(&self, expires_at: i64, now: i64) -> Option<i64> {
        ttl(expires_at, now, 0, self.max_lifetime)
    }

    /// Seconds a watermark (or a family's revoked marker) lives: until every
    /// token issued before it has expired.
    pub fn watermark(&self) -> i64 {
        self.max_lifetime.saturating_add(self.leeway).max(1)
    }

    /// An expiry as stored: an `exp` beyond the maximum lifetime is not
    /// trusted but capped, relative to the request, so re-applying a job
    /// gives the same row.
    pub fn cap(&self, expires_at: i64, requested_at: i64) -> i64 {
        expires_at.min(requested_at.saturating_add(self.max_lifetime))
    }

    /// [`Self::cap`] of a revocation.
    pub fn capped_expiry(&self, job: &RevokeToken) -> i64 {
        self.cap(job.expires_at, job.meta.requested_at)
    }

    /// Tokens that expired before this moment are past every check's
    /// leeway: their rows may go.
    pub fn expired_before(&self, now: i64) -> i64 {
        now.saturating_sub(self.leeway)
    }

    /// Watermarks older than this moment cover no token a check still
    /// accepts: their rows may go.
    pub fn outdated_before(&self, now: i64) -> i64 {
        now.saturating_sub(self.max_lifetime)
            .saturating_sub(self.leeway)
    }
}

fn ttl(expires_at: i64, now: i64, leeway: i64, max_lifetime: i64) -> Option<i64> {
    let ttl = expires_at
        .saturating_add(leeway)
        .saturating_sub(now)
        .min(max_lifetime);
    (ttl > 0).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TtlPolicy = TtlPolicy {
        leeway: 30,
        max_lifetime: 3_600,
    };

    #[test]
    fn deny_ttl_runs_to_expiry_plus_leeway_capped_at_max_lifetime() {
        assert_eq!(POLICY.deny(1_100, 1_000), Some(130));
        assert_eq!(POLICY.deny(1_000_000, 1_000), Some(3_600));
        // Within leeway a check still accepts the token, so it must be denied.
        assert_eq!(POLICY.deny(990, 1_000), Some(20));
        assert_eq!(POLICY.deny(970, 1_000), None);
        assert_eq!(POLICY.deny_until(1_100, 1_000), 1_130);
        assert_eq!(POLICY.deny_until(1_000_000, 1_000), 4_600);
    }

    #[test]
    fn refresh_ttl_has_no_leeway() {
        assert_eq!(POLICY.refresh(1_100, 1_000), Some(100));
        assert_eq!(POLICY.refresh(990, 1_000), None);
    }

    #[test]
    fn watermark_outlives_every_token_it_covers() {
        assert_eq!(POLICY.watermark(), 3_630);
        let zero = TtlPolicy {
            leeway: 0,
            max_lifetime: 0,
        };
        assert_eq!(zero.watermark(), 1);
    }

    #[test]
    fn expiry_is_capped_relative_to_the_request() {
        assert_eq!(POLICY.cap(i64::MAX, 100), 3_700);
        assert_eq!(POLICY.cap(500, 100), 500);
        assert_eq!(POLICY.expired_before(1_000), 970);
        assert_eq!(POLICY.outdated_before(10_000), 6_370);
    }
}
