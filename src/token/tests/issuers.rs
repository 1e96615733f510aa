//! Several issuers (`REVOKD_ISSUERS_FILE`): routing by `iss`, each issuer's
//! own key, audience and leeway; the file's errors; and the identity
//! provider settings refused when they cannot work.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::{KeySettings, NOW, Reason, SECRET, Verifier, fixture, temp_file};
use crate::token::KeyError;

const OTHER_SECRET: &str = "another-secret-that-is-long-enough-for-hs256-tokens";

fn file(name: &str, toml: &str) -> KeySettings {
    KeySettings {
        issuers_file: Some(temp_file(name, toml)),
        leeway_secs: 5,
        ..Default::default()
    }
}

fn sign(secret: &str, claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::default(), claims, &key).unwrap()
}

fn error(settings: &KeySettings) -> String {
    Verifier::new(settings).unwrap_err().to_string()
}

#[test]
fn tokens_are_routed_by_iss_and_verified_with_that_issuers_key_and_audience() {
    let settings = file(
        "routing.toml",
        &format!(
            r#"
[[issuer]]
issuer = "https://a.example"
secret = "{SECRET}"
audience = "api-a"
leeway_secs = 100

[[issuer]]
issuer = "https://b.example"
secret = "{OTHER_SECRET}"
"#
        ),
    );
    let verifier = Verifier::new(&settings).unwrap();
    let claims = |iss: &str| json!({ "iss": iss, "aud": "api-a", "exp": NOW + 60, "jti": "t" });
    assert!(
        verifier
            .verify(&sign(SECRET, &claims("https://a.example")), NOW)
            .is_ok()
    );
    assert!(
        verifier
            .verify(&sign(OTHER_SECRET, &claims("https://b.example")), NOW)
            .is_ok()
    );
    // Signed with one issuer's key, claiming the other: the other's key
    // checks it.
    assert_eq!(
        verifier
            .verify(&sign(OTHER_SECRET, &claims("https://a.example")), NOW)
            .unwrap_err(),
        Reason::InvalidSignature
    );
    assert_eq!(
        verifier
            .verify(&sign(SECRET, &claims("https://b.example")), NOW)
            .unwrap_err(),
        Reason::InvalidSignature
    );
    // No issuer of that name, or no `iss` at all.
    assert_eq!(
        verifier
            .verify(&sign(SECRET, &claims("https://c.example")), NOW)
            .unwrap_err(),
        Reason::InvalidIssuer
    );
    assert_eq!(
        verifier
            .verify(&sign(SECRET, &json!({ "exp": NOW + 60 })), NOW)
            .unwrap_err(),
        Reason::InvalidIssuer
    );
    // A's audience is A's alone.
    let no_aud = json!({ "iss": "https://a.example", "exp": NOW + 60 });
    assert_eq!(
        verifier.verify(&sign(SECRET, &no_aud), NOW).unwrap_err(),
        Reason::InvalidAudience
    );
    // Each issuer's leeway: A allows 100 s, B the default 5 s; deny-list
    // entries outlive the longest.
    let late = NOW + 60 + 50;
    assert!(
        verifier
            .verify(&sign(SECRET, &claims("https://a.example")), late)
            .is_ok()
    );
    assert_eq!(
        verifier
            .verify(&sign(OTHER_SECRET, &claims("https://b.example")), late)
            .unwrap_err(),
        Reason::Expired
    );
    assert_eq!(verifier.leeway_secs(), 100);
    assert!(verifier.is_ready());
    assert!(!verifier.fetches_keys());
}

#[test]
fn key_files_resolve_against_the_issuers_file_and_algorithms_restrict() {
    let dir = fixture("ec256_public.pem");
    let dir = dir.parent().unwrap();
    let path = dir.join(format!("issuers-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
[[issuer]]
issuer = "ec"
public_key_file = "ec256_public.pem"
algorithms = ["ES256"]
"#,
    )
    .unwrap();
    let settings = KeySettings {
        issuers_file: Some(path.clone()),
        ..Default::default()
    };
    let verified = Verifier::new(&settings);
    std::fs::remove_file(&path).unwrap();
    let verifier = verified.unwrap();
    let key = EncodingKey::from_ec_pem(&super::read_fixture("ec256_private.pem")).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({ "iss": "ec", "exp": NOW + 60 }),
        &key,
    )
    .unwrap();
    assert!(verifier.verify(&token, NOW).is_ok());
    // Another algorithm with the issuer's name: refused.
    let rsa = EncodingKey::from_rsa_pem(&super::read_fixture("rsa_private.pem")).unwrap();
    let other = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({ "iss": "ec", "exp": NOW + 60 }),
        &rsa,
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&other, NOW).unwrap_err(),
        Reason::InvalidSignature
    );
}

