//! Loading keys: configuration errors, HMAC key strength, the choice of a
//! JWK Set's key by `kid`, and secrets kept out of `Debug`.

use serde_json::json;

use super::*;
use crate::token::KeyError;

#[test]
fn config_errors_are_reported() {
    let err = |settings: KeySettings| Verifier::new(&settings).unwrap_err();
    assert!(matches!(err(KeySettings::default()), KeyError::NoKey));
    let two = KeySettings {
        public_key_file: Some(fixture("rsa_public.pem")),
        ..hmac("HS256")
    };
    let KeyError::SeveralKeys(names) = err(two) else {
        panic!("expected SeveralKeys")
    };
    assert_eq!(names, "JWT_SECRET, JWT_PUBLIC_KEY_FILE");
    assert!(matches!(
        err(hmac("RS256")),
        KeyError::AlgorithmMismatch {
            algorithm: Algorithm::RS256,
            ..
        }
    ));
    assert!(matches!(err(hmac("none")), KeyError::UnsupportedAlgorithm(name) if name == "none"));
    assert!(matches!(
        err(KeySettings {
            secret: Some(String::new()),
            ..Default::default()
        }),
        KeyError::EmptySecret
    ));
    assert!(matches!(
        err(KeySettings {
            algorithm: None,
            ..pem("RS256", "rsa")
        }),
        KeyError::MissingAlgorithm
    ));
    assert!(matches!(
        err(pem("HS256", "rsa")),
        KeyError::AlgorithmMismatch { .. }
    ));
    assert!(
        matches!(err(pem("ES384", "ec256")), KeyError::InvalidKey { .. }),
        "curve mismatch"
    );
    assert!(matches!(
        err(pem("ES256", "rsa")),
        KeyError::InvalidKey { .. }
    ));
    assert!(matches!(
        err(pem("RS256", "ec256")),
        KeyError::InvalidKey { .. }
    ));
    let private_as_public = KeySettings {
        public_key_file: Some(fixture("rsa_private.pem")),
        ..pem("RS256", "rsa")
    };
    assert!(matches!(
        err(private_as_public),
        KeyError::InvalidKey { .. }
    ));
    let missing = err(KeySettings {
        public_key_file: Some(fixture("nope.pem")),
        ..pem("RS256", "rsa")
    });
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    let not_json = jwks_of("bad.json", &json!({"keys": "k-secret"}));
    let message = err(not_json).to_string();
    assert!(
        message.contains("bad.json") && !message.contains("k-secret"),
        "{message}"
    );
    let enc_only = jwks_of(
        "enc.json",
        &json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "use": "enc"}]}),
    );
    assert!(matches!(err(enc_only), KeyError::InvalidKey { .. }));
    let wrong_alg = jwks_of(
        "alg.json",
        &json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "ES256"}]}),
    );
    assert!(matches!(err(wrong_alg), KeyError::InvalidKey { .. }));
    let (a, b) = (
        URL_SAFE_NO_PAD.encode([b'a'; 32]),
        URL_SAFE_NO_PAD.encode([b'b'; 32]),
    );
    let dup =
        json!({"keys": [{"kty": "oct", "k": a, "kid": "a"}, {"kty": "oct", "k": b, "kid": "a"}]});
    let dup = jwks_of("dup.json", &dup);
    assert!(err(dup).to_string().contains("duplicate kid"));
}

