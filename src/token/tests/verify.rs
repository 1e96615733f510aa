//! The verifier's decisions, in order: format, algorithm, signature, then
//! issuer, audience and time.

use serde_json::json;

use super::*;

#[test]
fn alg_none_and_unknown_algorithms_are_unsupported() {
    let payload = b64(&json!({"sub": "u", "exp": NOW + 60}).to_string());
    for settings in [
        hmac("HS256"),
        pem("RS256", "rsa"),
        jwks("jwks_two.json", None),
    ] {
        for alg in ["none", "None", "HS1", "RSA-OAEP"] {
            let header = b64(&json!({"alg": alg, "typ": "JWT"}).to_string());
            for token in [
                format!("{header}.{payload}."),
                format!("{header}.{payload}.c2ln"),
            ] {
                assert_eq!(
                    verify(&settings, &token, NOW),
                    Err(Reason::UnsupportedAlgorithm),
                    "{alg}"
                );
            }
        }
    }
}

#[test]
fn hs256_token_signed_with_the_rsa_public_key_is_invalid_signature() {
    let claims = json!({"sub": "attacker", "exp": NOW + 60});
    let key = EncodingKey::from_secret(&read_fixture("rsa_public.pem"));
    let forged = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    let verifier = Verifier::new(&pem("RS256", "rsa")).unwrap();
    assert_eq!(verifier.verify(&forged, NOW), Err(Reason::InvalidSignature));
    assert_eq!(
        verifier.verify_signature(&forged),
        Err(Reason::InvalidSignature)
    );
}

#[test]
fn supported_algorithm_other_than_the_keys_is_invalid_signature() {
    assert_eq!(
        verify(&hmac("HS256"), &mint(&hmac("HS512"), 60), NOW),
        Err(Reason::InvalidSignature)
    );
    assert_eq!(
        verify(&pem("RS256", "rsa"), &mint(&pem("PS256", "rsa"), 60), NOW),
        Err(Reason::InvalidSignature)
    );
    assert_eq!(
        verify(&pem("RS256", "rsa"), &mint(&pem("ES256", "ec256"), 60), NOW),
        Err(Reason::InvalidSignature)
    );
}

#[test]
fn wrong_secret_or_wrong_key_is_invalid_signature() {
    let token = mint(&hmac("HS256"), 60);
    let other = KeySettings {
        secret: Some("another-secret-just-as-long-as-the-first-one-for-hs256".into()),
        ..Default::default()
    };
    assert_eq!(verify(&other, &token, NOW), Err(Reason::InvalidSignature));

    let token = mint(&pem("ES256", "ec256"), 60);
    let mut tampered = token.clone();
    tampered.replace_range(token.len() - 4.., "AAAA");
    assert_eq!(
        verify(&pem("ES256", "ec256"), &tampered, NOW),
        Err(Reason::InvalidSignature)
    );
}

#[test]
fn a_crit_header_is_malformed() {
    let claims = b64(&json!({"sub": "u", "exp": NOW + 60}).to_string());
    for header in [
        json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"], "exp": 1}),
        json!({"alg": "HS256", "crit": []}),
        json!({"alg": "HS256", "crit": null}),
    ] {
        let token = hs256_raw(&b64(&header.to_string()), &claims);
        assert_eq!(
            verify(&hmac("HS256"), &token, NOW),
            Err(Reason::Malformed),
            "{header}"
        );
    }
    // The same token without crit verifies.
    let plain = b64(&json!({"alg": "HS256"}).to_string());
    assert!(verify(&hmac("HS256"), &hs256_raw(&plain, &claims), NOW).is_ok());
}

