//! [`RemoteKeys`]: an issuer's keys, fetched from its JWKS endpoint (named
//! by `JWT_JWKS_URL`, or found by OIDC discovery from `JWT_OIDC_ISSUER`) and
//! kept current.
//!
//! - A background task refreshes the set every Cache-Control `max-age`
//!   (else 5 min), bounded to [`MIN_REFRESH`, `MAX_REFRESH`]; after a failed
//!   fetch it retries with backoff up to [`RETRY_CAP`], keeping the last
//!   good set meanwhile.
//! - A token whose `kid` is not in the set makes the set fetched again at
//!   once ([`RemoteKeys::catch_up`]), at most once per [`KID_FETCH_EVERY`]:
//!   concurrent misses wait for the same fetch, and a miss inside the window
//!   is answered with the set as it is while one more fetch is made when the
//!   window ends — so a flood of made-up `kid`s costs the issuer one request
//!   per window, and a key published during a flood is still picked up.
//! - Until a first set loads, the issuer has no keys: its tokens are
//!   answered "unavailable" and `/readyz` is 503.
//! - Every change of the set is logged with the `kid`s added and removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use reqwest::header::{CACHE_CONTROL, HeaderMap};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::keys::KeyRing;
use crate::instruments;

/// Refresh period when the issuer sends no `max-age`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Shortest refresh period, whatever `max-age` says.
pub const MIN_REFRESH: Duration = Duration::from_secs(30);
/// Longest refresh period: a key the issuer removed stops verifying within
/// this long, whatever `max-age` says.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// At most one fetch per this long is made for unknown `kid`s.
pub const KID_FETCH_EVERY: Duration = Duration::from_secs(10);
/// Longest wait between attempts while the issuer does not answer.
pub const RETRY_CAP: Duration = Duration::from_secs(10);
/// Largest discovery document or key set read.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request waits for the fetch its unknown `kid` started.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// Redirects followed by one fetch.
const MAX_REDIRECTS: usize = 3;

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// OIDC discovery (then RFC 8414) from this issuer; its `jwks_uri`.
    Discovery(String),
    /// A JWKS URL.
    Jwks(String),
}

/// One issuer's fetched keys and the state of their refresh.
pub(super) struct RemoteKeys {
    /// The issuer (or the JWKS URL when no issuer is pinned): logs and the
    /// `issuer` label of metrics.
    label: String,
    endpoint: Endpoint,
    algorithm: Option<Algorithm>,
    allowed: Option<Vec<Algorithm>>,
    client: reqwest::Client,
    ring: ArcSwapOption<KeyRing>,
    /// Bumped each time a fetched set is stored.
    version: AtomicU64,
    /// Unix ms of the last successful fetch; 0 before the first.
    fetched_at_ms: AtomicI64,
    flight: tokio::sync::Mutex<Flight>,
    /// The fetches made for unknown `kid`s (held only between awaits).
    kid: std::sync::Mutex<KidFetches>,
    /// Told when a fetch for an unknown `kid` ends.
    kid_done: Notify,
    /// Wakes the refresh task for a fetch owed to an unknown `kid`, and
    /// when the keys are dropped.
    wake: Arc<Notify>,
}

/// What one fetch at a time reads and writes.
#[derive(Default)]
struct Flight {
    /// The `jwks_uri` discovery found; found again after a failed fetch.
    jwks_url: Option<String>,
}

/// The rate limit of fetches for unknown `kid`s.
#[derive(Default)]
struct KidFetches {
    /// When the last one started.
    last: Option<Instant>,
    /// One is running (its callers wait for it, none starts another).
    running: bool,
    /// An unknown `kid` arrived inside the window: fetch when it ends.
    owed: bool,
}

impl KidFetches {
    /// Whether a fetch started at `now` would be inside the window of the
    /// last one.
    fn inside_window(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|at| now.duration_since(at) < KID_FETCH_EVERY)
    }

    /// When the window of the last fetch ends.
    fn window_end(&self) -> Option<Instant> {
        self.last.map(|at| at + KID_FETCH_EVERY)
    }
}