#[test]
fn hmac_keys_shorter_than_rfc_7518_requires_are_refused_without_echoing_them() {
    let secret = |secret: &str, alg: &str| KeySettings {
        secret: Some(secret.into()),
        algorithm: Some(alg.into()),
        ..Default::default()
    };
    for (alg, required) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
        let short = "k".repeat(required - 1);
        let message = Verifier::new(&secret(&short, alg)).unwrap_err().to_string();
        assert!(
            message.contains(&format!("at least {required} bytes"))
                && message.contains(&format!("got {}", required - 1))
                && !message.contains(&short),
            "{message}"
        );
        assert!(Verifier::new(&secret(&"k".repeat(required), alg)).is_ok());
    }
    assert!(matches!(
        Verifier::new(&secret("", "HS256")).unwrap_err(),
        KeyError::EmptySecret
    ));

    let oct = |k: &str, alg: Option<&str>| {
        let mut jwk = json!({"kty": "oct", "kid": "h", "k": k});
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        let name = format!("oct-{}-{}.json", k.len(), alg.unwrap_or("none"));
        jwks_of(&name, &json!({"keys": [jwk]}))
    };
    let message = Verifier::new(&oct("", None)).unwrap_err().to_string();
    assert!(message.contains("empty oct key"), "{message}");
    let short = URL_SAFE_NO_PAD.encode("five!");
    let message = Verifier::new(&oct(&short, None)).unwrap_err().to_string();
    assert!(
        message.contains("at least 32 bytes") && !message.contains(&short),
        "{message}"
    );
    let k32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
    assert!(Verifier::new(&oct(&k32, None)).is_ok());
    let message = Verifier::new(&oct(&k32, Some("HS512")))
        .unwrap_err()
        .to_string();
    assert!(message.contains("at least 64 bytes"), "{message}");
}

#[test]
fn jwks_chooses_the_key_by_kid() {
    let ec = mint(&jwks("jwks_two.json", Some("ec256_private.pem")), 60);
    assert_eq!(header_of(&ec)["kid"], "ec-key-1");
    assert_eq!(header_of(&ec)["alg"], "ES256");
    let rsa = mint(&jwks("jwks_two.json", Some("rsa_private.pem")), 60);
    assert_eq!(header_of(&rsa)["kid"], "rsa-key-1");
    assert_eq!(header_of(&rsa)["alg"], "RS256");
    let verifier = Verifier::new(&jwks("jwks_two.json", None)).unwrap();
    assert!(verifier.verify(&ec, NOW).is_ok());
    assert!(verifier.verify(&rsa, NOW).is_ok());
}

#[test]
fn jwks_unknown_or_mismatched_kid_is_invalid_signature() {
    let key = EncodingKey::from_ec_pem(&read_fixture("ec256_private.pem")).unwrap();
    let sign = |kid: Option<&str>| signed(&key, Algorithm::ES256, kid);
    let verifier = Verifier::new(&jwks("jwks_two.json", None)).unwrap();
    assert!(verifier.verify(&sign(Some("ec-key-1")), NOW).is_ok());
    assert_eq!(
        verifier.verify(&sign(Some("nope")), NOW),
        Err(Reason::InvalidSignature)
    );
    assert_eq!(
        verifier.verify(&sign(Some("rsa-key-1")), NOW),
        Err(Reason::InvalidSignature)
    );
    assert_eq!(
        verifier.verify(&sign(None), NOW),
        Err(Reason::Malformed),
        "no kid, two keys"
    );
}

#[test]
fn jwks_of_one_key_accepts_a_token_without_kid() {
    let key = EncodingKey::from_ed_pem(&read_fixture("ed25519_private.pem")).unwrap();
    let token = signed(&key, Algorithm::EdDSA, None);
    let settings = jwks("jwks_one.json", None);
    assert!(
        verify(&settings, &token, NOW).is_ok(),
        "alg inferred from OKP Ed25519"
    );
    let minted = mint(&jwks("jwks_one.json", Some("ed25519_private.pem")), 60);
    assert_eq!(header_of(&minted)["kid"], "ed-key-1");
    assert!(verify(&settings, &minted, NOW).is_ok());
}

