//! `revoke_issuer`: raise an issuer's watermark (every token it issued
//! before then is revoked) in Redis and Postgres. O(1): no token, subject
//! or refresh family is enumerated; refresh tokens of the issuer are
//! refused by the same watermark when presented.

use revokd_jobs::RevokeIssuer;

use super::{Applied, Applier, ApplyError};
use crate::store::Scope;

impl Applier {
    pub(super) async fn revoke_issuer(
        &self,
        job: &RevokeIssuer,
        now: i64,
    ) -> Result<Applied, ApplyError> {
        let ttl = self.ttl.watermark();
        self.stores
            .deny
            .raise_mark(Scope::Issuer, &job.issuer, job.not_before, ttl, now)
            .await?;
        self.stores.db.record_revoke_issuer(job, now, true).await?;
        Ok(Applied::IssuerRevoked)
    }
}
