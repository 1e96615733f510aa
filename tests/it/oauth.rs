//! Gateways and OAuth clients as their users wire them: Envoy's ext_authz
//! paths on `/v1/auth`, unambiguous ASCII `X-Auth-*` headers, RFC 6749
//! client authentication on `/revoke` and `/introspect` (Basic with
//! form-urlencoded credentials, or `client_secret_post`), RFC 7009/7662
//! answers, `# HELP` on every metric family — and a real OAuth client
//! library (Authlib) against `/revoke` and `/introspect`.

use std::{path::Path, process::Command, time::Duration};

use base64::Engine;
use revokd::token::Minter;
use revokd_jobs::now_unix;

use crate::helpers::{Options, TestApp, missing_program};

/// A key full of the characters form-urlencoding changes.
const NASTY: &str = "k+/=%&y ü";

async fn app() -> TestApp {
    let keys = format!("app:{NASTY}");
    let checks = format!("gw:{NASTY}");
    let extra: Vec<&str> = vec!["--api-keys", &keys, "--check-keys", &checks];
    TestApp::spawn_with(Options {
        worker: false,
        extra: &extra,
        ..Default::default()
    })
    .await
}

fn form_urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_owned()
}

fn basic(id: &str, secret: &str) -> String {
    let encoded = format!("{}:{}", form_urlencode(id), form_urlencode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(encoded)
    )
}

/// `/v1/auth`'s status for `token` (it needs no check key).
async fn auth_status(app: &TestApp, token: &str) -> u16 {
    let response = app.http.get(app.url("/v1/auth")).bearer_auth(token).send();
    response.await.unwrap().status().as_u16()
}

/// Waits until `/v1/auth` refuses `token`.
async fn refused(app: &TestApp, token: &str) {
    crate::helpers::eventually(Duration::from_secs(5), "refused", || async {
        auth_status(app, token).await == 401
    })
    .await;
}

#[tokio::test]
async fn forward_auth_answers_any_method_and_path_under_v1_auth() {
    let app = app().await;
    let token = app.mint("alice@example.com");
    for (method, path) in [
        ("GET", "/v1/auth"),
        ("POST", "/v1/auth/orders?a=1"),
        ("DELETE", "/v1/auth/a/b/c"),
        ("PUT", "/v1/auth/"),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        assert_eq!(response.headers()["x-auth-subject"], "alice@example.com");
    }
    // No credentials: a challenge without an error code (RFC 6750 3.1).
    let response = app.http.post(app.url("/v1/auth/x")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="revokd""#
    );
    app.stop().await;
}

#[tokio::test]
async fn auth_headers_are_ascii_unambiguous_and_always_present() {
    let app = app().await;
    let minter = Minter::new(&app.services.config.key_settings()).unwrap();
    let cases = [
        ("alice@example.com", "alice@example.com"),
        ("auth0|42", "auth0|42"),
        ("josé", "jos%C3%A9"),
        ("a b%", "a%20b%25"),
        ("a\nb", "a%0Ab"),
        ("a%0Ab", "a%250Ab"),
    ];
    for (sub, want) in cases {
        let token = minter.mint(sub, 900, true, now_unix()).unwrap();
        let response = app
            .http
            .get(app.url("/v1/auth"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{sub:?}");
        assert_eq!(response.headers()["x-auth-subject"], want, "{sub:?}");
        assert!(response.headers()["x-auth-token-id"].to_str().is_ok());
    }
    // A token without `sub`: the header is there, empty.
    let claims = serde_json::json!({ "exp": now_unix() + 600, "jti": "no-sub" });
    let key = jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let response = app
        .http
        .get(app.url("/v1/auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-subject"], "");
    assert_eq!(response.headers()["x-auth-token-id"], "no-sub");
    app.stop().await;
}

#[tokio::test]
async fn revoke_and_introspect_take_rfc6749_client_credentials() {
    let app = app().await;
    let [one, two, three] = [app.mint("u1"), app.mint("u2"), app.mint("u3")];
    // Basic with form-urlencoded id and secret.
    let response = app
        .http
        .post(app.url("/revoke"))
        .header("authorization", basic("app", NASTY))
        .form(&[("token", one.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{}");
    // client_secret_post.
    let form = [
        ("token", two.as_str()),
        ("client_id", "app"),
        ("client_secret", NASTY),
    ];
    let response = app
        .http
        .post(app.url("/revoke"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A failure: invalid_client with a Basic challenge.
    for wrong in [
        app.http
            .post(app.url("/revoke"))
            .header("authorization", basic("app", "nope")),
        app.http.post(app.url("/revoke")),
        app.http.post(app.url("/introspect")),
    ] {
        let response = wrong
            .form(&[("token", three.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Basic realm="revokd""#
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{body}");
    }
    refused(&app, &one).await;
    refused(&app, &two).await;
    // Introspection: the hint is only a hint; the type is Bearer.
    let form = [
        ("token", three.as_str()),
        ("token_type_hint", "refresh_token"),
        ("client_id", "gw"),
        ("client_secret", NASTY),
    ];
    let body: serde_json::Value = app
        .http
        .post(app.url("/introspect"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn every_metric_family_has_help_text() {
    let app = app().await;
    let token = app.mint("m");
    app.check(&token).await;
    let text = app.metrics().await;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() > 5, "{text}");
    for family in families {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no # HELP"
        );
    }
    app.stop().await;
}

/// The Python with Authlib that `.ci/run` prepares, or `python3` when it
/// has Authlib.
fn authlib_python() -> Option<String> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci-venv/bin/python");
    let candidates = [venv.to_owned(), "python3".to_owned()];
    candidates.into_iter().find(|python| {
        (python == "python3" || Path::new(python).exists())
            && Command::new(python)
                .args(["-c", "import authlib, requests"])
                .output()
                .is_ok_and(|o| o.status.success())
    })
}

#[tokio::test]
async fn authlib_revokes_and_introspects_with_both_client_auth_methods() {
    let Some(python) = authlib_python() else {
        // .ci/run installs Authlib and sets REVOKD_REQUIRE_CLIENTS.
        missing_program(
            "Authlib (pip install authlib requests)",
            &["REVOKD_REQUIRE_CLIENTS"],
        );
        return;
    };
    let app = app().await;
    let tokens: Vec<String> = (0..2).map(|i| app.mint(&format!("lib{i}"))).collect();
    let other = app.mint("untouched");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/authlib_client.py"
    );
    // The server runs on this test's runtime: wait for Python off it.
    let mut command = Command::new(&python);
    command
        .arg(script)
        .env("REVOKD_URL", format!("http://{}", app.addr))
        .env("CLIENT_SECRET", NASTY)
        .env("TOKEN_BASIC", &tokens[0])
        .env("TOKEN_POST", &tokens[1])
        .env("TOKEN_ACTIVE", &other);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for token in &tokens {
        refused(&app, token).await;
    }
    assert_eq!(auth_status(&app, &other).await, 200);
    assert!(stdout.contains("introspect basic active"), "{stdout}");
    assert!(stdout.contains("introspect post active"), "{stdout}");
    app.stop().await;
}