#[test]
fn a_bad_issuers_file_is_refused_naming_the_entry_never_the_secret() {
    let cases = [
        ("empty", String::new(), "no [[issuer]]"),
        (
            "two-sources",
            format!("[[issuer]]\nissuer = \"a\"\nsecret = \"{SECRET}\"\njwks_url = \"https://a.example/keys\"\n"),
            "#1: set exactly one",
        ),
        (
            "no-iss",
            format!("[[issuer]]\nsecret = \"{SECRET}\"\n"),
            "#1: `issuer`",
        ),
        (
            "twice",
            format!("[[issuer]]\nissuer = \"a\"\nsecret = \"{SECRET}\"\n[[issuer]]\nissuer = \"a\"\nsecret = \"{OTHER_SECRET}\"\n"),
            "#2: issuer \"a\" is listed twice",
        ),
        (
            "unknown-field",
            format!("[[issuer]]\nissuer = \"a\"\nsecret = \"{SECRET}\"\nsecrett = \"x\"\n"),
            "at line 4",
        ),
        (
            "bad-alg",
            format!("[[issuer]]\nissuer = \"a\"\nsecret = \"{SECRET}\"\nalgorithms = [\"HS1\"]\n"),
            "unsupported JWT algorithm",
        ),
        (
            "bad-url",
            "[[issuer]]\noidc_issuer = \"ftp://idp.example\"\n".to_owned(),
            "not an http(s) URL",
        ),
        (
            "oidc-mismatch",
            "[[issuer]]\noidc_issuer = \"https://idp.example\"\nissuer = \"https://other.example\"\n"
                .to_owned(),
            "differs from oidc_issuer",
        ),
        (
            "not-toml",
            format!("[[issuer]\nsecret = \"{SECRET}\"\n"),
            "line 1",
        ),
    ];
    for (name, toml, want) in cases {
        let message = error(&file(&format!("bad-{name}.toml"), &toml));
        assert!(message.contains(want), "{name}: {message}");
        assert!(
            !message.contains(SECRET),
            "{name} echoes the secret: {message}"
        );
        assert!(!message.contains(OTHER_SECRET), "{name}: {message}");
    }
    // A weak secret in the file is refused like JWT_SECRET's.
    let weak = file(
        "weak.toml",
        "[[issuer]]\nissuer = \"a\"\nsecret = \"short\"\n",
    );
    assert!(matches!(
        Verifier::new(&weak).unwrap_err(),
        KeyError::WeakSecret { .. }
    ));
}

#[test]
fn provider_settings_are_refused_when_they_cannot_work() {
    let oidc = |url: &str| KeySettings {
        oidc_issuer: Some(url.to_owned()),
        ..Default::default()
    };
    // With a local key as well: which one would verify?
    let both = KeySettings {
        secret: Some(SECRET.into()),
        ..oidc("https://idp.example")
    };
    assert!(
        error(&both).contains("JWT_SECRET, JWT_OIDC_ISSUER"),
        "{}",
        error(&both)
    );
    // A key set URL alone could serve many issuers (a provider's tenants).
    let url_alone = KeySettings {
        jwks_url: Some("https://idp.example/keys".into()),
        ..Default::default()
    };
    assert!(error(&url_alone).contains("needs JWT_ISSUER"));
    let file_and_alg = KeySettings {
        issuers_file: Some(temp_file("alg.toml", "[[issuer]]\nissuer = \"a\"\n")),
        algorithm: Some("RS256".into()),
        ..Default::default()
    };
    assert!(error(&file_and_alg).contains("JWT_ALGORITHM"));
    let file_and_url = KeySettings {
        issuers_file: Some("/nonexistent.toml".into()),
        jwks_url: Some("https://idp.example/keys".into()),
        ..Default::default()
    };
    assert!(error(&file_and_url).contains("several JWT keys"));
    // JWT_ISSUER must agree with the issuer discovery pins.
    let pinned = KeySettings {
        issuer: Some("https://other.example".into()),
        ..oidc("https://idp.example")
    };
    assert!(error(&pinned).contains("JWT_ISSUER"));
    for bad in [
        "idp.example",
        "ftp://idp.example",
        "https://user:pw@idp.example",
    ] {
        let message = error(&oidc(bad));
        assert!(message.starts_with("JWT_OIDC_ISSUER"), "{bad}: {message}");
        assert!(!message.contains("pw"), "{message}");
    }
    // Minting needs a local key.
    assert!(matches!(
        crate::token::Minter::new(&oidc("https://idp.example")).unwrap_err(),
        KeyError::NoLocalKey
    ));
    // Outside a runtime nothing is fetched: not ready, and its tokens are
    // refused (fail closed) by the reason-only API.
    let verifier = Verifier::new(&oidc("https://idp.example")).unwrap();
    assert!(!verifier.is_ready());
    assert!(verifier.fetches_keys());
    let token = sign(
        SECRET,
        &json!({ "iss": "https://idp.example", "exp": NOW + 60 }),
    );
    assert_eq!(
        verifier.attempt(&token).unwrap_err(),
        crate::token::Unverified::NoKeys
    );
    assert_eq!(
        verifier.verify(&token, NOW).unwrap_err(),
        Reason::InvalidSignature
    );
}
