//! nginx `auth_request` in front of a static upstream, using the example
//! configuration in examples/nginx/: an active token passes (and its subject
//! reaches the upstream), a revoked one is refused with 401.

use std::{path::Path, process::Stdio, time::Duration};

use revokd_jobs::{Job, RevokeToken, now_unix};

use crate::helpers::{Options, TestApp, eventually, free_port};

/// nginx started on a config of the test's own; stopped on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[tokio::test]
async fn nginx_auth_request_passes_active_tokens_and_refuses_revoked_ones() {
    let Some(nginx) = nginx_binary() else {
        // .ci/run installs nginx and sets REVOKD_REQUIRE_NGINX, so CI never skips.
        assert!(
            std::env::var_os("REVOKD_REQUIRE_NGINX").is_none(),
            "nginx is required but not installed"
        );
        eprintln!("skipped: nginx not installed (apt-get install nginx-light)");
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
    let base = format!("http://127.0.0.1:{gateway}/orders");
    eventually(Duration::from_secs(10), "nginx listening", || async {
        std::net::TcpStream::connect(("127.0.0.1", gateway)).is_ok()
    })
    .await;

    let token = app.mint("alice");
    let response = app
        .http
        .get(&base)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "subject=alice",
        "X-Auth-Subject reached the upstream"
    );

    let claims = app.services.verifier.verify(&token, now_unix()).unwrap();
    let job = Job::Revoke(RevokeToken::new(claims.token_id, claims.sub, claims.exp));
    app.services
        .applier()
        .apply(&job, now_unix())
        .await
        .unwrap();
    let response = app
        .http
        .get(&base)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "revoked token refused");

    assert_eq!(
        app.http.get(&base).send().await.unwrap().status(),
        401,
        "no token refused"
    );
    let spoofed = app
        .http
        .get(&base)
        .bearer_auth(app.mint("bob"))
        .header("X-Auth-Subject", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        spoofed.text().await.unwrap(),
        "subject=bob",
        "a client-sent subject is replaced"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
