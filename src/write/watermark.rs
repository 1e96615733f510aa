//! The watermark jobs of the write path: a revoke-all of a subject or of an
//! issuer, as HTTP and the CLI build them from the raw `sub` or `iss`.

use revokd_jobs::{Job, JobMeta, RevokeIssuer, RevokeSubject, issuer_id, subject_id};

use crate::store::Scope;

/// The job that revokes every token of `raw` (a `sub` or an `iss` claim as
/// tokens carry it; hashed here as a check hashes it) issued before
/// `not_before`.
pub fn job(scope: Scope, raw: &str, not_before: i64, reason: Option<String>, meta: JobMeta) -> Job {
    match scope {
        Scope::Subject => Job::RevokeAll(RevokeSubject {
            reason,
            meta,
            ..RevokeSubject::new(subject_id(raw), not_before)
        }),
        Scope::Issuer => Job::RevokeIssuer(RevokeIssuer {
            reason,
            meta,
            ..RevokeIssuer::new(issuer_id(raw), not_before)
        }),
    }
}
