//! `issuer_watermarks`: per issuer (`iss`), the time before which every
//! token it issued is revoked. Shaped like subject watermarks and written
//! by the same statements ([`super::watermarks`]); only ever raised.

use revokd_jobs::RevokeIssuer;

use super::{
    Db,
    watermarks::{Raise, Scope},
};

impl Db {
    /// Raises an issuer's watermark (never lowers it) and logs the request;
    /// `in_redis` false marks it for the resync.
    pub async fn record_revoke_issuer(
        &self,
        job: &RevokeIssuer,
        now: i64,
        in_redis: bool,
    ) -> sqlx::Result<()> {
        let raise = Raise {
            meta: &job.meta,
            key: &job.issuer,
            not_before: job.not_before,
            reason: job.reason.as_deref(),
        };
        self.record_watermark(Scope::Issuer, raise, now, in_redis)
            .await
    }

    /// An issuer's watermark, if any.
    pub async fn issuer_watermark(&self, issuer: &str) -> sqlx::Result<Option<i64>> {
        self.watermark_of(Scope::Issuer, issuer).await
    }
}
