//! Every malformed, forged or out-of-date token gets its documented reason
//! from the HTTP API, never a 500.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use revokd::read::checker::LookupStats;
use revokd_jobs::{Job, RevokeSubject, RevokeToken, now_unix};
use serde_json::json;

use crate::helpers::{
    Options, SECRET, TestApp, assert_answer, check_reason, eventually, free_port, healthy, mint,
    own_deployment, redis_url, serve,
};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_tokens_get_their_documented_reason() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &[
            "--jwt-issuer",
            "https://issuer.test",
            "--jwt-audience",
            "api",
        ],
        ..Default::default()
    })
    .await;
    let now = now_unix();
    let good = json!({ "sub": "ivy", "iat": now, "exp": now + 600, "iss": "https://issuer.test", "aud": "api", "jti": "v1" });
    let with = |patch: serde_json::Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let none_token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    // HS256 signed with what an RS256 verifier would hold as its public key.
    let rsa_pem = include_str!("../fixtures/keys/rsa_public.pem");
    let confusion = hs256(rsa_pem, good.clone());
    let cases = [
        (hs256(SECRET, good.clone()), None),
        (none_token, Some("unsupported_algorithm")),
        (confusion, Some("invalid_signature")),
        (
            hs256("another-secret-entirely-different", good.clone()),
            Some("invalid_signature"),
        ),
        (
            hs256(SECRET, with(json!({ "exp": now - 3600 }))),
            Some("expired"),
        ),
        (
            hs256(SECRET, with(json!({ "nbf": now + 3600 }))),
            Some("not_yet_valid"),
        ),
        (
            hs256(SECRET, with(json!({ "iss": "https://evil.test" }))),
            Some("invalid_issuer"),
        ),
        (
            hs256(SECRET, with(json!({ "aud": "other" }))),
            Some("invalid_audience"),
        ),
        ("garbage".to_owned(), Some("malformed")),
        ("a.b.c".to_owned(), Some("malformed")),
        (String::new(), Some("malformed")),
        ("x".repeat(15_000), Some("malformed")),
    ];
    for (token, expected) in cases {
        let (status, body) = app.check(&token).await;
        assert_eq!(status, 200, "{body}");
        match expected {
            None => assert_eq!(body["active"], true, "{body}"),
            Some(reason) => {
                assert_eq!(body["active"], false, "{body}");
                assert_eq!(
                    body["reason"],
                    reason,
                    "for token starting {:?}",
                    token.get(..12)
                );
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_signature_or_an_unknown_kid_is_invalid_signature() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let token = app.mint("tam");
    // The last character of a signature carries unused bits: most changes
    // there also break strict base64, which must still read as a bad signature.
    for c in ['A', 'B', 'x', 'Q', '_'] {
        let mut forged = token.clone();
        if forged.ends_with(c) {
            continue;
        }
        forged.pop();
        forged.push(c);
        let (status, body) = app.check(&forged).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (200, Some("invalid_signature")),
            "last char {c}"
        );
    }
    let now = now_unix();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("nope".into());
    let claims = json!({ "sub": "k", "iat": now, "exp": now + 60 });
    let with_kid = encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_answer(&app.check(&with_kid).await, "invalid_signature");
    app.stop().await;
}

#[tokio::test]
async fn hmac_token_presented_to_an_rsa_configured_service_is_rejected() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/rsa_public.pem"
    );
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--jwt-public-key-file", key, "--jwt-algorithm", "RS256"],
        ..Default::default()
    })
    .await;
    let now = now_unix();
    let claims = json!({ "sub": "x", "iat": now, "exp": now + 60 });
    let forged = hs256(include_str!("../fixtures/keys/rsa_public.pem"), claims);
    let (status, body) = app.check(&forged).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (200, Some("invalid_signature")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn http_edges_answer_with_the_json_error_shape() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let big = format!(r#"{{"token":"{}"}}"#, "x".repeat(17 * 1024));
    let response = app
        .http
        .post(app.url("/v1/check"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");

    for bad in ["", "{", "[]", r#"{"token": 5}"#, r#"{"nope": "x"}"#] {
        let response = app
            .http
            .post(app.url("/v1/check"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "body {bad:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }

    let response = app.http.get(app.url("/v1/auth")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    let token = app.mint("jo");
    let response = app
        .http
        .get(app.url("/v1/auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-subject"], "jo");

    let response = app
        .http
        .get(app.url("/v1/auth"))
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="invalid_token""#) && challenge.contains("malformed"),
        "{challenge}"
    );

    let response = app
        .http
        .post(app.url("/introspect"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (body["active"].as_bool(), body["sub"].as_str()),
        (Some(true), Some("jo"))
    );
    assert_eq!(body["token_type"], "Bearer");
    let response = app
        .http
        .post(app.url("/introspect"))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({ "active": false })
    );

    let response = app.http.get(app.url("/no/such/path")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "not_found"
    );
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: serde_json::Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (ready["redis"].as_str(), ready["postgres"].as_str()),
        (Some("up"), Some("up"))
    );
    app.stop().await;
}

#[tokio::test]
async fn check_keys_protect_check_and_introspect_when_set() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--check-keys", "gw:k3y"],
        ..Default::default()
    })
    .await;
    let token = app.mint("kim");
    let body = json!({ "token": token });
    let no_key = app
        .http
        .post(app.url("/v1/check"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(
        no_key.json::<serde_json::Value>().await.unwrap()["error"],
        "unauthorized"
    );
    let wrong = app
        .http
        .post(app.url("/v1/check"))
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .http
        .post(app.url("/v1/check"))
        .bearer_auth("k3y")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let basic = app
        .http
        .post(app.url("/introspect"))
        .basic_auth("gw", Some("k3y"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let basic_wrong = app
        .http
        .post(app.url("/introspect"))
        .basic_auth("gw", Some("bad"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(basic_wrong.status(), 401);
    app.stop().await;
}

/// Against a `revokd serve` process of its own: its recorder counts this
/// test's traffic alone (the in-process one counts every test's), so the
/// counts are exact.
#[tokio::test]
async fn metrics_count_exactly_the_traffic_of_their_process() {
    let (db, prefix, _guard) = own_deployment().await;
    let port = free_port();
    let extra = ["--read-mode", "redis"];
    let _process = serve(
        &prefix,
        &redis_url(),
        &db.url,
        port,
        "api,worker",
        &extra,
        None,
    );
    let http = reqwest::Client::new();
    healthy(&http, port).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let token = mint("met");
    let check = url("/v1/check");
    assert_eq!(check_reason(&http, &check, &token).await, "active");
    assert_eq!(check_reason(&http, &check, "garbage").await, "malformed");
    let revoked = http
        .post(url("/v1/revocations?wait=true"))
        .bearer_auth("test-key")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(check_reason(&http, &check, &token).await, "revoked");

    // The worker counts the job once both stores are written, which may
    // be a moment after the wait is answered.
    let scrape = || async {
        let response = http.get(url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    };
    let applied = r#"revokd_jobs_applied_total{kind="revoke"} 1"#;
    eventually(Duration::from_secs(5), "the job counted", || async {
        scrape().await.lines().any(|l| l == applied)
    })
    .await;
    let text = scrape().await;
    // Summed over the stores that answered (Postgres, until the first
    // rebuild has proven Redis complete).
    let total = |series: &str| -> f64 {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(!values.is_empty(), "{series} missing in:\n{text}");
        values.iter().sum()
    };
    assert_eq!(total(r#"revokd_checks_total{result="active","#), 1.0);
    assert_eq!(total(r#"revokd_checks_total{result="revoked","#), 1.0);
    assert_eq!(total(r#"revokd_checks_total{result="malformed","#), 1.0);
    assert_eq!(total("revokd_check_duration_seconds_count "), 3.0);
    assert_eq!(total(r#"revokd_jobs_applied_total{kind="revoke"} "#), 1.0);
    // Gauges are read from the stores when a scrape finds them older than
    // 10 s: the first scrape may predate the job.
    let (pending, denied) = (
        r#"revokd_queue_jobs{state="pending"} 0"#,
        r#"revokd_denylist_entries{kind="token"} 1"#,
    );
    eventually(Duration::from_secs(15), "the gauges", || async {
        let text = scrape().await;
        text.lines().any(|l| l == pending) && text.lines().any(|l| l == denied)
    })
    .await;
}

/// The verify cache skips the signature of a token seen before, never the
/// rest: a cached token is refused once revoked by id or by subject, once
/// expired, and a token altered by one byte is verified (and refused) anew.
#[tokio::test]
async fn tokens_served_from_the_verify_cache_are_still_revoked_and_still_expire() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--jwt-leeway-secs", "0"],
        ..Default::default()
    })
    .await;
    let applier = app.services.applier();
    let now = now_unix();
    let short = hs256(
        SECRET,
        json!({ "sub": "vera", "iat": now - 5, "exp": now + 2, "jti": "vc-short" }),
    );
    let by_id = hs256(
        SECRET,
        json!({ "sub": "walt", "iat": now - 5, "exp": now + 600, "jti": "vc-walt" }),
    );
    let by_subject = hs256(
        SECRET,
        json!({ "sub": "xena", "iat": now - 5, "exp": now + 600, "jti": "vc-xena" }),
    );
    for token in [&short, &by_id, &by_subject] {
        for _ in 0..2 {
            let (status, body) = app.check(token).await;
            assert_eq!(
                (status, body["active"].clone()),
                (200, json!(true)),
                "{body}"
            );
        }
    }
    let stats = app.checker_stats.stats();
    let hits = LookupStats::get(&stats.verify_cache_hits);
    assert_eq!(hits, 3, "each token's second check came from the cache");
    assert_eq!(app.checker_stats.verify_cache_len(), 3);

    applier
        .apply(
            &Job::Revoke(RevokeToken::new("vc-walt", Some("walt".into()), now + 600)),
            now,
        )
        .await
        .unwrap();
    applier
        .apply(&Job::RevokeAll(RevokeSubject::new("xena", now)), now)
        .await
        .unwrap();
    assert_answer(&app.check(&by_id).await, "revoked");
    assert_answer(&app.check(&by_subject).await, "subject_revoked");

    // A forged variant of a cached token: same header and claims, one
    // signature character changed.
    let mut forged = by_id.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let misses_before = LookupStats::get(&stats.verify_cache_misses);
    assert_answer(&app.check(&forged).await, "invalid_signature");
    assert_eq!(
        LookupStats::get(&stats.verify_cache_misses),
        misses_before + 1
    );

    app.wait_for_reason(&short, "expired", Duration::from_secs(5))
        .await;
    assert!(
        LookupStats::get(&stats.verify_cache_hits) > hits + 2,
        "the revoked and expired answers came from cached verifications"
    );
    app.stop().await;
}

/// ECDSA signatures are malleable: `r || (n − s)` verifies like `r || s`.
/// For a token without `jti` (identified by the SHA-256 of its bytes), the
/// twin has another id; revoking either form must refuse both, through the
/// HTTP write API and whatever store answers.
#[tokio::test]
async fn revoking_a_jti_less_ecdsa_token_revokes_its_malleated_twin() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    let (public, private) = (
        format!("{keys}/ec256_public.pem"),
        format!("{keys}/ec256_private.pem"),
    );
    for read_mode in ["redis", "replica"] {
        let extra = [
            "--jwt-algorithm",
            "ES256",
            "--jwt-public-key-file",
            &public,
            "--jwt-private-key-file",
            &private,
            "--read-mode",
            read_mode,
            "--api-keys",
            "app:twin-key",
        ];
        let app = TestApp::spawn_with(Options {
            replica: read_mode == "replica",
            extra: &extra,
            ..Default::default()
        })
        .await;
        let token = app.mint_with("yuri", 600, false);
        let twin = revokd::token::ecdsa_twin(&token, Algorithm::ES256).unwrap();
        for t in [&token, &twin] {
            assert_eq!(app.check(t).await.1["active"], true, "{read_mode}");
        }
        // Revoke the twin (a holder of the token could have sent either).
        let (status, body) = app
            .post_json("/v1/revocations", "twin-key", &json!({ "token": twin }))
            .await;
        assert_eq!(status, 202, "{body}");
        for t in [&twin, &token] {
            app.wait_for_reason(t, "revoked", Duration::from_secs(5))
                .await;
        }
        // Each store answers for the pair in its one lookup: the fallbacks
        // (Redis, then Postgres) refuse the token just as the replica does.
        let (own, other) = (
            revokd::token::token_id(&token, None),
            revokd::token::token_id(&twin, None),
        );
        app.wait_for_row(&other).await;
        let deny = &app.services.deny_fast;
        assert!(
            deny.lookup(&own, Some(&other), Some("yuri"))
                .await
                .unwrap()
                .denied
        );
        assert!(!deny.lookup(&own, None, Some("yuri")).await.unwrap().denied);
        let db = &app.db.db;
        assert!(db.lookup(&own, Some(&other), Some("yuri")).await.unwrap().0);
        assert!(!db.lookup(&own, None, Some("yuri")).await.unwrap().0);
        app.stop().await;
    }
}
