//! [`TestApp`]'s endpoint helpers: minting, `/v1/check`, posting JSON, and
//! waiting for a reason or a row.

use std::time::{Duration, Instant};

use revokd::token::Minter;
use revokd_jobs::{Producer, now_unix};
use serde_json::Value;

use crate::app::TestApp;

impl TestApp {
    /// The URL of `path` on its API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A token for `sub`, valid for 15 minutes.
    pub fn mint(&self, sub: &str) -> String {
        self.mint_with(sub, 900, true)
    }

    /// A token for `sub` valid `ttl` seconds, with a `jti` or without.
    pub fn mint_with(&self, sub: &str, ttl: i64, jti: bool) -> String {
        Minter::new(&self.services.config.key_settings())
            .expect("minter")
            .mint(sub, ttl, jti, now_unix())
            .expect("mint")
    }

    /// A token for `sub` issued `ago` seconds ago (so a revoke-all made now
    /// is later than its `iat`, without waiting for the clock).
    pub fn mint_issued_ago(&self, sub: &str, ago: i64) -> String {
        crate::mint::mint_issued_ago(sub, ago)
    }

    /// A producer on its queue.
    pub async fn producer(&self) -> Producer {
        Producer::connect(&self.services.config.redis_url, &self.prefix, "test")
            .await
            .expect("producer")
    }

    /// The token's id, as revokd computes it (the signature checked).
    pub fn token_id(&self, token: &str) -> String {
        self.services
            .verifier
            .verify_signature(token)
            .expect("a token of this app")
            .token_id
    }

    /// `/v1/check` with the refresh-token hint: the body.
    pub async fn check_refresh(&self, token: &str) -> Value {
        let body = serde_json::json!({ "token": token, "token_type_hint": "refresh_token" });
        let response = self.http.post(self.url("/v1/check")).json(&body).send();
        response
            .await
            .expect("request")
            .json()
            .await
            .expect("json body")
    }

    /// `/v1/check`: the status and the body.
    pub async fn check(&self, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/v1/check"))
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// Polls /v1/check until it reports `reason` or the deadline passes.
    pub async fn wait_for_reason(&self, token: &str, reason: &str, deadline: Duration) {
        let started = Instant::now();
        loop {
            let (_, body) = self.check(token).await;
            if body["reason"] == reason {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "no {reason:?} within {deadline:?}; last answer {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `/metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await;
        response.expect("request").text().await.expect("body")
    }

    /// `GET /v1/stats` with the write key `key`: the stats document.
    pub async fn stats(&self, key: &str) -> Value {
        let response = self.http.get(self.url("/v1/stats")).bearer_auth(key);
        let response = response.send().await.expect("request");
        response.json().await.expect("JSON")
    }

    /// POSTs JSON with a bearer key; the status and the body (JSON, or the
    /// text as a JSON string, or null when empty).
    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.post_body(path, key, "application/json", bytes).await
    }

    /// POSTs `body` as `content_type` with a bearer key; the status and the
    /// body as [`TestApp::post_json`] gives them.
    pub async fn post_body(
        &self,
        path: &str,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = match text.as_str() {
            "" => Value::Null,
            t => serde_json::from_str(t).unwrap_or(Value::String(text)),
        };
        (status, value)
    }

    /// Waits (up to 15 s) until `token_id` is recorded in Postgres; the row.
    pub async fn wait_for_row(&self, token_id: &str) -> revokd::store::pg::RevokedRow {
        let started = Instant::now();
        loop {
            if let Some(row) = self.db.db.revoked_token(token_id).await.expect("postgres") {
                return row;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{token_id} not in postgres within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connection to its Redis.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.services.config.redis_url.as_str())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(1))
            .expect("redis connection")
    }
}
