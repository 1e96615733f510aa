//! Input limits, enforced on every write path (HTTP, CLI, worker).
//!
//! Ids taken from a token or a request (`jti`, `sub`) are not checked here:
//! they go through `revokd_jobs::token_id`/`jti_id`/`subject_id` first, which
//! hash whatever revokd cannot store verbatim, so every id they give passes.
//! These checks guard job payloads from producers that skipped the mapping.

/// Longest `token_id` (a `jti`, or a `sha256:`/`jti-sha256:` hash), in bytes.
pub const MAX_TOKEN_ID: usize = 256;
/// Longest subject, in bytes.
pub const MAX_SUBJECT: usize = 256;
/// Longest reason, in bytes.
pub const MAX_REASON: usize = 256;

/// Checks a token_id: 1 to [`MAX_TOKEN_ID`] bytes.
pub fn token_id(value: &str) -> Result<(), String> {
    bounded("jti", value, MAX_TOKEN_ID)
}

/// Checks a subject: 1 to [`MAX_SUBJECT`] bytes, any Unicode.
pub fn subject(value: &str) -> Result<(), String> {
    bounded("sub", value, MAX_SUBJECT)
}

/// Checks an optional reason: at most [`MAX_REASON`] bytes, no control
/// characters (Postgres cannot store a NUL byte in text; the others are
/// refused as in `sub`). An empty reason is allowed.
pub fn reason(value: Option<&str>) -> Result<(), String> {
    match value {
        Some(r) if r.len() > MAX_REASON => Err(format!("reason is longer than {MAX_REASON} bytes")),
        Some(r) if r.chars().any(char::is_control) => {
            Err("reason must not contain control characters".into())
        }
        _ => Ok(()),
    }
}

/// Checks a verified token's ids (its `token_id` and `subject_id`, both
/// already mapped, so storable by construction); an unusable subject is
/// dropped (it is informational on a revocation).
pub fn claims(token_id_value: &str, sub: Option<String>) -> Result<Option<String>, String> {
    token_id(token_id_value)?;
    Ok(sub.filter(|s| subject(s).is_ok()))
}

fn bounded(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{field} must not be empty"))
    } else if value.len() > max {
        Err(format!("{field} is longer than {max} bytes"))
    } else if value.chars().any(char::is_control) {
        Err(format!("{field} must not contain control characters"))
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
}
