//! Each gateway in front of a static upstream, using the example
//! configurations in examples/ (nginx, Caddy, HAProxy, Envoy with the HTTP
//! and the gRPC ext_authz service): an active token passes (and its subject
//! reaches the upstream), a revoked one is refused with 401.

use std::{path::Path, process::Stdio, time::Duration};

use revokd_jobs::{Job, RevokeToken, now_unix};

use crate::helpers::{Options, TestApp, eventually, free_port, missing_program};

/// nginx started on a config of the test's own; stopped on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn nginx_auth_request_passes_active_tokens_refuses_others_and_strips_spoofed_subjects() {
    let Some(nginx) = gateway_binary("nginx") else {
        return;
    };
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (gateway, upstream) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("revokd-nginx-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = include_str!("../../examples/nginx/revokd.conf")
        .replace("127.0.0.1:8080", &app.addr.to_string())
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{gateway}"));
    let d = dir.display();
    let config = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;
         events {{ worker_connections 64; }}
         http {{
           access_log off;
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
           # the static upstream: shows what nginx passed on
           server {{ listen 127.0.0.1:{upstream}; location / {{ return 200 \"subject=$http_x_auth_subject\"; }} }}
           {example}
         }}"
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let child = std::process::Command::new(nginx)
        .args([
            "-p",
            &d.to_string(),
            "-c",
            &dir.join("nginx.conf").display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _nginx = Nginx(child);
    eventually(Duration::from_secs(10), "nginx listening", || async {
        std::net::TcpStream::connect(("127.0.0.1", gateway)).is_ok()
    })
    .await;
    assert_gateway(app, gateway).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway process of the test's own; killed on drop.
pub(crate) struct Gateway(std::process::Child);

impl Gateway {
    /// Runs `command` and waits until it listens on `port`.
    pub(crate) async fn start(mut command: std::process::Command, port: u16) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = Gateway(child);
        eventually(Duration::from_secs(10), "gateway listening", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        gateway
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/usr/bin/<name>` (or `/usr/local/bin`, `/usr/sbin`, `/usr/local/sbin`,
/// or the CI venv's `bin`, where Envoy's PyPI wheel puts it), or `None`
/// where a developer machine lacks it; `.ci/run` installs every gateway and
/// sets `REVOKD_REQUIRE_GATEWAYS` (and, for nginx, the older
/// `REVOKD_REQUIRE_NGINX`), so CI fails instead of skipping.
#[track_caller]
pub(crate) fn gateway_binary(name: &str) -> Option<String> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci-venv/bin");
    let found = [
        "/usr/bin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/local/sbin",
        venv,
    ]
    .iter()
    .map(|dir| format!("{dir}/{name}"))
    .find(|path| Path::new(path).exists());
    if found.is_none() {
        let required_by: &[&str] = match name {
            "nginx" => &["REVOKD_REQUIRE_GATEWAYS", "REVOKD_REQUIRE_NGINX"],
            _ => &["REVOKD_REQUIRE_GATEWAYS"],
        };
        missing_program(name, required_by);
    }
    found
}

#[tokio::test]
async fn caddy_forward_auth_passes_active_tokens_refuses_others_and_strips_spoofed_subjects() {
    let Some(caddy) = gateway_binary("caddy") else {
        return;
    };
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (gateway, upstream) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("revokd-caddy-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = include_str!("../../examples/caddy/Caddyfile")
        .replace("127.0.0.1:8080", &app.addr.to_string())
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{gateway}"));
    // The upstream shows what reached it.
    let config = format!(
        "{example}\nhttp://127.0.0.1:{upstream} {{\n\trespond \"subject={{http.request.header.X-Auth-Subject}}\" 200\n}}\n"
    );
    std::fs::write(dir.join("Caddyfile"), config).unwrap();
    let mut command = std::process::Command::new(caddy);
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.join("Caddyfile"))
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir);
    let _caddy = Gateway::start(command, gateway).await;
    assert_gateway(app, gateway).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What every gateway must do in front of revokd: an active token reaches
/// the upstream with its subject and no client-sent one (also for a token
/// without `sub`); no token and a revoked one get 401 with revokd's
/// challenge; with revokd down, closed (no upstream call). Stops `app`.
async fn assert_gateway(app: TestApp, gateway: u16) {
    let base = format!("http://127.0.0.1:{gateway}/orders?a=1");
    let http = app.http.clone();
    let get = |token: Option<String>, spoof: Option<&'static str>| {
        let mut request = http.get(&base);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(spoof) = spoof {
            request = request.header("X-Auth-Subject", spoof);
        }
        request.send()
    };

    let alice = app.mint("alice");
    let response = get(Some(alice.clone()), Some("admin")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "subject=alice");
    // A token without `sub`: the client's value never passes.
    let claims = serde_json::json!({ "exp": now_unix() + 600, "jti": "caddy-no-sub" });
    let key = jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes());
    let no_sub = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let response = get(Some(no_sub), Some("admin")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "subject=");

    let response = get(None, None).await.unwrap();
    assert_eq!(response.status(), 401, "no token refused");
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="revokd""#
    );
    let verified = app.services.verifier.verify(&alice, now_unix()).unwrap();
    let job = Job::Revoke(RevokeToken::new(
        verified.token_id.clone(),
        verified.sub.clone(),
        verified.exp,
    ));
    app.services
        .applier()
        .apply(&job, now_unix())
        .await
        .unwrap();
    let response = get(Some(alice.clone()), None).await.unwrap();
    assert_eq!(response.status(), 401, "revoked token refused");
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        !response.text().await.unwrap().contains("subject="),
        "upstream not called"
    );

    // revokd down: closed, the upstream is never called.
    let carol = app.mint("carol");
    app.stop().await;
    let response = get(Some(carol), None).await.unwrap();
    assert_ne!(response.status(), 200, "fails closed");
    assert!(
        !response.text().await.unwrap().contains("subject="),
        "upstream not called"
    );
}

#[tokio::test]
async fn haproxy_lua_auth_request_passes_active_tokens_refuses_others_and_strips_spoofed_subjects()
{
    let Some(haproxy) = gateway_binary("haproxy") else {
        return;
    };
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (gateway, upstream) = (free_port(), free_port());
    let dir =
        std::env::temp_dir().join(format!("revokd-haproxy-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let lua = dir.join("revokd.lua");
    std::fs::write(&lua, include_str!("../../examples/haproxy/revokd.lua")).unwrap();
    let example = include_str!("../../examples/haproxy/haproxy.cfg")
        .replace("/etc/haproxy/revokd.lua", &lua.display().to_string())
        .replace("127.0.0.1:8080", &app.addr.to_string())
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{gateway}"));
    // The upstream shows what reached it.
    let config = format!(
        "{example}\nfrontend upstream\n    bind 127.0.0.1:{upstream}\n    \
         http-request return status 200 content-type text/plain lf-string \"subject=%[req.hdr(X-Auth-Subject)]\"\n"
    );
    std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
    let mut command = std::process::Command::new(haproxy);
    command.args(["-db", "-f"]).arg(dir.join("haproxy.cfg"));
    let _haproxy = Gateway::start(command, gateway).await;
    assert_gateway(app, gateway).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn envoy_http_ext_authz_passes_active_tokens_refuses_others_and_strips_spoofed_subjects() {
    envoy(include_str!("../../examples/envoy/envoy-http.yaml")).await;
}

#[tokio::test]
async fn envoy_grpc_ext_authz_passes_active_tokens_refuses_others_and_strips_spoofed_subjects() {
    envoy(include_str!("../../examples/envoy/envoy-grpc.yaml")).await;
}

/// Istio's sidecars have no filter that strips client-sent `X-Auth-*`
/// ahead of ext_authz (examples/istio/): revokd's answer alone replaces them.
#[tokio::test]
async fn envoy_grpc_ext_authz_strips_spoofed_subjects_without_a_stripping_filter_as_istio_runs_it()
{
    let example = include_str!("../../examples/envoy/envoy-grpc.yaml");
    let authz = "          - name: envoy.filters.http.ext_authz";
    let (head, rest) = example
        .split_once("          - name: envoy.filters.http.header_mutation")
        .unwrap();
    let (_, tail) = rest.split_once(authz).unwrap();
    envoy(&format!("{head}{authz}{tail}")).await;
}

/// Envoy on `example` (ports filled in) in front of [`echo_upstream`], with
/// revokd's HTTP API and gRPC ext_authz service.
async fn envoy(example: &str) {
    let Some(envoy) = gateway_binary("envoy") else {
        return;
    };
    let grpc = format!("127.0.0.1:{}", free_port());
    let app = TestApp::spawn_with(Options {
        worker: false,
        extra: &["--grpc-listen", &grpc],
        ..Default::default()
    })
    .await;
    let (gateway, upstream) = (free_port(), echo_upstream().await);
    let grpc_port = grpc.rsplit(':').next().unwrap();
    let config = example
        .replace("127.0.0.1:8080", &app.addr.to_string())
        .replace(
            "port_value: 8080",
            &format!("port_value: {}", app.addr.port()),
        )
        .replace("port_value: 9191", &format!("port_value: {grpc_port}"))
        .replace("port_value: 9000", &format!("port_value: {upstream}"))
        .replace("port_value: 8000", &format!("port_value: {gateway}"));
    let file = std::env::temp_dir().join(format!(
        "revokd-envoy-{}.yaml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, config).unwrap();
    let mut command = std::process::Command::new(envoy);
    command
        .arg("-c")
        .arg(&file)
        // Tests run several at once: no shared memory between them.
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "error",
        ]);
    let _envoy = Gateway::start(command, gateway).await;
    assert_gateway(app, gateway).await;
    let _ = std::fs::remove_file(&file);
}

/// An app that shows what reached it (`subject=` and every `X-Auth-Subject`
/// value); its port.
async fn echo_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let subjects: Vec<&str> = headers
            .get_all("x-auth-subject")
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        format!("subject={}", subjects.join(","))
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}
