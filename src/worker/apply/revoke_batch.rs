//! `revoke_batch`: a chunk of a bulk revocation in one pass — every
//! deny-list entry in one pipelined Redis round trip (on the applier's bulk
//! connection), then one Postgres statement
//! ([`crate::store::pg::Db::apply_chunk`]): a chunk the API recorded before
//! pushing it only loses its record, its rows stay as recorded; any other
//! chunk (pushed with `revokd-jobs`, or applied before) has every row
//! written, by a second statement. A refresh token among them takes its family with it, as a
//! single `revoke` does. Applying a chunk twice converges like applying
//! each item twice.

use revokd_jobs::RevokeBatch;

use super::{Applied, Applier, ApplyError};
use crate::store::{pg::RevokeRow, redis::DenyEntry};

impl Applier {
    pub(super) async fn revoke_batch(
        &self,
        job: &RevokeBatch,
        now: i64,
    ) -> Result<Applied, ApplyError> {
        let tokens = job.tokens();
        let expiries: Vec<i64> = tokens.iter().map(|t| self.ttl.capped_expiry(t)).collect();
        // An already expired token gets no Redis key, only its row.
        let entries: Vec<(String, DenyEntry, i64)> = tokens
            .iter()
            .zip(&expiries)
            .filter_map(|(t, &exp)| {
                let ttl = self.ttl.deny(exp, now)?;
                let entry = DenyEntry {
                    sub: t.subject.clone(),
                    exp,
                    revoked_at: t.meta.requested_at,
                    reason: t.reason.clone(),
                };
                Some((t.token_id.clone(), entry, ttl))
            })
            .collect();
        if !entries.is_empty() {
            self.bulk_deny.deny_many(&entries, now).await?;
        }
        let rows: Vec<RevokeRow<'_>> = tokens
            .iter()
            .zip(&expiries)
            .map(|(t, &exp)| RevokeRow::of(t, exp, now))
            .collect();
        let families = if rows.is_empty() {
            Vec::new()
        } else {
            self.stores.db.apply_chunk(&job.meta.job_id, &rows).await?
        };
        for (t, family) in tokens.iter().zip(families) {
            if let Some(family) = family {
                self.revoke_family_of(t, &family, now).await?;
            }
        }
        Ok(Applied::BatchRevoked {
            tokens: tokens.len(),
            in_redis: entries.len(),
        })
    }
}
