//! `revoke_family`: every refresh token of a family revoked at once (logout,
//! reuse detected), in Redis first, then Postgres, then each member as a
//! token too.

use super::{Applier, ApplyError};
use crate::{
    store::{pg::RefreshRow, redis::DenyEntry},
    write::validate,
};

/// Who asked for a family revocation, for the audit log.
#[derive(Clone, Copy)]
pub struct FamilyRequest<'a> {
    /// Audit key (a repeat adds nothing).
    pub job_id: &'a str,
    /// Requested by.
    pub by: &'a str,
    /// Requested at.
    pub at: i64,
}

impl Applier {
    /// Revokes a family: the Redis marker first (every member reads as
    /// revoked at once), then Postgres, then each member's entry.
    pub async fn revoke_family(
        &self,
        family: &str,
        reason: &str,
        request: FamilyRequest<'_>,
        now: i64,
    ) -> Result<(), ApplyError> {
        validate::token_id(family)?;
        self.stores
            .deny
            .mark_family_revoked(family, reason, self.ttl.watermark(), now)
            .await?;
        let expires_at = now.saturating_add(self.ttl.max_lifetime);
        let members = self
            .stores
            .db
            .revoke_family(
                family,
                reason,
                request.job_id,
                request.by,
                request.at,
                expires_at,
                now,
                true,
            )
            .await?;
        let entries = RefreshRow::redis_entries(&members, &self.ttl, now);
        self.stores.deny.set_refresh_entries(&entries, now).await?;
        // Every member is revoked as a token too, so a check without the
        // refresh hint (or a gateway) refuses it as well.
        let denied: Vec<_> = members
            .iter()
            .filter_map(|m| {
                let entry = DenyEntry {
                    sub: m.subject.clone(),
                    exp: m.expires_at,
                    revoked_at: request.at,
                    reason: Some(reason.to_owned()),
                };
                Some((m.token_id.clone(), entry, self.ttl.deny(m.expires_at, now)?))
            })
            .collect();
        self.stores.deny.deny_many(&denied, now).await?;
        self.stores
            .db
            .revoke_members(&members, reason, request.by, request.at, true)
            .await?;
        Ok(())
    }
}
