//! Identity providers: revokd follows a real OpenID provider (panva's
//! `oidc-provider`, `tests/idp`) by discovery — its RFC 9068 access tokens
//! verify, revoke and pass `/v1/auth`; a key rotation at the provider is
//! picked up without a restart; known keys keep working while it is down;
//! a revokd started before it is not ready until its keys load; several
//! issuers are kept apart; and a flood of made-up `kid`s costs the
//! provider at most one fetch per 10 s.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::{
    Idp, Options, SECRET, TestApp, assert_answer, eventually, in_both_stores, redis_url,
};

const WRITE_KEY: &str = "idp-key";

/// An app (API and worker) following `idp` by discovery, pinned to its
/// tokens' audience.
async fn follow(idp: &Idp) -> TestApp {
    let issuer = idp.issuer().to_owned();
    let extra: Vec<&str> = vec![
        "--jwt-oidc-issuer",
        &issuer,
        "--jwt-audience",
        Idp::AUDIENCE,
        "--api-keys",
        "idp:idp-key",
    ];
    TestApp::spawn_with(Options {
        extra: &extra,
        ..Default::default()
    })
    .await
}

/// `/readyz`: the status and the body.
async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn wait_ready(app: &TestApp) {
    eventually(Duration::from_secs(20), "keys loaded", || async {
        readyz(app).await.0 == 200
    })
    .await;
}

/// `GET /v1/auth` with the token: the status and `X-Auth-Subject`.
async fn auth(app: &TestApp, token: &str) -> (u16, Option<String>) {
    let response = app
        .http
        .get(app.url("/v1/auth"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let subject = response
        .headers()
        .get("x-auth-subject")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), subject)
}

/// Revokes `token` and waits until the job applied; its id.
async fn revoke(app: &TestApp, token: &str) -> String {
    let (status, body) = app
        .post_json(
            "/v1/revocations?wait=true",
            WRITE_KEY,
            &json!({ "token": token }),
        )
        .await;
    assert_eq!(status, 200, "revocation answered {status} {body}");
    body["token_id"].as_str().unwrap().to_owned()
}

/// A sample of `/metrics`: the value of the series `series` (name and
/// labels as rendered), if present.
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse::<f64>().ok())
}

/// A token of `issuer` naming `kid`, with a signature that cannot verify.
fn made_up(issuer: &str, kid: &str) -> String {
    let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid });
    let claims = json!({ "iss": issuer, "aud": Idp::AUDIENCE, "exp": 4_000_000_000i64 });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode([1u8; 64]),
    )
}

/// The decoded JSON of part `n` (0 header, 1 claims) of a compact JWT.
fn part(token: &str, n: usize) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(n).unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `token` with its claims replaced (the signature kept, so no longer its).
fn with_claims(token: &str, claims: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    parts.join(".")
}