impl Drop for RemoteKeys {
    fn drop(&mut self) {
        // The refresh task holds a weak reference: let it see it is gone.
        self.wake.notify_one();
    }
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("label", &self.label)
            .field("endpoint", &self.endpoint)
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

/// Why a fetch failed (no key material in it).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed or timed out, or the answer was not 2xx.
    #[error("{url}: {reason}")]
    Http {
        /// What was requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer is not what it should be.
    #[error("{url}: {reason}")]
    Document {
        /// What was requested.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl RemoteKeys {
    /// Keys of `endpoint`, not fetched yet: call [`spawn_refresh`] (or
    /// [`refresh`](Self::refresh)) to load them.
    pub(super) fn new(
        label: String,
        endpoint: Endpoint,
        algorithm: Option<Algorithm>,
        allowed: Option<Vec<Algorithm>>,
    ) -> Self {
        Self {
            label,
            endpoint,
            algorithm,
            allowed,
            client: http_client(),
            ring: ArcSwapOption::empty(),
            version: AtomicU64::new(0),
            fetched_at_ms: AtomicI64::new(0),
            flight: tokio::sync::Mutex::new(Flight::default()),
            kid: std::sync::Mutex::new(KidFetches::default()),
            kid_done: Notify::new(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The issuer (or URL) these keys are for.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// The current key set, `None` before the first load.
    pub(super) fn ring(&self) -> arc_swap::Guard<Option<Arc<KeyRing>>> {
        self.ring.load()
    }

    /// Whether a key set has loaded.
    pub(super) fn is_loaded(&self) -> bool {
        self.ring.load().is_some()
    }

    /// Seconds since the last successful fetch as of `now_ms`; `None`
    /// before the first.
    pub(super) fn age_secs(&self, now_ms: i64) -> Option<f64> {
        let at = self.fetched_at_ms.load(Ordering::Relaxed);
        (at > 0).then(|| (now_ms.saturating_sub(at)).max(0) as f64 / 1000.0)
    }

    /// Keys in the current set.
    pub(super) fn key_count(&self) -> usize {
        self.ring.load().as_ref().map_or(0, |ring| ring.keys.len())
    }

    /// A token named a `kid` the set does not hold: fetches the set again
    /// unless one was started for this reason less than [`KID_FETCH_EVERY`]
    /// ago (then one more is made when that window ends, and the caller
    /// returns at once). Concurrent callers share one fetch: at most one
    /// runs, in a task of its own, and a caller waits for it at most
    /// [`CATCH_UP_WAIT`] (an issuer that does not answer must not hold
    /// requests for the whole fetch timeout). The caller then verifies
    /// again with the set as it is.
    pub(super) async fn catch_up(self: &Arc<Self>) {
        // Registered before the state is read, so the end of a fetch that
        // is running now is not missed.
        let done = self.kid_done.notified();
        let start = {
            let mut kid = lock(&self.kid);
            let now = Instant::now();
            if kid.running {
                false
            } else if kid.inside_window(now) {
                if !kid.owed {
                    kid.owed = true;
                    self.wake.notify_one();
                }
                return;
            } else {
                kid.running = true;
                kid.owed = false;
                kid.last = Some(now);
                true
            }
        };
        if start {
            let keys = Arc::clone(self);
            tokio::spawn(async move { keys.kid_fetch().await });
        }
        let _ = tokio::time::timeout(CATCH_UP_WAIT, done).await;
    }

    /// A fetch for unknown `kid`s, claimed by the caller (`running` set).
    async fn kid_fetch(&self) {
        {
            let mut flight = self.flight.lock().await;
            let _ = self.fetch(&mut flight, "unknown_kid").await;
        }
        lock(&self.kid).running = false;
        self.kid_done.notify_waiters();
    }

    /// Fetches the set now (one fetch at a time); the `max-age` it came
    /// with.
    pub(super) async fn refresh(&self) -> Result<Option<Duration>, FetchError> {
        let mut flight = self.flight.lock().await;
        self.fetch(&mut flight, "periodic").await
    }

    /// Starts the task that keeps the set current. It holds only a weak
    /// reference, and ends once the keys are dropped.
    pub(super) fn spawn_refresh(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wake = Arc::clone(&self.wake);
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let Some(keys) = weak.upgrade() else { return };
                let next = match keys.refresh().await {
                    Ok(max_age) => {
                        failures = 0;
                        max_age
                            .unwrap_or(DEFAULT_REFRESH)
                            .clamp(MIN_REFRESH, MAX_REFRESH)
                    }
                    Err(_) => {
                        failures = failures.saturating_add(1);
                        retry_delay(failures)
                    }
                };
                drop(keys);
                let deadline = Instant::now() + next;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => break,
                        () = wake.notified() => {
                            let Some(keys) = weak.upgrade() else { return };
                            keys.owed_kid_fetch().await;
                        }
                    }
                }
            }
        });
    }

    /// The fetch owed to unknown `kid`s refused inside a window: made when
    /// the window ends (a fetch started meanwhile opens a new window).
    async fn owed_kid_fetch(&self) {
        loop {
            let due = {
                let mut kid = lock(&self.kid);
                if !kid.owed {
                    return;
                }
                let now = Instant::now();
                if !kid.running && !kid.inside_window(now) {
                    kid.owed = false;
                    kid.running = true;
                    kid.last = Some(now);
                    None
                } else {
                    // Running: its window ends KID_FETCH_EVERY after it began.
                    Some(kid.window_end().unwrap_or(now))
                }
            };
            match due {
                None => return self.kid_fetch().await,
                Some(due) => {
                    tokio::time::sleep_until(due.max(Instant::now() + Duration::from_millis(10)))
                        .await
                }
            }
        }
    }

