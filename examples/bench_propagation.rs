//! Revocation propagation through a running revokd, end to end over HTTP:
//! from just before `POST /v1/revocations` (no `?wait`) to the first
//! `GET /v1/auth` that answers `401` for the revoked token.
//!
//! Each probe mints a fresh token (`revokd::token::Minter`, the same key as
//! the server), checks that `GET /v1/auth` answers `200` for it (not
//! measured), starts the clock, posts `{"token": T}` with the write-API key
//! (must answer `202`), then sends `GET /v1/auth` back to back on a kept-alive
//! connection until one answers `401`. Probes are sequential: one revocation
//! in flight at a time. The path measured is the whole pipeline: the API
//! verifies the token and pushes a job, a worker picks it up and writes Redis
//! (which appends the event) and Postgres, and the API's check sees it — in
//! read mode `replica` once the replica's follower has read the event, in
//! read mode `redis` as soon as the key is written.
//!
//! It starts and stops nothing, and creates nothing but the revocations it
//! posts; `bench/run.sh` runs it against its own processes, once idle and once
//! while `wrk` loads `GET /v1/auth`.
//!
//! ```text
//! BENCH_URL=http://127.0.0.1:8080 BENCH_API_KEY=app-key JWT_SECRET=quick-start-secret-change-me-0123456789 \
//!     cargo run --release --features bench --example bench_propagation
//! ```
//!
//! Environment: `BENCH_URL` (default `http://127.0.0.1:8080`),
//! `BENCH_CHECK_URL` (another API process to send the `GET`s to, so that
//! the revocation is measured reaching a process that did not accept it;
//! default `BENCH_URL`),
//! `BENCH_API_KEY` (the key part of one `REVOKD_API_KEYS` entry; required),
//! `BENCH_N` (probes measured, default 500), `BENCH_WARMUP` (probes before,
//! not counted, default 20), `BENCH_TIMEOUT_MS` (a probe not seen revoked
//! within this long counts as timed out, default 5000), `BENCH_LABEL` (echoed
//! in the result line), `BENCH_SAMPLES` (a file to write every measured probe
//! to, one tab-separated line each: `job_id token_id start_unix_us post_us
//! revoked_us polls`, so that `bench/propagation_stages.py` can join them with
//! the servers' `revokd::propagation` log lines); the key as for `revokd mint`: `JWT_SECRET`, or
//! `JWT_ALGORITHM` with `JWT_PUBLIC_KEY_FILE` and `JWT_PRIVATE_KEY_FILE`.
//!
//! Output: one line on stdout,
//! `propagation label=L n=N timeouts=T p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. post_p50_ms=.. post_p99_ms=.. polls_p50=..`,
//! and a readable summary on stderr.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Client, StatusCode, header::AUTHORIZATION};
use revokd::token::{KeySettings, Minter};
use revokd_jobs::now_unix;

struct Settings {
    url: String,
    check_url: String,
    api_key: String,
    n: usize,
    warmup: usize,
    timeout: Duration,
    label: String,
    keys: KeySettings,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let number = |name: &str, default: usize| -> anyhow::Result<usize> {
            env(name).map_or(Ok(default), |v| {
                v.parse().with_context(|| format!("{name} must be a count"))
            })
        };
        Ok(Self {
            url: env("BENCH_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            check_url: env("BENCH_CHECK_URL")
                .or_else(|| env("BENCH_URL"))
                .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            api_key: env("BENCH_API_KEY").context("BENCH_API_KEY is required")?,
            n: number("BENCH_N", 500)?,
            warmup: number("BENCH_WARMUP", 20)?,
            timeout: Duration::from_millis(
                u64::try_from(number("BENCH_TIMEOUT_MS", 5000)?)
                    .context("BENCH_TIMEOUT_MS too large")?,
            ),
            label: env("BENCH_LABEL").unwrap_or_else(|| "run".to_owned()),
            keys: KeySettings {
                secret: env("JWT_SECRET"),
                public_key_file: env("JWT_PUBLIC_KEY_FILE").map(Into::into),
                private_key_file: env("JWT_PRIVATE_KEY_FILE").map(Into::into),
                algorithm: env("JWT_ALGORITHM"),
                issuer: env("JWT_ISSUER"),
                audience: env("JWT_AUDIENCE"),
                leeway_secs: 30,
                ..KeySettings::default()
            },
        })
    }
}

/// One probe's measurements.
struct Probe {
    /// The job and the token id the POST answered with.
    job_id: String,
    token_id: String,
    /// The clock's start on the wall clock, in µs since the epoch.
    start_unix_us: u128,
    /// Clock start to the first 401.
    revoked: Duration,
    /// How long the POST itself took.
    post: Duration,
    /// GETs sent after the POST returned, the 401 included.
    polls: usize,
}

struct Bench {
    client: Client,
    auth_url: String,
    revoke_url: String,
    api_key: String,
    minter: Minter,
    timeout: Duration,
}

impl Bench {
    async fn auth_status(&self, token: &str) -> anyhow::Result<StatusCode> {
        let response = self
            .client
            .get(&self.auth_url)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .context("GET /v1/auth")?;
        let status = response.status();
        // Read the (tiny) body so the connection goes back to the pool.
        response.bytes().await.context("GET /v1/auth body")?;
        Ok(status)
    }

