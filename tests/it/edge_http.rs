//! The HTTP edge against slow and greedy clients, over raw TCP: header,
//! body and idle timeouts, the early 413, the connection cap, running out of
//! file descriptors, and the JSON shape of refusals made from the head.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{
    Options, SECRET, TestApp, eventually, free_port, healthy, own_deployment, redis_url, spool_dir,
};

async fn app(extra: &'static [&'static str]) -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        extra,
        ..Options::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.unwrap()
}

/// Reads until the peer closes (or resets); what it sent, and when it closed.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, Instant) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "connection still open after {within:?}");
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

/// Reads one response (status line, headers, a Content-Length body).
async fn read_response(stream: &mut TcpStream, within: Duration) -> Option<(u16, Value)> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = serde_json::from_slice(&got[end + 4..end + 4 + length])
                        .unwrap_or(Value::Null);
                    return Some((status, body));
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: revokd\r\n\r\n";

#[tokio::test]
async fn a_head_trickled_slower_than_the_header_timeout_is_cut() {
    let app = app(&["--header-timeout", "1s"]).await;
    let start = Instant::now();
    let mut silent = connect(&app).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let trickle = async {
        for i in 0.. {
            // A header line every 300 ms: the trickle is the point.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow
                .write_all(format!("X-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(4), trickle).await;
    let (answer, closed) = read_to_close(&mut slow, Duration::from_secs(1)).await;
    assert_eq!(answer, "", "no answer to a head never completed");
    assert!(closed - start < Duration::from_millis(3500));
    let (_, closed) = read_to_close(&mut silent, Duration::from_secs(1)).await;
    let after = closed - start;
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_trickled_slower_than_the_body_timeout_is_answered_408_and_closed() {
    let app = app(&["--body-timeout", "1s"]).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /v1/check HTTP/1.1\r\nHost: revokd\r\nContent-Length: 200\r\n\r\n{\"token\":",
        )
        .await
        .unwrap();
    let start = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            // A byte every 200 ms: the trickle is the point.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), read.read_to_end(&mut got)).await;
    trickle.abort();
    assert!(closed.is_ok(), "connection still open");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "timeout");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let app = app(&["--header-timeout", "1s", "--idle-timeout", "2s"]).await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTHZ).await.unwrap();
    let (status, _) = read_response(&mut stream, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(status, 200);
    // Idle longer than the header timeout (the wait is the point): still served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(HEALTHZ).await.unwrap();
    let (status, _) = read_response(&mut stream, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let idle_from = Instant::now();
    let (rest, closed) = read_to_close(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(rest, "");
    let idle = closed - idle_from;
    assert!(
        idle >= Duration::from_millis(1800) && idle < Duration::from_millis(3500),
        "closed after {idle:?} idle"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_answered_413_at_once() {
    let app = app(&[]).await;
    for path in ["/v1/revocations", "/v1/check", "/v1/auth", "/nowhere"] {
        let mut stream = connect(&app).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: revokd\r\nContent-Length: 99999999999999\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut stream, Duration::from_secs(1))
            .await
            .unwrap_or_else(|| panic!("no answer within 1 s on {path}"));
        assert_eq!(status, 413, "{path}");
        assert_eq!(body["error"], "payload_too_large");
        read_to_close(&mut stream, Duration::from_secs(1)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn beyond_the_connection_cap_a_new_client_waits_until_others_close() {
    let app = app(&["--max-connections", "20"]).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&app).await;
        stream.write_all(HEALTHZ).await.unwrap();
        let (status, _) = read_response(&mut stream, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(status, 200);
        held.push(stream);
    }
    let mut late = connect(&app).await;
    late.write_all(HEALTHZ).await.unwrap();
    assert!(
        read_response(&mut late, Duration::from_millis(1500))
            .await
            .is_none(),
        "a 21st connection was served"
    );
    held.truncate(10);
    let (status, _) = read_response(&mut late, Duration::from_secs(2))
        .await
        .expect("served once others closed");
    assert_eq!(status, 200);
    let fresh = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn refusals_made_from_the_head_have_the_json_shape() {
    let app = app(&[]).await;
    let long_uri = format!("/v1/auth?{}", "a".repeat(9 * 1024));
    let big_field = format!("X-Big: {}\r\n", "b".repeat(17 * 1024));
    let cases = [
        (
            format!("GET {long_uri} HTTP/1.1\r\nHost: revokd\r\n\r\n"),
            414,
            "uri_too_long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: revokd\r\n{big_field}\r\n"),
            431,
            "headers_too_large",
        ),
    ];
    for (request, expected, code) in cases {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut stream, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(status, expected);
        assert_eq!(body["error"], code);
        assert!(body["message"].is_string());
    }
    // Beyond hyper's own limit, and for a malformed head, hyper answers
    // itself with an empty body (README: "The HTTP edge").
    let huge_field = format!("X-Big: {}\r\n", "b".repeat(30 * 1024));
    let cases = [
        (
            format!("GET /healthz HTTP/1.1\r\nHost: revokd\r\n{huge_field}\r\n"),
            431,
        ),
        (
            "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(),
            400,
        ),
    ];
    for (request, expected) in cases {
        let mut stream = connect(&app).await;
        let _ = stream.write_all(request.as_bytes()).await;
        let (answer, _) = read_to_close(&mut stream, Duration::from_secs(2)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{answer}"
        );
    }
    app.stop().await;
}

/// Used CPU time (user + system) of a process, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn running_out_of_file_descriptors_neither_spins_nor_keeps_healthz_down() {
    let (db, prefix, _guard) = own_deployment().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let spool = spool_dir(&prefix);
    // 128 descriptors, far below the default cap of 10,000.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(
        std::process::Command::new("bash")
            .args(["-c", "ulimit -n 128 && exec \"$@\"", "revokd"])
            .arg(env!("CARGO_BIN_EXE_revokd"))
            .args(["--jwt-secret", SECRET, "--key-prefix", &prefix])
            .args(["--redis-url", &redis_url(), "--database-url", &db.url])
            .args(["--listen", &listen, "--spool-dir", spool.to_str().unwrap()])
            .args(["serve", "--roles", "api"])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let http = reqwest::Client::new();
    healthy(&http, port).await;
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(TcpStream::connect(&listen).await.unwrap());
    }
    // CPU spent over 2 s at the limit, once settled: the waits are the point.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_time(pid) - before;
    assert!(
        spent < Duration::from_millis(500),
        "{spent:?} of CPU in 2 s at EMFILE"
    );
    drop(held);
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(r) = http.get(format!("http://{listen}/healthz")).send().await {
                return r.status();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("/healthz answers once the crowd leaves");
    assert_eq!(answer, 200);
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "server still running"
    );
    drop(child);
}

#[tokio::test]
async fn on_shutdown_a_request_in_flight_is_answered_idle_connections_close_and_accept_stops() {
    let app = app(&[]).await;
    let mut idle = connect(&app).await;
    idle.write_all(HEALTHZ).await.unwrap();
    assert_eq!(
        read_response(&mut idle, Duration::from_secs(2))
            .await
            .unwrap()
            .0,
        200
    );
    let body = br#"{"token":"not-a-jwt"}"#;
    let mut busy = connect(&app).await;
    let head = format!(
        "POST /v1/check HTTP/1.1\r\nHost: revokd\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    busy.write_all(head.as_bytes()).await.unwrap();
    // The server reads the head before shutdown fires (nothing to observe:
    // the wait is the point).
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.shutdown.cancel();
    read_to_close(&mut idle, Duration::from_secs(2)).await;
    eventually(Duration::from_secs(2), "accept stopped", || async {
        TcpStream::connect(app.addr).await.is_err()
    })
    .await;
    busy.write_all(body).await.unwrap();
    let (status, answer) = read_response(&mut busy, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["reason"], "malformed");
    read_to_close(&mut busy, Duration::from_secs(2)).await;
    app.stop().await;
}
