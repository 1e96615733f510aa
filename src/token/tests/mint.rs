//! Minting: every algorithm round-trips to the verifier, and a minter
//! refuses settings it cannot sign with.

use serde_json::json;

use super::*;
use crate::token::KeyError;

#[test]
fn every_supported_algorithm_round_trips_from_minter_to_verifier() {
    let cases = [
        hmac("HS256"),
        hmac("HS384"),
        hmac("HS512"),
        pem("RS256", "rsa"),
        pem("RS384", "rsa"),
        pem("RS512", "rsa"),
        pem("PS256", "rsa"),
        pem("PS384", "rsa"),
        pem("PS512", "rsa"),
        pem("ES256", "ec256"),
        pem("ES384", "ec384"),
        pem("EdDSA", "ed25519"),
    ];
    for settings in &cases {
        let alg = settings.algorithm.as_deref().unwrap();
        let token = mint(settings, 900);
        assert_eq!(header_of(&token)["alg"], alg);
        let verified = verify(settings, &token, NOW + 1).unwrap_or_else(|r| panic!("{alg}: {r}"));
        let jti = verified.jti.clone().unwrap();
        assert_eq!(jti.len(), 32, "{alg}");
        assert_eq!(verified.token_id, jti);
        assert_eq!(verified.sub.as_deref(), Some("user-1"));
        assert_eq!((verified.iat, verified.exp), (Some(NOW), NOW + 900));
    }
}

#[test]
fn default_algorithm_for_a_secret_is_hs256() {
    let settings = KeySettings {
        secret: Some(SECRET.into()),
        ..Default::default()
    };
    let token = mint(&settings, 60);
    assert_eq!(header_of(&token)["alg"], "HS256");
    assert!(verify(&settings, &token, NOW).is_ok());
}

#[test]
fn minted_jtis_are_unique() {
    let minter = Minter::new(&hmac("HS256")).unwrap();
    let verifier = Verifier::new(&hmac("HS256")).unwrap();
    let a = verifier
        .verify(&minter.mint("u", 60, true, NOW).unwrap(), NOW)
        .unwrap();
    let b = verifier
        .verify(&minter.mint("u", 60, true, NOW).unwrap(), NOW)
        .unwrap();
    assert_ne!(a.jti, b.jti);
}

#[test]
fn minted_tokens_carry_the_configured_issuer_and_audience() {
    let settings = KeySettings {
        issuer: Some("revokd".into()),
        audience: Some("api".into()),
        ..hmac("HS256")
    };
    let verified = verify(&settings, &mint(&settings, 60), NOW).unwrap();
    assert_eq!(verified.iss.as_deref(), Some("revokd"));
    assert_eq!(verified.aud, Some(json!("api")));
}

#[test]
fn minting_needs_a_usable_signing_key() {
    let err = |settings: KeySettings| Minter::new(&settings).unwrap_err();
    let with_private = |private: &str, settings: KeySettings| KeySettings {
        private_key_file: Some(fixture(private)),
        ..settings
    };
    let public_only = KeySettings {
        private_key_file: None,
        ..pem("RS256", "rsa")
    };
    assert!(matches!(
        err(public_only),
        KeyError::MissingPrivateKey(Algorithm::RS256)
    ));
    assert!(matches!(
        err(jwks("jwks_two.json", None)),
        KeyError::NoSigningKey
    ));
    let other_pair = with_private("ec256_other_private.pem", pem("ES256", "ec256"));
    assert!(matches!(err(other_pair), KeyError::KeyMismatch { .. }));
    let other_jwks = jwks("jwks_two.json", Some("ec256_other_private.pem"));
    assert!(matches!(err(other_jwks), KeyError::KeyMismatch { .. }));
    let other_curve = with_private("ec384_private.pem", pem("ES256", "ec256"));
    assert!(matches!(err(other_curve), KeyError::InvalidKey { .. }));
    let other_type = jwks("jwks_two.json", Some("ed25519_private.pem"));
    assert!(matches!(err(other_type), KeyError::InvalidKey { .. }));
    let public_as_private = with_private("rsa_public.pem", pem("RS256", "rsa"));
    assert!(matches!(
        err(public_as_private),
        KeyError::InvalidKey { .. }
    ));
    let missing = with_private("nope.pem", pem("RS256", "rsa"));
    assert!(matches!(err(missing), KeyError::Read { .. }));

    let minter = Minter::new(&hmac("HS256")).unwrap();
    assert!(matches!(
        minter.mint("u", 0, true, NOW),
        Err(KeyError::InvalidTtl(0))
    ));
    assert!(matches!(
        minter.mint("u", -5, true, NOW),
        Err(KeyError::InvalidTtl(-5))
    ));
    assert!(matches!(
        minter.mint("u", i64::MAX, true, NOW),
        Err(KeyError::InvalidTtl(_))
    ));
}