    /// `Ok(None)` when the token was still active after the timeout.
    async fn probe(&self, seq: usize) -> anyhow::Result<Option<Probe>> {
        let subject = format!("bench-prop-{seq}");
        let token = self
            .minter
            .mint(&subject, 3600, true, now_unix())
            .context("mint a probe token")?;
        let before = self.auth_status(&token).await?;
        if before != StatusCode::OK {
            bail!("a fresh token got {before} from GET /v1/auth (expected 200)");
        }
        let start_unix_us = wall_clock_us();
        let started = Instant::now();
        let response = self
            .client
            .post(&self.revoke_url)
            .header(AUTHORIZATION, format!("Bearer {}", self.api_key))
            .json(&serde_json::json!({ "token": token, "reason": "bench" }))
            .send()
            .await
            .context("POST /v1/revocations")?;
        let status = response.status();
        let body = response.text().await.context("POST body")?;
        let post = started.elapsed();
        if status != StatusCode::ACCEPTED {
            bail!("POST /v1/revocations answered {status}: {body}");
        }
        let answer: serde_json::Value = serde_json::from_str(&body).context("POST body")?;
        let field = |name: &str| answer[name].as_str().unwrap_or_default().to_owned();
        let (job_id, token_id) = (field("job_id"), field("token_id"));
        let mut polls = 0;
        loop {
            polls += 1;
            match self.auth_status(&token).await? {
                StatusCode::UNAUTHORIZED => {
                    return Ok(Some(Probe {
                        job_id,
                        token_id,
                        start_unix_us,
                        revoked: started.elapsed(),
                        post,
                        polls,
                    }));
                }
                StatusCode::OK => {}
                other => bail!("GET /v1/auth answered {other} while waiting for the revocation"),
            }
            if started.elapsed() > self.timeout {
                return Ok(None);
            }
        }
    }
}

/// Microseconds since the epoch, to line probes up with the servers' logs.
#[allow(clippy::disallowed_methods)]
fn wall_clock_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
}

/// Writes every probe to `path` (see `BENCH_SAMPLES`).
fn write_samples(path: &str, probes: &[Probe]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    for p in probes {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            p.job_id,
            p.token_id,
            p.start_unix_us,
            p.post.as_micros(),
            p.revoked.as_micros(),
            p.polls
        );
    }
    std::fs::write(path, out).with_context(|| format!("writing {path}"))
}

/// Nearest-rank percentile of sorted samples.
fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let minter = Minter::new(&settings.keys).context("signing key (as for `revokd mint`)")?;
    let client = Client::builder()
        .pool_max_idle_per_host(4)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let bench = Bench {
        client,
        auth_url: format!("{}/v1/auth", settings.check_url),
        revoke_url: format!("{}/v1/revocations", settings.url),
        api_key: settings.api_key.clone(),
        minter,
        timeout: settings.timeout,
    };
    eprintln!(
        "propagation [{}]: {} warm-up + {} probes against {}",
        settings.label, settings.warmup, settings.n, settings.url
    );
    for seq in 0..settings.warmup {
        if bench.probe(seq).await?.is_none() {
            bail!(
                "warm-up revocation not seen within {:?}: is a worker running?",
                settings.timeout
            );
        }
    }
    let mut probes = Vec::with_capacity(settings.n);
    let mut timeouts = 0usize;
    for seq in settings.warmup..settings.warmup + settings.n {
        match bench.probe(seq).await? {
            Some(probe) => probes.push(probe),
            None => timeouts += 1,
        }
    }
    if let Some(path) = env("BENCH_SAMPLES") {
        write_samples(&path, &probes)?;
    }
    let mut revoked: Vec<Duration> = probes.iter().map(|p| p.revoked).collect();
    let mut post: Vec<Duration> = probes.iter().map(|p| p.post).collect();
    let mut polls: Vec<usize> = probes.iter().map(|p| p.polls).collect();
    revoked.sort_unstable();
    post.sort_unstable();
    polls.sort_unstable();
    eprintln!(
        "propagation [{}]: n={} timeouts={} p50={} ms p90={} ms p99={} ms max={} ms \
         (POST alone p50={} ms p99={} ms; GETs per probe p50={})",
        settings.label,
        revoked.len(),
        timeouts,
        ms(percentile(&revoked, 50.0)),
        ms(percentile(&revoked, 90.0)),
        ms(percentile(&revoked, 99.0)),
        ms(percentile(&revoked, 100.0)),
        ms(percentile(&post, 50.0)),
        ms(percentile(&post, 99.0)),
        percentile(&polls, 50.0),
    );
    println!(
        "propagation label={} n={} timeouts={} p50_ms={} p90_ms={} p99_ms={} max_ms={} \
         post_p50_ms={} post_p99_ms={} polls_p50={}",
        settings.label,
        revoked.len(),
        timeouts,
        ms(percentile(&revoked, 50.0)),
        ms(percentile(&revoked, 90.0)),
        ms(percentile(&revoked, 99.0)),
        ms(percentile(&revoked, 100.0)),
        ms(percentile(&post, 50.0)),
        ms(percentile(&post, 99.0)),
        percentile(&polls, 50.0),
    );
    Ok(())
}
