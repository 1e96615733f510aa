//! The test IdP ([`testkit::Idp`]) does what revokd's tests rely on:
//! discovery, RFC 9068 access tokens signed by the first kid, a JWKS that
//! keeps the old key across a rotation, the JWKS fetch count, and a stop
//! that takes it off the air.

// Test code: a failure is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;
use testkit::Idp;

/// A JWT's header and claims (the signature is not checked here).
fn parts(jwt: &str) -> (Value, Value) {
    let mut segments = jwt.split('.');
    let mut decode = || {
        let segment = segments.next().expect("a JWT segment");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    };
    let header = decode();
    let claims = decode();
    assert_eq!(jwt.split('.').count(), 3, "a JWS compact JWT: {jwt}");
    (header, claims)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> Value {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.unwrap()
}

/// The JWKS's keys by kid, in order.
async fn jwks(idp: &Idp) -> Vec<(String, Value)> {
    let set = get_json(&idp.jwks_url()).await;
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            assert!(key.get("d").is_none(), "a private part published: {key}");
            (key["kid"].as_str().unwrap().to_owned(), key.clone())
        })
        .collect()
}

#[tokio::test]
async fn idp_discovers_signs_rotates_and_stops() {
    let started = Instant::now();
    let Some(mut idp) = Idp::start(&["k1"]).await else {
        return;
    };
    eprintln!("Idp::start took {:?}", started.elapsed());
    let issuer = idp.issuer().to_owned();
    assert!(issuer.starts_with("http://127.0.0.1:") && !issuer.ends_with('/'));

    let discovery = get_json(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["jwks_uri"], idp.jwks_url().as_str());

    // An RFC 9068 access token, signed ES256 by k1.
    let token = idp.access_token().await;
    let (header, claims) = parts(&token);
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["kid"], "k1", "{header}");
    assert_eq!(claims["iss"], issuer.as_str(), "{claims}");
    assert_eq!(claims["aud"], Idp::AUDIENCE, "{claims}");
    assert_eq!(claims["sub"], Idp::CLIENT_ID, "{claims}");
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{claims}"
    );
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat, "{claims}");
    let again = parts(&idp.access_token().await).1;
    assert_ne!(again["jti"], claims["jti"], "each token its own jti");

    // The JWKS fetches are counted (the token requests above fetched none).
    assert_eq!(idp.jwks_fetches().await, 0);
    let before = jwks(&idp).await;
    assert_eq!(idp.jwks_fetches().await, 1);
    assert_eq!(
        before
            .iter()
            .map(|(kid, _)| kid.as_str())
            .collect::<Vec<_>>(),
        ["k1"]
    );

    // Rotation: k2 signs, k1 is still published, with the same key.
    let port = idp.port();
    idp.restart(&["k2", "k1"]).await;
    assert_eq!(idp.port(), port);
    assert_eq!(idp.issuer(), issuer);
    let (header, claims) = parts(&idp.access_token().await);
    assert_eq!(header["kid"], "k2", "{header}");
    assert_eq!(claims["iss"], issuer.as_str(), "{claims}");
    assert_eq!(idp.jwks_fetches().await, 0, "the count starts again");
    let after = jwks(&idp).await;
    assert_eq!(
        after
            .iter()
            .map(|(kid, _)| kid.as_str())
            .collect::<Vec<_>>(),
        ["k2", "k1"]
    );
    assert_eq!(after[1].1, before[0].1, "k1 unchanged");
    assert_ne!(after[0].1["x"], after[1].1["x"], "k2 is a key of its own");

    // Stopped: nothing answers on the port.
    idp.stop();
    let url = format!("{issuer}/.well-known/openid-configuration");
    assert!(client().get(&url).send().await.is_err(), "{url} answered");
}

#[tokio::test]
async fn idp_reserved_then_started() {
    let Some(mut idp) = Idp::reserve() else {
        return;
    };
    let url = format!("{}/.well-known/openid-configuration", idp.issuer());
    assert!(
        client().get(&url).send().await.is_err(),
        "reserved, not started"
    );
    idp.restart(&["only"]).await;
    let (header, _) = parts(&idp.access_token().await);
    assert_eq!(header["kid"], "only");
}
