//! [`Node`]: another revokd process of a deployment, in the test process.

use std::net::SocketAddr;

use revokd::{
    app::{Api, Services},
    store::pg::Db,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    config::test_config,
    roles::{Roles, pending_loaded},
};

/// Another revokd process of the same deployment, in this test process: its
/// own services, breakers, replica and pending overlay, on a database and a
/// key prefix someone else owns.
pub struct Node {
    /// Where its API listens.
    pub addr: SocketAddr,
    /// Its services.
    pub services: Services,
    /// A client for its API.
    pub http: reqwest::Client,
    stop: CancellationToken,
    tasks: Roles,
}

/// The deployment a [`Node`] joins and the roles it runs.
pub struct NodeOptions<'a> {
    /// The deployment's key prefix.
    pub prefix: &'a str,
    /// Its Redis.
    pub redis_url: &'a str,
    /// Its database.
    pub db_url: &'a str,
    /// Run the worker and the resync too.
    pub worker: bool,
    /// Read from the replica (else `--read-mode redis`).
    pub replica: bool,
    /// More command-line options.
    pub extra: &'a [&'a str],
}

impl Node {
    /// Starts the node (write key `test-key`) and waits until it is ready.
    pub async fn start(options: NodeOptions<'_>) -> Self {
        let mut extra = vec!["--api-keys", "test:test-key"];
        if !options.replica {
            extra.extend(["--read-mode", "redis"]);
        }
        extra.extend_from_slice(options.extra);
        let config = test_config(options.prefix, options.redis_url, options.db_url, &extra);
        let db = Db::connect_lazy(options.db_url).expect("pool");
        let services = Services::with_db(config, db).expect("services");
        let stop = CancellationToken::new();
        let api = Api::bind(&services).await.expect("bind");
        let addr = api.local_addr().expect("addr");
        let checker = api.checker();
        let mut tasks = Roles::default();
        tasks.spawn("api", api.run(stop.clone()));
        pending_loaded(&checker).await;
        tasks.spawn_marker_guard(&services, &stop);
        if options.worker {
            tasks.spawn_worker(&services, &stop);
            let resync = services.resync(services.deny_patient.clone());
            tasks.spawn("resync", resync.run(stop.clone()));
        }
        if let Some(follower) = services.follower() {
            tasks.spawn("replica follower", follower.run(stop.clone()));
        }
        Self {
            addr,
            services,
            http: reqwest::Client::new(),
            stop,
            tasks,
        }
    }

    /// The URL of `path` on its API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `/v1/check`'s reason (`active` when active), or `unavailable`.
    pub async fn reason(&self, token: &str) -> String {
        check_reason(&self.http, &self.url("/v1/check"), token).await
    }

    /// `/readyz`'s body.
    pub async fn readyz(&self) -> Value {
        let response = self.http.get(self.url("/readyz")).send().await;
        match response {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// POSTs JSON with the write key: status and body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth("test-key")
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.abort();
    }
}

/// `/v1/check` at `url`: its reason, `active`, or `unavailable`.
pub async fn check_reason(http: &reqwest::Client, url: &str, token: &str) -> String {
    let Ok(response) = http
        .post(url)
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
    else {
        return "unreachable".into();
    };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match (&body["active"], &body["reason"]) {
        (Value::Bool(true), _) => "active".into(),
        (_, Value::String(reason)) => reason.clone(),
        _ => format!("unexpected {body}"),
    }
}