    /// One fetch (discovery first when needed), stored on success; logged
    /// and counted either way.
    async fn fetch(
        &self,
        flight: &mut Flight,
        cause: &'static str,
    ) -> Result<Option<Duration>, FetchError> {
        match self.fetch_set(flight).await {
            Ok((ring, max_age)) => {
                self.store(ring);
                instruments::jwks_refresh(&self.label, "ok");
                Ok(max_age)
            }
            Err(error) => {
                // The discovered URL may have moved: discover again next time.
                flight.jwks_url = None;
                instruments::jwks_refresh(&self.label, "error");
                if self.is_loaded() {
                    tracing::warn!(issuer = %self.label, cause, %error, "issuer keys not refreshed; the last good set stays in use");
                } else {
                    tracing::warn!(issuer = %self.label, cause, %error, "issuer keys not loaded yet; its tokens are answered unavailable");
                }
                Err(error)
            }
        }
    }

    async fn fetch_set(
        &self,
        flight: &mut Flight,
    ) -> Result<(KeyRing, Option<Duration>), FetchError> {
        let url = match (&self.endpoint, &flight.jwks_url) {
            (Endpoint::Jwks(url), _) | (Endpoint::Discovery(_), Some(url)) => url.clone(),
            (Endpoint::Discovery(issuer), None) => {
                let url = discover(&self.client, issuer).await?;
                flight.jwks_url = Some(url.clone());
                url
            }
        };
        let (body, headers) = get(&self.client, &url).await?;
        let ring = KeyRing::from_fetched(&body, self.algorithm, self.allowed.as_deref()).map_err(
            |reason| FetchError::Document {
                url: url.clone(),
                reason,
            },
        )?;
        Ok((ring, max_age(&headers)))
    }

    /// Makes `ring` the current set, keeping the serial numbers of the keys
    /// that did not change, and logs what changed.
    fn store(&self, mut ring: KeyRing) {
        let previous = self.ring.load_full();
        let (added, removed): (Vec<&str>, Vec<&str>) = match &previous {
            Some(old) => {
                ring.keep_serials(old);
                let added = ring
                    .keys
                    .iter()
                    .filter(|k| !old.holds(k.serial))
                    .map(|k| k.kid.as_deref().unwrap_or("-"))
                    .collect();
                let removed = old
                    .keys
                    .iter()
                    .filter(|k| !ring.holds(k.serial))
                    .map(|k| k.kid.as_deref().unwrap_or("-"))
                    .collect();
                (added, removed)
            }
            None => (ring.kids(), Vec::new()),
        };
        if previous.is_none() {
            tracing::info!(issuer = %self.label, kids = ?added, "issuer keys loaded");
        } else if !added.is_empty() || !removed.is_empty() {
            tracing::info!(issuer = %self.label, added = ?added, removed = ?removed, "issuer keys rotated");
        }
        let changed = previous.is_none() || !added.is_empty() || !removed.is_empty();
        self.fetched_at_ms
            .store(revokd_jobs::now_unix_ms(), Ordering::Relaxed);
        if changed {
            self.ring.store(Some(Arc::new(ring)));
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The lock of plain state, never held across an await; a panic while it
/// was held leaves nothing half-written worth refusing.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Backoff after `failures` failed fetches in a row: 1 s, 2 s, 4 s, ...
/// up to [`RETRY_CAP`].
fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(RETRY_CAP)
}

/// The HTTP client of every key fetch: rustls (aws-lc-rs) with the
/// platform's roots, bounded time, few redirects.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT / 2)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            // Bounded, and never from https down to plain http.
            let downgrade = attempt.url().scheme() == "http"
                && attempt
                    .previous()
                    .iter()
                    .any(|url| url.scheme() == "https");
            if downgrade {
                attempt.error("redirect from https to http refused")
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
        .user_agent(concat!("revokd/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|error| {
            tracing::error!(%error, "cannot build the TLS client for issuer keys; using plain defaults");
            reqwest::Client::new()
        })
}

/// GET `url`: a 2xx body of at most [`MAX_DOCUMENT_BYTES`], and its headers.
async fn get(client: &reqwest::Client, url: &str) -> Result<(Vec<u8>, HeaderMap), FetchError> {
    let http = |reason: String| FetchError::Http {
        url: url.to_owned(),
        reason,
    };
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| http(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(http(format!("answered {status}")));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(http(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
    }
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| http(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(http(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, headers))
}

/// The `jwks_uri` of `issuer`: OpenID Connect Discovery
/// (`{issuer}/.well-known/openid-configuration`), else RFC 8414
/// (`/.well-known/oauth-authorization-server` inserted before the issuer's
/// path). The document must name `issuer` exactly.
async fn discover(client: &reqwest::Client, issuer: &str) -> Result<String, FetchError> {
    let mut last = None;
    for url in discovery_urls(issuer) {
        match get(client, &url).await {
            Ok((body, _)) => return jwks_uri(&url, &body, issuer),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| FetchError::Document {
        url: issuer.to_owned(),
        reason: "not an http(s) URL".to_owned(),
    }))
}

/// Where the discovery document of `issuer` may be, in the order tried.
pub fn discovery_urls(issuer: &str) -> Vec<String> {
    let base = issuer.trim_end_matches('/');
    let oidc = format!("{base}/.well-known/openid-configuration");
    // RFC 8414 3: the well-known segment goes between host and path.
    let Some(after_scheme) = base.find("://").map(|i| i + 3) else {
        return vec![oidc];
    };
    let rfc8414 = match base[after_scheme..].find('/') {
        Some(slash) => {
            let (origin, path) = base.split_at(after_scheme + slash);
            format!("{origin}/.well-known/oauth-authorization-server{path}")
        }
        None => format!("{base}/.well-known/oauth-authorization-server"),
    };
    vec![oidc, rfc8414]
}

/// The `jwks_uri` of a discovery document fetched from `url`, which must
/// name `issuer` as its `issuer`.
fn jwks_uri(url: &str, body: &[u8], issuer: &str) -> Result<String, FetchError> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: Option<String>,
        jwks_uri: Option<String>,
    }
    let bad = |reason: String| FetchError::Document {
        url: url.to_owned(),
        reason,
    };
    let doc: Discovery = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not a discovery document ({:?} error)",
            e.classify()
        ))
    })?;
    match doc.issuer.as_deref() {
        Some(named) if named == issuer => {}
        Some(named) => {
            return Err(bad(format!(
                "the document names issuer {named:?}, not {issuer:?}; set the issuer to \
                 exactly the value tokens carry in `iss`"
            )));
        }
        None => return Err(bad("the document names no issuer".to_owned())),
    }
    let jwks = doc
        .jwks_uri
        .ok_or_else(|| bad("the document has no jwks_uri".to_owned()))?;
    if !(jwks.starts_with("https://") || jwks.starts_with("http://")) {
        return Err(bad("jwks_uri is not an http(s) URL".to_owned()));
    }
    if issuer.starts_with("https://") && !jwks.starts_with("https://") {
        return Err(bad(
            "jwks_uri is plain http while the issuer is https".to_owned()
        ));
    }
    Ok(jwks)
}

