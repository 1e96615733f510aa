//! Input validation, once on submit and once in the worker.
//!
//! [`request`] is the submit side (HTTP and CLI, through the submitter): a
//! revocation whose fields revokd cannot store is refused with an
//! [`InputError`] (400, or a CLI message and exit 2) before anything is
//! recorded. [`job`] is the worker side: producers may push jobs without
//! the submitter, so the identifying fields are checked again, and the
//! informational ones (a revocation's subject, reasons, who asked) are
//! cleaned instead: an unusable reason must not cost the revocation.
//!
//! Ids taken from a token or a request (`jti`, `sub`) go through
//! `revokd_jobs::token_id`/`jti_id`/`subject_id` first, which hash whatever
//! revokd cannot store verbatim, so every id they give passes.

use revokd_jobs::{
    Job, JobMeta, MAX_BATCH_ITEMS, RegisterRefresh, RevokeBatch, RevokeFamily, RevokeIssuer,
    RevokeItem, RevokeSubject, RevokeToken,
};

/// Longest `token_id` (a `jti`, or a `sha256:`/`jti-sha256:` hash), in bytes.
pub const MAX_TOKEN_ID: usize = 256;
/// Longest subject, in bytes.
pub const MAX_SUBJECT: usize = 256;
/// Longest issuer (`iss`), in bytes.
pub const MAX_ISSUER: usize = 256;
/// Longest reason, in bytes.
pub const MAX_REASON: usize = 256;

/// Why a request or job cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A required field is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A field is longer than revokd stores.
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its limit in bytes.
        max: usize,
    },
    /// A field holds control characters (Postgres cannot store a NUL byte
    /// in text; the others are refused alike).
    #[error("{0} must not contain control characters")]
    ControlCharacters(&'static str),
    /// A refresh token cannot replace itself.
    #[error("a token cannot be rotated from itself")]
    RotatedFromItself,
    /// A batch carries more items than a worker applies at once.
    #[error("a batch carries more than {0} items")]
    TooManyItems(usize),
    /// A job of a kind this version does not know.
    #[error("unknown job kind")]
    UnknownKind,
}

/// Checks a token_id: 1 to [`MAX_TOKEN_ID`] bytes.
pub fn token_id(value: &str) -> Result<(), InputError> {
    bounded("jti", value, MAX_TOKEN_ID)
}

/// Checks a subject: 1 to [`MAX_SUBJECT`] bytes, any Unicode.
pub fn subject(value: &str) -> Result<(), InputError> {
    bounded("sub", value, MAX_SUBJECT)
}

/// Checks an issuer: 1 to [`MAX_ISSUER`] bytes, any Unicode.
pub fn issuer(value: &str) -> Result<(), InputError> {
    bounded("iss", value, MAX_ISSUER)
}

/// Checks an optional reason: at most [`MAX_REASON`] bytes, no control
/// characters. An empty reason is allowed.
pub fn reason(value: Option<&str>) -> Result<(), InputError> {
    match value {
        Some(r) if r.len() > MAX_REASON => Err(InputError::TooLong {
            field: "reason",
            max: MAX_REASON,
        }),
        Some(r) if r.chars().any(char::is_control) => Err(InputError::ControlCharacters("reason")),
        _ => Ok(()),
    }
}

/// The submit side: every field of `job` as a request must give it; the
/// job as it will be recorded (who asked, cleaned as [`job`] does), so what
/// is made durable is exactly what every store can hold.
pub fn request(job: &Job) -> Result<Job, InputError> {
    let recorded = self::job(job)?;
    match job {
        Job::Revoke(j) => {
            j.subject.as_deref().map(subject).transpose()?;
            reason(j.reason.as_deref())?;
        }
        Job::RevokeAll(j) => reason(j.reason.as_deref())?,
        Job::RevokeIssuer(j) => reason(j.reason.as_deref())?,
        Job::RevokeFamily(j) => reason(j.reason.as_deref())?,
        Job::RevokeBatch(j) => {
            for item in &j.items {
                item.subject.as_deref().map(subject).transpose()?;
                reason(item.reason.as_deref())?;
            }
        }
        Job::RegisterRefresh(_) | Job::Cleanup(_) | Job::Unknown => {}
    }
    Ok(recorded)
}

