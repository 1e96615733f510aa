//! How claims are decoded, and the `token_id` and `subject_id` a verified
//! token is revoked under.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;
use crate::token::token_id;

#[test]
fn undecodable_claims_with_a_good_signature_are_malformed() {
    let header = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
    for payload in [b64("not json"), "***".to_owned(), b64("[1,2]")] {
        assert_eq!(
            verify(&hmac("HS256"), &hs256_raw(&header, &payload), NOW),
            Err(Reason::Malformed)
        );
    }
}

#[test]
fn claims_of_the_wrong_type_are_malformed() {
    for claims in [
        json!({"exp": "tomorrow"}),
        json!({"exp": NOW + 60, "sub": 1.5}),
        json!({"exp": NOW + 60, "sub": ["a"]}),
        json!({"exp": NOW + 60, "jti": 7}),
        json!({"exp": NOW + 60, "iss": ["a", "b"]}),
        json!({"exp": NOW + 60, "iat": "now"}),
        json!({"exp": 1e300}),
        json!({"exp": u64::MAX}),
    ] {
        assert_eq!(
            verify(&hmac("HS256"), &hs256(&claims), NOW),
            Err(Reason::Malformed),
            "{claims}"
        );
    }
}

#[test]
fn token_without_exp_is_malformed() {
    let token = hs256(&json!({"sub": "u", "iat": NOW}));
    assert_eq!(verify(&hmac("HS256"), &token, NOW), Err(Reason::Malformed));
    let verifier = Verifier::new(&hmac("HS256")).unwrap();
    assert_eq!(verifier.verify_signature(&token), Err(Reason::Malformed));
    let null_exp = hs256(&json!({"exp": null}));
    assert_eq!(
        verify(&hmac("HS256"), &null_exp, NOW),
        Err(Reason::Malformed)
    );
}

#[test]
fn numeric_sub_is_read_as_its_decimal_string_and_fractional_dates_truncate() {
    let token = hs256(
        &json!({"sub": 12345678901234_u64, "exp": NOW as f64 + 60.9, "iat": NOW as f64 + 0.5}),
    );
    let verified = verify(&hmac("HS256"), &token, NOW).unwrap();
    assert_eq!(verified.sub.as_deref(), Some("12345678901234"));
    assert_eq!((verified.exp, verified.iat), (NOW + 60, Some(NOW)));
    let negative = hs256(&json!({"sub": -7, "exp": NOW + 60}));
    assert_eq!(
        verify(&hmac("HS256"), &negative, NOW)
            .unwrap()
            .sub
            .as_deref(),
        Some("-7")
    );
}

#[test]
fn hard_to_store_ids_are_hashed_and_the_raw_sub_kept_for_display() {
    let long_jti = "j".repeat(300);
    let long_sub = "s".repeat(300);
    let token = hs256(&json!({"jti": long_jti, "sub": long_sub, "exp": NOW + 60}));
    let verified = verify(&hmac("HS256"), &token, NOW).unwrap();
    assert_eq!(verified.token_id, revokd_jobs::jti_id(&long_jti));
    assert!(verified.token_id.starts_with("jti-sha256:"));
    assert_eq!(verified.jti.as_deref(), Some(long_jti.as_str()));
    assert_eq!(verified.sub.as_deref(), Some(long_sub.as_str()));
    assert_eq!(
        verified.subject_id.as_deref(),
        Some(revokd_jobs::subject_id(&long_sub).as_str())
    );
    let plain = verify(&hmac("HS256"), &mint(&hmac("HS256"), 60), NOW).unwrap();
    assert_eq!(plain.subject_id.as_deref(), Some("user-1"));
}

#[test]
fn token_without_jti_is_identified_by_its_sha256() {
    let token = mint_without_jti(&hmac("HS256"), 60);
    let verified = verify(&hmac("HS256"), &token, NOW).unwrap();
    assert_eq!(verified.jti, None);
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
    assert_eq!(verified.token_id, expected);
    let hash = verified.token_id.strip_prefix("sha256:").unwrap();
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(token_id(&token, None), expected);
    assert_eq!(
        token_id(&token, Some("")),
        expected,
        "empty jti counts as absent"
    );
    assert_eq!(token_id(&token, Some("abc")), "abc");
    let empty_jti = hs256(&json!({"exp": NOW + 60, "jti": ""}));
    assert!(
        verify(&hmac("HS256"), &empty_jti, NOW)
            .unwrap()
            .token_id
            .starts_with("sha256:")
    );
}