/// `max-age` of a `Cache-Control` header, unless `no-cache`/`no-store`
/// ask for none (then `Some(0)`: the minimum period applies).
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                found = secs
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_follow_oidc_then_rfc_8414() {
        assert_eq!(
            discovery_urls("https://idp.example.com/realms/main/"),
            [
                "https://idp.example.com/realms/main/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/realms/main",
            ]
        );
        assert_eq!(
            discovery_urls("https://tenant.auth0.com/"),
            [
                "https://tenant.auth0.com/.well-known/openid-configuration",
                "https://tenant.auth0.com/.well-known/oauth-authorization-server",
            ]
        );
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut headers = HeaderMap::new();
        assert_eq!(max_age(&headers), None);
        headers.insert(CACHE_CONTROL, "public, max-age=600".parse().unwrap());
        assert_eq!(max_age(&headers), Some(Duration::from_secs(600)));
        headers.insert(CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&headers), Some(Duration::ZERO));
    }

    #[test]
    fn retries_back_off_to_the_cap() {
        let delays: Vec<u64> = (1..=6).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn discovery_must_name_the_issuer_and_a_jwks_uri() {
        let doc = br#"{"issuer":"https://a.example","jwks_uri":"https://a.example/keys"}"#;
        assert_eq!(
            jwks_uri("u", doc, "https://a.example").unwrap(),
            "https://a.example/keys"
        );
        let error = jwks_uri("u", doc, "https://a.example/").unwrap_err();
        assert!(error.to_string().contains("names issuer"), "{error}");
        let no_keys = br#"{"issuer":"https://a.example"}"#;
        assert!(jwks_uri("u", no_keys, "https://a.example").is_err());
        let bad_scheme = br#"{"issuer":"https://a.example","jwks_uri":"file:///etc/passwd"}"#;
        assert!(jwks_uri("u", bad_scheme, "https://a.example").is_err());
        let downgrade = br#"{"issuer":"https://a.example","jwks_uri":"http://a.example/keys"}"#;
        assert!(jwks_uri("u", downgrade, "https://a.example").is_err());
    }
}