/// The worker side: `job` as stored — identifying fields checked,
/// informational fields cleaned (an unusable subject of a revocation or
/// reason dropped, control characters taken out of who asked).
pub fn job(job: &Job) -> Result<Job, InputError> {
    Ok(match job {
        Job::Revoke(j) => {
            token_id(&j.token_id)?;
            Job::Revoke(RevokeToken {
                subject: j.subject.clone().filter(|s| subject(s).is_ok()),
                reason: informational(j.reason.as_deref()),
                meta: JobMeta {
                    requested_by: requester(&j.meta.requested_by),
                    ..j.meta.clone()
                },
                ..j.clone()
            })
        }
        Job::RevokeAll(j) => {
            subject(&j.subject)?;
            Job::RevokeAll(RevokeSubject {
                reason: informational(j.reason.as_deref()),
                meta: recorded(&j.meta),
                ..j.clone()
            })
        }
        Job::RevokeIssuer(j) => {
            issuer(&j.issuer)?;
            Job::RevokeIssuer(RevokeIssuer {
                reason: informational(j.reason.as_deref()),
                meta: recorded(&j.meta),
                ..j.clone()
            })
        }
        Job::RegisterRefresh(j) => {
            token_id(&j.token_id)?;
            token_id(&j.family_id)?;
            if let Some(old) = &j.rotated_from {
                token_id(&old.token_id)?;
                // Refused before anything is written (Postgres would refuse
                // it too: an upsert touching one row twice).
                if old.token_id == j.token_id {
                    return Err(InputError::RotatedFromItself);
                }
            }
            j.subject.as_deref().map(subject).transpose()?;
            Job::RegisterRefresh(RegisterRefresh {
                meta: JobMeta {
                    requested_by: requester(&j.meta.requested_by),
                    ..j.meta.clone()
                },
                ..j.clone()
            })
        }
        Job::RevokeFamily(j) => {
            token_id(&j.family_id)?;
            Job::RevokeFamily(RevokeFamily {
                reason: informational(j.reason.as_deref()),
                meta: JobMeta {
                    requested_by: requester(&j.meta.requested_by),
                    ..j.meta.clone()
                },
                ..j.clone()
            })
        }
        Job::RevokeBatch(j) => {
            // The job is the unit: one unusable id sets the whole chunk
            // aside (revokd's own chunks are checked item by item first).
            if j.items.len() > MAX_BATCH_ITEMS {
                return Err(InputError::TooManyItems(MAX_BATCH_ITEMS));
            }
            let items = j.items.iter().map(|item| {
                token_id(&item.token_id)?;
                Ok(RevokeItem {
                    subject: item.subject.clone().filter(|s| subject(s).is_ok()),
                    reason: informational(item.reason.as_deref()),
                    ..item.clone()
                })
            });
            Job::RevokeBatch(RevokeBatch {
                items: items.collect::<Result<_, InputError>>()?,
                meta: JobMeta {
                    requested_by: requester(&j.meta.requested_by),
                    ..j.meta.clone()
                },
            })
        }
        Job::Cleanup(j) => Job::Cleanup(j.clone()),
        Job::Unknown => return Err(InputError::UnknownKind),
    })
}

/// A reason as stored: an unusable one is dropped, it is informational and
/// must not cost the revocation.
fn informational(value: Option<&str>) -> Option<String> {
    value.filter(|r| reason(Some(r)).is_ok()).map(str::to_owned)
}

/// A job's id, requester and time as stored (see [`requester`]).
fn recorded(meta: &JobMeta) -> JobMeta {
    JobMeta {
        requested_by: requester(&meta.requested_by),
        ..meta.clone()
    }
}

/// Who asked, as stored: informational too, so control characters are
/// dropped, not the job.
fn requester(by: &str) -> String {
    by.replace(char::is_control, "")
}

