//! `register_refresh`: a refresh token joins the allow-list, or replaces
//! the one it was rotated from (which becomes `rotated`, so a second use of
//! it is reuse).

use revokd_jobs::RegisterRefresh;

use super::{Applied, Applier, ApplyError};
use crate::store::redis::{RefreshEntry, State};

impl Applier {
    pub(super) async fn register_refresh(
        &self,
        job: &RegisterRefresh,
        now: i64,
    ) -> Result<Applied, ApplyError> {
        let expires_at = self.ttl.cap(job.expires_at, job.meta.requested_at);
        let entry = |exp: i64, state| RefreshEntry {
            sub: job.subject.clone(),
            family: job.family_id.clone(),
            exp,
            state,
        };
        let mut entries = Vec::new();
        if let Some(ttl) = self.ttl.refresh(expires_at, now) {
            entries.push((job.token_id.clone(), entry(expires_at, State::Active), ttl));
        }
        if let Some(old) = &job.rotated_from {
            let old_exp = self.ttl.cap(old.expires_at, job.meta.requested_at);
            if let Some(ttl) = self.ttl.refresh(old_exp, now) {
                entries.push((old.token_id.clone(), entry(old_exp, State::Rotated), ttl));
            }
        }
        self.stores.deny.set_refresh_entries(&entries, now).await?;
        let job = RegisterRefresh {
            expires_at,
            ..job.clone()
        };
        let state = self.stores.db.register_refresh(&job, now, true).await?;
        if state == State::Revoked {
            // The family was revoked while Redis did not know: tell it now.
            self.stores
                .deny
                .mark_family_revoked(&job.family_id, "revoked", self.ttl.watermark(), now)
                .await?;
        }
        Ok(Applied::Registered(state))
    }
}
