//! The revocation load of the fault tests: lanes revoking fresh tokens
//! through a deployment's API processes in turn, at a steady pace, while
//! the test breaks things; and the audit's last step, every accepted token
//! refused by every API process.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{check_reason, mint};

/// A revocation answered 2xx.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub token: String,
    pub token_id: String,
    /// When the answer came.
    pub at: Instant,
    /// `"degraded": true`: recorded in Postgres while Redis took no write.
    pub degraded: bool,
}

/// What a load run was answered.
#[derive(Debug, Default)]
pub struct Tally {
    pub accepted: Vec<Accepted>,
    /// Answers other than 2xx: (status, or 0 when no answer came; when).
    pub refused: Vec<(u16, Instant)>,
}

impl Tally {
    pub fn tokens(&self) -> Vec<String> {
        self.accepted.iter().map(|a| a.token.clone()).collect()
    }

    pub fn ids(&self) -> Vec<String> {
        self.accepted.iter().map(|a| a.token_id.clone()).collect()
    }

    /// How long after `fault` revocations were queued in Redis again (not
    /// only recorded in Postgres): the first non-degraded answer after the
    /// last degraded one since `fault`. None when none came.
    pub fn writes_resumed(&self, fault: Instant) -> Option<Duration> {
        let after = self.accepted.iter().filter(|a| a.at > fault);
        let last_degraded = after.clone().filter(|a| a.degraded).map(|a| a.at).max();
        let last_degraded = last_degraded.unwrap_or(fault);
        after
            .filter(|a| !a.degraded && a.at > last_degraded)
            .map(|a| a.at - fault)
            .min()
    }

    /// The statuses refused, in order.
    pub fn refused_statuses(&self) -> Vec<u16> {
        self.refused.iter().map(|(status, _)| *status).collect()
    }
}

/// Lanes revoking fresh tokens (subject `{name}-{lane}-{n}`) through
/// `ports` in turn, one request per `pace` per lane, until [`Load::stop`].
pub struct Load {
    tally: Arc<Mutex<Tally>>,
    stop: CancellationToken,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(name: &str, ports: &[u16], lanes: usize, pace: Duration) -> Self {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = CancellationToken::new();
        let lanes = (0..lanes)
            .map(|lane| {
                let (tally, stop) = (Arc::clone(&tally), stop.clone());
                let (ports, name) = (ports.to_vec(), format!("{name}-{lane}"));
                tokio::spawn(lane_loop(name, ports, tally, stop, pace))
            })
            .collect();
        Self { tally, stop, lanes }
    }

    /// How many revocations were accepted so far.
    pub fn accepted(&self) -> usize {
        self.tally.lock().unwrap().accepted.len()
    }

    /// Stops every lane and returns what they were answered.
    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        for lane in self.lanes {
            lane.await.unwrap();
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

async fn lane_loop(
    name: String,
    ports: Vec<u16>,
    tally: Arc<Mutex<Tally>>,
    stop: CancellationToken,
    pace: Duration,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0usize;
    while !stop.is_cancelled() {
        n += 1;
        let port = ports[n % ports.len()];
        let token = mint(&format!("{name}-{n}"));
        let sent = http
            .post(format!("http://127.0.0.1:{port}/v1/revocations"))
            .bearer_auth("test-key")
            .json(&json!({ "token": token }))
            .send()
            .await;
        let answered = match sent {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await.unwrap();
                let id = body["token_id"].as_str().expect("a 2xx names its token_id");
                Ok((id.to_owned(), body["degraded"] == true))
            }
            Ok(response) => Err(response.status().as_u16()),
            Err(_) => Err(0),
        };
        let at = Instant::now();
        {
            let mut tally = tally.lock().unwrap();
            match answered {
                Ok((token_id, degraded)) => tally.accepted.push(Accepted {
                    token,
                    token_id,
                    at,
                    degraded,
                }),
                Err(status) => tally.refused.push((status, at)),
            }
        }
        // A steady trickle of revocations, not a flood: the pace is the point.
        tokio::time::sleep(pace).await;
    }
}

/// Waits until every token in `tokens` reads `revoked` through
/// `/v1/check` on every port in `ports` (at most 30 s); how long it took.
pub async fn enforced_everywhere(
    http: &reqwest::Client,
    ports: &[u16],
    tokens: &[String],
) -> Duration {
    let started = Instant::now();
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/v1/check");
        for token in tokens {
            loop {
                let reason = check_reason(http, &url, token).await;
                if reason == "revoked" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "an accepted revocation reads {reason:?} on port {port}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    started.elapsed()
}
