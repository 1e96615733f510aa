//! Unit tests of the TTL rules.

use super::*;

#[test]
fn ttl_runs_to_expiry_plus_leeway_capped_at_max_lifetime() {
    assert_eq!(deny_ttl(1_100, 1_000, 30, 3_600), Some(130));
    assert_eq!(deny_ttl(1_000_000, 1_000, 30, 3_600), Some(3_600));
    // Within leeway a check still accepts the token, so it must be denied.
    assert_eq!(deny_ttl(990, 1_000, 30, 3_600), Some(20));
    assert_eq!(deny_ttl(970, 1_000, 30, 3_600), None);
}

#[test]
fn a_watermark_outlives_every_token_issued_before_it() {
    assert_eq!(watermark_ttl(30, 3_600), 3_630);
    assert_eq!(watermark_ttl(0, 0), 1);
}