#[test]
fn jwks_of_one_oct_key_signs_and_verifies() {
    let k = URL_SAFE_NO_PAD.encode(SECRET);
    let set = json!({"keys": [{"kty": "oct", "kid": "hmac-1", "k": k}]});
    let settings = jwks_of("oct.json", &set);
    let token = mint(&settings, 60);
    assert_eq!(header_of(&token)["kid"], "hmac-1");
    assert_eq!(header_of(&token)["alg"], "HS256");
    assert!(verify(&settings, &token, NOW).is_ok());
    assert_eq!(
        verify(&hmac("HS256"), &token, NOW).map(|_| ()),
        Err(Reason::InvalidSignature),
        "same secret, but a plain secret has no kid: the token names a key not configured"
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let settings = hmac("HS256");
    let shown = format!(
        "{settings:?} {:?} {:?}",
        Verifier::new(&settings).unwrap(),
        Minter::new(&settings).unwrap()
    );
    assert!(!shown.contains(SECRET), "{shown}");
    // ... nor encoded, as a JWK's `k` would hold it.
    let encoded = URL_SAFE_NO_PAD.encode(SECRET);
    assert!(!shown.contains(&encoded[..40]), "{shown}");
    assert!(shown.contains("[redacted]"));
}

#[test]
fn a_fetched_set_keeps_unchanged_keys_and_leaves_out_what_it_cannot_use() {
    use crate::token::keys::KeyRing;
    let two: Value = serde_json::from_slice(&read_fixture("jwks_two.json")).unwrap();
    let ec = two["keys"][0].clone();
    let rsa = two["keys"][1].clone();
    let first =
        KeyRing::from_fetched(json!({ "keys": [ec] }).to_string().as_bytes(), None, None).unwrap();
    // The same EC key, a new RSA key, an encryption key, a published secret
    // and an unknown key type: the last three are left out, not fatal.
    let oct = json!({ "kty": "oct", "kid": "s", "k": URL_SAFE_NO_PAD.encode([9u8; 32]) });
    let enc = json!({ "kty": "RSA", "use": "enc", "kid": "e", "n": rsa["n"], "e": "AQAB" });
    let odd = json!({ "kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA" });
    let body = json!({ "keys": [ec, rsa, enc, oct, odd] }).to_string();
    let mut second = KeyRing::from_fetched(body.as_bytes(), None, None).unwrap();
    assert_eq!(second.kids(), ["ec-key-1", "rsa-key-1"]);
    second.keep_serials(&first);
    let serial = |ring: &KeyRing, i: usize| ring.keys[i].serial;
    assert_eq!(serial(&second, 0), serial(&first, 0), "unchanged key");
    assert!(!first.holds(serial(&second, 1)), "new key");
    // The same kid with other key material is a new key.
    let mut moved = ec.clone();
    moved["x"] = two["keys"][0]["y"].clone();
    moved["y"] = two["keys"][0]["x"].clone();
    if let Ok(mut third) = KeyRing::from_fetched(
        json!({ "keys": [moved] }).to_string().as_bytes(),
        None,
        None,
    ) {
        third.keep_serials(&first);
        assert!(!first.holds(serial(&third, 0)));
    }
    // Only unusable keys: no set at all (the last good one stays).
    let useless = json!({ "keys": [oct] }).to_string();
    assert!(KeyRing::from_fetched(useless.as_bytes(), None, None).is_err());
    // An allow-list leaves out the rest.
    let only_rs = KeyRing::from_fetched(
        body.as_bytes(),
        None,
        Some(&[jsonwebtoken::Algorithm::RS256]),
    )
    .unwrap();
    assert_eq!(only_rs.kids(), ["rsa-key-1"]);
    // Keys naming no algorithm take the first allowed one that fits them.
    let mut bare_ec = two["keys"][0].clone();
    bare_ec.as_object_mut().unwrap().remove("alg");
    let mut bare_rsa = two["keys"][1].clone();
    bare_rsa.as_object_mut().unwrap().remove("alg");
    let bare = json!({ "keys": [bare_ec, bare_rsa] }).to_string();
    let allowed = [
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::PS256,
    ];
    let ring = KeyRing::from_fetched(bare.as_bytes(), Some(allowed[0]), Some(&allowed)).unwrap();
    let algs: Vec<_> = ring.keys.iter().map(|k| k.alg).collect();
    assert_eq!(algs, allowed);
}