#[test]
fn garbage_is_malformed_and_never_panics() {
    let header = b64(r#"{"alg":"HS256"}"#);
    let huge = "x".repeat(100 * 1024);
    let huge_jwt = format!("{header}.{}.sig", "e".repeat(100 * 1024));
    let garbage = [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "....",
        "..",
        huge.as_str(),
        huge_jwt.as_str(),
        "!!!.@@@.###",
        "ÿþ.ü.é",
        "eyJ.eyJ.eyJ",
        "//8.//8.//8",
        "bnVsbA.e30.c2ln",
        "W10.e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9=.e30.c2ln",
    ];
    let own = [
        format!("{}.e30.c2ln", b64("\u{1}\u{2}not json")),
        format!("{}.e30.c2ln", b64(r#"{"alg":5}"#)),
    ];
    for settings in [
        hmac("HS256"),
        pem("ES256", "ec256"),
        jwks("jwks_two.json", None),
    ] {
        let verifier = Verifier::new(&settings).unwrap();
        for token in garbage
            .iter()
            .copied()
            .chain(own.iter().map(String::as_str))
        {
            let shown = &token[..token.len().min(20)];
            assert_eq!(
                verifier.verify(token, NOW),
                Err(Reason::Malformed),
                "{shown:?}"
            );
        }
    }
}

#[test]
fn verify_signature_accepts_an_expired_token_but_not_a_forged_one() {
    let token = mint(&pem("ES256", "ec256"), 60);
    let verifier = Verifier::new(&pem("ES256", "ec256")).unwrap();
    assert_eq!(verifier.verify(&token, NOW + 10_000), Err(Reason::Expired));
    assert_eq!(verifier.verify_signature(&token).unwrap().exp, NOW + 60);
    let not_yet = hs256(&json!({"exp": NOW + 60, "nbf": NOW + 30}));
    assert!(
        Verifier::new(&hmac("HS256"))
            .unwrap()
            .verify_signature(&not_yet)
            .is_ok()
    );
    let key = EncodingKey::from_ec_pem(&read_fixture("ec256_other_private.pem")).unwrap();
    let forged = signed(&key, Algorithm::ES256, None);
    assert_eq!(
        verifier.verify_signature(&forged),
        Err(Reason::InvalidSignature)
    );
    let forged_expired = hs256(&json!({"exp": NOW - 1000}));
    let other = KeySettings {
        secret: Some("other-secret-that-is-long-enough-for-hs256".into()),
        ..Default::default()
    };
    assert_eq!(
        verify(&other, &forged_expired, NOW),
        Err(Reason::InvalidSignature)
    );
}

fn hs256_with_leeway(leeway_secs: u64) -> KeySettings {
    KeySettings {
        leeway_secs,
        ..hmac("HS256")
    }
}

#[test]
fn expiry_is_checked_against_now_with_leeway() {
    let settings = hs256_with_leeway(30);
    let token = mint(&settings, 60);
    let exp = NOW + 60;
    assert!(verify(&settings, &token, exp - 1).is_ok());
    assert!(verify(&settings, &token, exp + 29).is_ok(), "within leeway");
    assert_eq!(verify(&settings, &token, exp + 30), Err(Reason::Expired));
    assert_eq!(verify(&settings, &token, exp + 3600), Err(Reason::Expired));
    let strict = hmac("HS256");
    assert_eq!(
        verify(&strict, &token, exp),
        Err(Reason::Expired),
        "valid only before exp"
    );
}

#[test]
fn nbf_in_the_future_is_not_yet_valid() {
    let settings = hs256_with_leeway(30);
    let token = hs256(&json!({"exp": NOW + 3600, "nbf": NOW + 100}));
    assert_eq!(verify(&settings, &token, NOW), Err(Reason::NotYetValid));
    assert_eq!(
        verify(&settings, &token, NOW + 69),
        Err(Reason::NotYetValid)
    );
    assert_eq!(
        verify(&settings, &token, NOW + 70).unwrap().nbf,
        Some(NOW + 100)
    );
}

#[test]
fn iat_beyond_the_leeway_is_not_yet_valid_and_within_it_is_fine() {
    let settings = hs256_with_leeway(30);
    let ahead = hs256(&json!({"sub": "u", "exp": NOW + 3600, "iat": NOW + 600}));
    assert_eq!(verify(&settings, &ahead, NOW), Err(Reason::NotYetValid));
    assert_eq!(
        verify(&settings, &ahead, NOW + 569),
        Err(Reason::NotYetValid)
    );
    assert!(verify(&settings, &ahead, NOW + 570).is_ok());
    let skewed = hs256(&json!({"sub": "u", "exp": NOW + 3600, "iat": NOW + 5}));
    assert!(verify(&settings, &skewed, NOW).is_ok(), "within leeway");
    // Signature-only verification (revoking) does not look at the time.
    let verifier = Verifier::new(&settings).unwrap();
    assert!(verifier.verify_signature(&ahead).is_ok());
}

#[test]
fn issuer_is_checked_when_configured() {
    let settings = KeySettings {
        issuer: Some("https://issuer.example".into()),
        ..hmac("HS256")
    };
    let good = hs256(&json!({"exp": NOW + 60, "iss": "https://issuer.example"}));
    assert_eq!(
        verify(&settings, &good, NOW).unwrap().iss.as_deref(),
        Some("https://issuer.example")
    );
    let wrong = hs256(&json!({"exp": NOW + 60, "iss": "https://evil.example"}));
    assert_eq!(verify(&settings, &wrong, NOW), Err(Reason::InvalidIssuer));
    let missing = hs256(&json!({"exp": NOW + 60}));
    assert_eq!(verify(&settings, &missing, NOW), Err(Reason::InvalidIssuer));
    assert!(
        verify(&hmac("HS256"), &wrong, NOW).is_ok(),
        "not checked when unset"
    );
}

#[test]
fn audience_is_checked_when_configured() {
    let settings = KeySettings {
        audience: Some("api".into()),
        ..hmac("HS256")
    };
    let ok = |aud: Value| {
        verify(
            &settings,
            &hs256(&json!({"exp": NOW + 60, "aud": aud})),
            NOW,
        )
    };
    assert!(ok(json!("api")).is_ok());
    assert_eq!(
        ok(json!(["web", "api"])).unwrap().aud,
        Some(json!(["web", "api"]))
    );
    assert_eq!(ok(json!("web")), Err(Reason::InvalidAudience));
    assert_eq!(ok(json!(["web", "admin"])), Err(Reason::InvalidAudience));
    assert_eq!(ok(json!([])), Err(Reason::InvalidAudience));
    assert_eq!(ok(json!(42)), Err(Reason::InvalidAudience));
    let missing = hs256(&json!({"exp": NOW + 60}));
    assert_eq!(
        verify(&settings, &missing, NOW),
        Err(Reason::InvalidAudience)
    );
    assert!(
        verify(
            &hmac("HS256"),
            &hs256(&json!({"exp": NOW + 60, "aud": "x"})),
            NOW
        )
        .is_ok()
    );
}

#[test]
fn issuer_is_checked_before_audience_and_expiry() {
    let settings = KeySettings {
        issuer: Some("i".into()),
        audience: Some("a".into()),
        ..hmac("HS256")
    };
    let token = hs256(&json!({"exp": NOW - 1000, "iss": "x"}));
    assert_eq!(verify(&settings, &token, NOW), Err(Reason::InvalidIssuer));
    let token = hs256(&json!({"exp": NOW - 1000, "iss": "i", "aud": "b"}));
    assert_eq!(verify(&settings, &token, NOW), Err(Reason::InvalidAudience));
}

#[test]
fn verifier_is_send_sync_and_reports_leeway() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Verifier>();
    shareable::<Minter>();
    let verifier = Verifier::new(&hs256_with_leeway(45)).unwrap();
    assert_eq!(verifier.leeway_secs(), 45);
}