#[tokio::test]
async fn a_real_providers_tokens_verify_revoke_and_pass_the_gateway_check() {
    let Some(idp) = Idp::start(&["k1"]).await else {
        return;
    };
    let Some(other) = Idp::start(&["k1"]).await else {
        return;
    };
    let app = follow(&idp).await;
    wait_ready(&app).await;
    let token = idp.access_token().await;
    assert_eq!(part(&token, 0)["typ"], "at+jwt");
    assert_answer(&app.check(&token).await, "active");
    assert_eq!(
        auth(&app, &token).await,
        (200, Some(Idp::CLIENT_ID.to_owned()))
    );

    // Another provider, even with a key of the same name: refused.
    let foreign = other.access_token().await;
    assert_answer(&app.check(&foreign).await, "invalid_signature");
    assert_eq!(auth(&app, &foreign).await.0, 401);

    // `revokd check` follows the provider too, in one shot.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_revokd"))
        .env("RUST_LOG", "off")
        .args(["--jwt-oidc-issuer", idp.issuer()])
        .args(["--jwt-audience", Idp::AUDIENCE])
        .args(["--key-prefix", &app.prefix, "--redis-url", &redis_url()])
        .args(["--database-url", &app.db.url])
        .env("REVOKD_TOKEN", &token)
        .arg("check")
        .output()
        .unwrap();
    let printed: Value = serde_json::from_slice(&cli.stdout).unwrap_or_else(|_| {
        panic!(
            "revokd check printed nothing: {}",
            String::from_utf8_lossy(&cli.stderr)
        )
    });
    assert_eq!(
        (cli.status.code(), &printed["active"]),
        (Some(0), &Value::Bool(true)),
        "{printed}"
    );

    // Revoked by token: refused by the check, the gateway check and the CLI.
    let id = revoke(&app, &token).await;
    assert_eq!(id, part(&token, 1)["jti"]);
    assert_answer(&app.check(&token).await, "revoked");
    assert_eq!(auth(&app, &token).await.0, 401);
    in_both_stores(&app.db, &redis_url(), &app.prefix, &[id]).await;
    // A fresh token of the same client stays active.
    assert_answer(&app.check(&idp.access_token().await).await, "active");

    // The fetches and the set, as /metrics shows them.
    let issuer = idp.issuer();
    let fetched = format!(r#"revokd_jwks_refresh_total{{issuer="{issuer}",result="ok"}}"#);
    assert!(metric(&app, &fetched).await >= Some(1.0));
    let keys = format!(r#"revokd_jwks_keys{{issuer="{issuer}"}}"#);
    assert_eq!(metric(&app, &keys).await, Some(1.0));
    let age = format!(r#"revokd_jwks_age_seconds{{issuer="{issuer}"}}"#);
    let age = metric(&app, &age).await;
    assert!(
        age.is_some_and(|age| (0.0..60.0).contains(&age)),
        "age {age:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rotation_at_the_provider_is_followed_without_a_restart() {
    let Some(mut idp) = Idp::start(&["k1"]).await else {
        return;
    };
    let app = follow(&idp).await;
    wait_ready(&app).await;
    let old = idp.access_token().await;
    assert_answer(&app.check(&old).await, "active");

    // The provider signs with a new key and still publishes the old one.
    idp.restart(&["k2", "k1"]).await;
    let new = idp.access_token().await;
    assert_eq!(part(&new, 0)["kid"], "k2");
    // The first check of the new key's token fetches the set, and is
    // answered with it (allowing for a slow provider: the check waits 3 s).
    let fetches = idp.jwks_fetches().await;
    let first = Instant::now();
    let answer = app.check(&new).await;
    eprintln!(
        "figure: first check of a token signed with the new key: active={} in {:?}, {} JWKS fetch",
        answer.1["active"],
        first.elapsed(),
        idp.jwks_fetches().await - fetches
    );
    eventually(Duration::from_secs(15), "new key accepted", || async {
        app.check(&new).await.1["active"] == true
    })
    .await;
    assert_answer(&app.check(&old).await, "active");

    // The provider down, and revokd has seen it fail (a made-up kid makes
    // it fetch, now or when the window ends): known keys keep working, and
    // a revocation made meanwhile holds.
    idp.stop();
    assert_answer(
        &app.check(&made_up(idp.issuer(), "nope")).await,
        "invalid_signature",
    );
    let failed = format!(
        r#"revokd_jwks_refresh_total{{issuer="{}",result="error"}}"#,
        idp.issuer()
    );
    eventually(Duration::from_secs(15), "a failed fetch", || async {
        metric(&app, &failed).await >= Some(1.0)
    })
    .await;
    assert_answer(&app.check(&old).await, "active");
    assert_answer(&app.check(&new).await, "active");
    let id = revoke(&app, &new).await;
    assert_answer(&app.check(&new).await, "revoked");
    let (status, ready) = readyz(&app).await;
    assert_eq!((status, &ready["keys"]), (200, &json!("loaded")), "{ready}");

    // Back with only a third key: k1 and k2 are withdrawn, and a token
    // verified with one of them before (cached) is no longer accepted.
    idp.restart(&["k3"]).await;
    let third = idp.access_token().await;
    eventually(Duration::from_secs(15), "k3 fetched", || async {
        app.check(&third).await.1["active"] == true
    })
    .await;
    assert_answer(&app.check(&old).await, "invalid_signature");
    assert_answer(&app.check(&new).await, "invalid_signature");

    // The audit: the revocation made while the provider was down is in
    // both stores.
    in_both_stores(&app.db, &redis_url(), &app.prefix, &[id]).await;
    app.stop().await;
}

#[tokio::test]
async fn started_before_its_provider_revokd_waits_unready_then_follows() {
    let Some(mut idp) = Idp::reserve() else {
        return;
    };
    let app = follow(&idp).await;
    let (status, body) = readyz(&app).await;
    assert_eq!((status, &body["keys"]), (503, &json!("loading")), "{body}");
    // Checks cannot be answered yet: 503, never active, never a reason.
    let unverifiable = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#),
        URL_SAFE_NO_PAD.encode(json!({ "iss": idp.issuer(), "exp": 4_000_000_000i64 }).to_string()),
        URL_SAFE_NO_PAD.encode([7u8; 64]),
    );
    let (status, body) = app.check(&unverifiable).await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("keys_unavailable")),
        "{body}"
    );
    assert_eq!(auth(&app, &unverifiable).await.0, 503);
    let (status, body) = app
        .post_json(
            "/v1/revocations",
            WRITE_KEY,
            &json!({ "token": unverifiable }),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    // RFC 7009 answers an invalid token as revoked, but this one cannot be
    // told invalid yet: 503 (2.2.1), with a time to retry.
    let response = app
        .http
        .post(app.url("/revoke"))
        .basic_auth("idp", Some(WRITE_KEY))
        .form(&[("token", unverifiable.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");

    idp.restart(&["k1"]).await;
    let started = Instant::now();
    wait_ready(&app).await;
    eprintln!(
        "figure: provider up to revokd ready {:?}",
        started.elapsed()
    );
    assert_answer(&app.check(&idp.access_token().await).await, "active");
    assert_answer(&app.check(&unverifiable).await, "invalid_signature");
    app.stop().await;
}

#[tokio::test]
async fn several_issuers_are_each_verified_with_their_own_keys_and_audience() {
    let Some(a) = Idp::start(&["a1"]).await else {
        return;
    };
    let Some(b) = Idp::start(&["b1"]).await else {
        return;
    };
    let file = std::env::temp_dir().join(format!("revokd-issuers-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        format!(
            r#"
[[issuer]]
oidc_issuer = "{a}"
audience = "{aud}"

[[issuer]]
oidc_issuer = "{b}"
audience = "{aud}"
algorithms = ["ES256"]

[[issuer]]
issuer = "internal"
secret = "{SECRET}"
"#,
            a = a.issuer(),
            b = b.issuer(),
            aud = Idp::AUDIENCE,
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap().to_owned();
    let app = TestApp::spawn_with(Options {
        extra: &["--issuers-file", &path, "--api-keys", "idp:idp-key"],
        ..Default::default()
    })
    .await;
    wait_ready(&app).await;
    let (from_a, from_b) = (a.access_token().await, b.access_token().await);
    assert_answer(&app.check(&from_a).await, "active");
    assert_answer(&app.check(&from_b).await, "active");

    // A's token claiming to be B's is checked with B's keys.
    let mut claims = part(&from_a, 1);
    claims["iss"] = json!(b.issuer());
    assert_answer(
        &app.check(&with_claims(&from_a, &claims)).await,
        "invalid_signature",
    );
    // A token signed with the internal secret claiming A's `iss`: A's keys
    // (ES256) refuse it.
    let now = revokd_jobs::now_unix();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "iss": a.issuer(), "sub": "mallory", "aud": Idp::AUDIENCE, "iat": now, "exp": now + 60, "jti": "f1" }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_answer(&app.check(&forged).await, "invalid_signature");
    // ... while with its own `iss` it is the internal issuer's, whose
    // tokens need no audience.
    let internal = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "iss": "internal", "sub": "svc", "iat": now, "exp": now + 60, "jti": "i1" }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_answer(&app.check(&internal).await, "active");
    // An `iss` no issuer has, or none.
    let mut claims = part(&from_a, 1);
    claims["iss"] = json!("https://elsewhere.example");
    assert_answer(
        &app.check(&with_claims(&from_a, &claims)).await,
        "invalid_issuer",
    );

    // One token namespace: revoking A's token revokes that id only.
    let id = revoke(&app, &from_a).await;
    assert_answer(&app.check(&from_a).await, "revoked");
    assert_answer(&app.check(&from_b).await, "active");
    in_both_stores(&app.db, &redis_url(), &app.prefix, &[id]).await;
    app.stop().await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn a_flood_of_made_up_kids_costs_the_provider_one_fetch_per_ten_seconds() {
    let Some(idp) = Idp::start(&["k1"]).await else {
        return;
    };
    let app = follow(&idp).await;
    wait_ready(&app).await;
    let token = idp.access_token().await;
    assert_answer(&app.check(&token).await, "active");
    let before = idp.jwks_fetches().await;

    // Tokens with a kid of their own, 16 every 50 ms, for 13 s (beyond the
    // first 10 s window): all refused.
    let started = Instant::now();
    let mut sent = 0u32;
    while started.elapsed() < Duration::from_secs(13) {
        let batch = (0..16).map(|i| {
            let forged = made_up(idp.issuer(), &format!("made-up-{sent}-{i}"));
            let app = &app;
            async move { app.check(&forged).await }
        });
        for answer in futures::future::join_all(batch).await {
            assert_answer(&answer, "invalid_signature");
        }
        sent += 16;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flood = started.elapsed();
    let fetches = idp.jwks_fetches().await - before;
    // One at the first made-up kid, one owed to the others when its window
    // ended at 10 s; the next is owed at 20 s.
    assert_eq!(
        fetches, 2,
        "{fetches} fetches during a {flood:?} flood of {sent} made-up kids"
    );
    eprintln!("figure: {sent} made-up kids in {flood:?}: {fetches} JWKS fetches");
    // Genuine tokens were answered throughout.
    assert_answer(&app.check(&token).await, "active");
    app.stop().await;
}