fn bounded(field: &'static str, value: &str, max: usize) -> Result<(), InputError> {
    if value.is_empty() {
        Err(InputError::Empty(field))
    } else if value.len() > max {
        Err(InputError::TooLong { field, max })
    } else if value.chars().any(char::is_control) {
        Err(InputError::ControlCharacters(field))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_refuses_control_characters_and_allows_empty() {
        assert!(reason(None).is_ok());
        assert!(reason(Some("")).is_ok());
        assert!(reason(Some("logout – élan")).is_ok());
        for bad in ["a\0b", "line\nbreak", "\u{7f}", "tab\there"] {
            assert!(reason(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(reason(Some(&"r".repeat(MAX_REASON + 1))).is_err());
    }

    #[test]
    fn a_request_refuses_what_a_worker_cleans() {
        let job = Job::Revoke(RevokeToken::new("t", Some("a\0b".into()), 10).reason("x\ny"));
        assert_eq!(request(&job), Err(InputError::ControlCharacters("sub")));
        // Who asked is informational on both sides: cleaned, not refused,
        // so a spooled revocation can never be refused by Postgres later.
        let mut asked = RevokeToken::new("t", None, 10);
        asked.meta.requested_by = "app\0".into();
        let Ok(Job::Revoke(recorded)) = request(&Job::Revoke(asked.clone())) else {
            panic!("a request with an odd requester is accepted");
        };
        assert_eq!(recorded.meta.requested_by, "app");
        assert_eq!(recorded.meta.job_id, asked.meta.job_id);
        let Ok(Job::Revoke(cleaned)) = self::job(&job) else {
            panic!("a worker keeps the revocation");
        };
        assert_eq!((cleaned.subject, cleaned.reason), (None, None));
    }

    #[test]
    fn a_batch_is_checked_item_by_item() {
        let items = vec![
            RevokeItem::new("a", Some("x\0y".into()), 10),
            RevokeItem::new("b", None, 10).reason("r\n"),
        ];
        let batch = Job::RevokeBatch(RevokeBatch::new(items.clone()));
        assert_eq!(request(&batch), Err(InputError::ControlCharacters("sub")));
        let Ok(Job::RevokeBatch(cleaned)) = job(&batch) else {
            panic!("a worker keeps the batch");
        };
        assert_eq!(cleaned.items[0].subject, None);
        assert_eq!(cleaned.items[1].reason, None);
        let mut bad_id = items;
        bad_id.push(RevokeItem::new("", None, 10));
        let bad_id = Job::RevokeBatch(RevokeBatch::new(bad_id));
        assert_eq!(job(&bad_id), Err(InputError::Empty("jti")));
        let long = vec![RevokeItem::new("t", None, 10); MAX_BATCH_ITEMS + 1];
        let long = Job::RevokeBatch(RevokeBatch::new(long));
        assert_eq!(job(&long), Err(InputError::TooManyItems(MAX_BATCH_ITEMS)));
    }

    #[test]
    fn identifying_fields_are_refused_on_both_sides() {
        let empty = Job::Revoke(RevokeToken::new("", None, 10));
        assert_eq!(request(&empty), Err(InputError::Empty("jti")));
        assert_eq!(job(&empty), Err(InputError::Empty("jti")));
        let own = RegisterRefresh::new("t", None, 10).rotating(
            revokd_jobs::RotatedFrom {
                token_id: "t".into(),
                expires_at: 10,
            },
            "t",
        );
        assert_eq!(
            job(&Job::RegisterRefresh(own)),
            Err(InputError::RotatedFromItself)
        );
        assert_eq!(request(&Job::Unknown), Err(InputError::UnknownKind));
        let issuer = Job::RevokeIssuer(RevokeIssuer::new("", 10));
        assert_eq!(request(&issuer), Err(InputError::Empty("iss")));
        let long = Job::RevokeIssuer(RevokeIssuer::new("i".repeat(MAX_ISSUER + 1), 10));
        assert!(matches!(job(&long), Err(InputError::TooLong { .. })));
    }
}
