//! [`PgTarget`]: which host of a multi-host `DATABASE_URL` (see
//! [`hosts`](super::hosts)) the pool connects to — the first, in the URL's
//! order, that has the `target_session_attrs` (read-write unless told) —
//! followed across a failover without a restart. The shape is
//! `revokd_jobs::RedisTarget`'s.
//!
//! - The hosts are probed (a fresh connection each, then
//!   `transaction_read_only` or `pg_is_in_recovery()`) at start, when the
//!   check of the current host every [`CHECK_EVERY`] fails (on one
//!   connection the watch keeps there, beside the pool),
//!   every [`PROBE_WHILE_NONE`] while none qualifies, and at once after an
//!   error that says the server is gone or read-only ([`server_moved`]:
//!   connection errors, SQLSTATE 25006, class 08, 57P0x) — one probe at a
//!   time, at most every 100 ms for errors. The current host is kept
//!   while it qualifies; when another is chosen, `set_connect_options`
//!   points the pool's next connections at it and the generation goes up.
//! - `after_connect` runs the same check on every new connection and
//!   refuses one that landed on a server that does not qualify (a standby,
//!   a demoted primary), so the pool never holds a connection there;
//!   `before_acquire` closes a connection opened before the last switch.
//! - With one host and no `target_session_attrs` there is no target: the
//!   pool is sqlx's, with no hook on its paths.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};

use super::hosts::{Host, SessionAttrs};

/// How often the current host is checked (on a connection of its own).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the hosts are probed while none qualifies.
pub const PROBE_WHILE_NONE: Duration = Duration::from_millis(200);
/// Shortest time between two probes made for errors.
const PROBE_AFTER_ERROR_MIN: Duration = Duration::from_millis(100);
/// Longest one host's probe (connect and check) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where Postgres is among several hosts. Cheap to clone.
#[derive(Clone)]
pub struct PgTarget(Arc<Shared>);

struct Shared {
    hosts: Vec<Host>,
    attrs: SessionAttrs,
    /// Index of the host the pool connects to.
    current: AtomicUsize,
    /// Goes up each time the pool is pointed at another host.
    generation: AtomicU64,
    /// When the pool was last pointed at another host.
    switched_at: Mutex<Option<Instant>>,
    /// A probe is running.
    resolving: AtomicBool,
    /// Whether the last probe found a host that qualifies (presumed until
    /// the first).
    found: AtomicBool,
    /// Wakes the watch: a probe found none, probe often now.
    wake: Arc<tokio::sync::Notify>,
    /// When the last probe for an error started.
    last_poke: Mutex<Option<Instant>>,
    pool: OnceLock<PgPool>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("current", &self.current_label())
            .field("attrs", &self.0.attrs)
            .field("generation", &self.generation())
            .finish()
    }
}

impl PgTarget {
    /// A lazy pool on the first of `hosts` (at least one, as
    /// [`hosts::parse`](super::hosts::parse) gives them), built from
    /// `options` with the hooks; the first probe, run at once by a task on
    /// the current tokio runtime, points it at the right host.
    pub(super) fn pool(
        hosts: Vec<Host>,
        attrs: SessionAttrs,
        options: PgPoolOptions,
    ) -> (PgPool, Self) {
        let shared = Arc::new(Shared {
            hosts,
            attrs,
            current: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            switched_at: Mutex::new(None),
            resolving: AtomicBool::new(false),
            found: AtomicBool::new(true),
            wake: Arc::new(tokio::sync::Notify::new()),
            last_poke: Mutex::new(None),
            pool: OnceLock::new(),
        });
        // The hooks hold the target weakly: the pool is the target's.
        let (on_connect, on_acquire) = (Arc::downgrade(&shared), Arc::downgrade(&shared));
        let first = shared.hosts[0].options.clone();
        let pool = options
            .after_connect(move |conn, _| {
                let weak = Weak::clone(&on_connect);
                Box::pin(async move {
                    if qualifies(conn, attrs).await? {
                        return Ok(());
                    }
                    if let Some(shared) = weak.upgrade() {
                        PgTarget(shared).poke();
                    }
                    Err(sqlx::Error::Protocol(format!(
                        "server does not qualify as target_session_attrs={}",
                        attrs.name()
                    )))
                })
            })
            .before_acquire(move |_, meta| {
                let opened_before_switch = on_acquire.upgrade().is_some_and(|shared| {
                    let switched = *shared
                        .switched_at
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    switched.is_some_and(|at| at.elapsed() < meta.age)
                });
                Box::pin(async move { Ok(!opened_before_switch) })
            })
            .connect_lazy_with(first);
        let _ = shared.pool.set(pool.clone());
        let target = Self(shared);
        if tokio::runtime::Handle::try_current().is_ok() {
            target.spawn_watch();
        }
        (pool, target)
    }

    /// How many times the pool was pointed at another host.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// `host:port` of the host the pool connects to.
    pub fn current_label(&self) -> &str {
        &self.0.hosts[self.0.current.load(Ordering::Acquire)].label
    }

    /// Probes the hosts now: keeps the current one while it qualifies,
    /// else moves to the first that does. Whether one qualifies.
    pub async fn resolve(&self) -> bool {
        let found = self.probe_hosts().await;
        if !self.0.found.swap(found, Ordering::AcqRel) && !found {
            return false;
        }
        if !found {
            tracing::warn!(
                attrs = self.0.attrs.name(),
                "no postgres host of DATABASE_URL qualifies"
            );
            self.0.wake.notify_one();
        }
        found
    }

    async fn probe_hosts(&self) -> bool {
        let current = self.0.current.load(Ordering::Acquire);
        let order =
            std::iter::once(current).chain((0..self.0.hosts.len()).filter(|&i| i != current));
        for index in order {
            let host = &self.0.hosts[index];
            match probe(&host.options, self.0.attrs).await {
                Ok(true) => {
                    if index != current {
                        self.switch(index);
                    }
                    return true;
                }
                Ok(false) => tracing::debug!(host = %host.label, "postgres host does not qualify"),
                Err(error) => {
                    tracing::debug!(host = %host.label, %error, "postgres host unreachable")
                }
            }
        }
        false
    }

    fn switch(&self, index: usize) {
        let host = &self.0.hosts[index];
        if let Some(pool) = self.0.pool.get() {
            pool.set_connect_options(host.options.clone());
        }
        *self
            .0
            .switched_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.0.current.store(index, Ordering::Release);
        let generation = self.0.generation.fetch_add(1, Ordering::AcqRel) + 1;
        crate::instruments::postgres_switched();
        tracing::warn!(host = %host.label, attrs = self.0.attrs.name(), generation, "postgres: connecting to another host");
    }

    /// An error said the server may be gone or read-only: probes soon (one
    /// probe at a time, at most every 100 ms).
    pub fn poke(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        {
            let mut last = self
                .0
                .last_poke
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < PROBE_AFTER_ERROR_MIN) {
                return;
            }
            *last = Some(now);
        }
        if self.0.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let target = self.clone();
        tokio::spawn(async move {
            target.resolve().await;
            target.0.resolving.store(false, Ordering::Release);
        });
    }

    /// Whether the current host still qualifies, asked on the watch's own
    /// connection to it (opened when missing or on another host): a server
    /// that died is noticed at once, not after the pool's connect timeout.
    async fn current_qualifies(&self, conn: &mut Option<(usize, PgConnection)>) -> bool {
        let current = self.0.current.load(Ordering::Acquire);
        if conn.as_ref().is_some_and(|(on, _)| *on != current) {
            *conn = None;
        }
        let check = async {
            if conn.is_none() {
                let opened = PgConnection::connect_with(&self.0.hosts[current].options).await?;
                *conn = Some((current, opened));
            }
            match conn {
                Some((_, conn)) => qualifies(conn, self.0.attrs).await,
                None => Ok(false),
            }
        };
        let qualifies = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, check).await,
            Ok(Ok(true))
        );
        if !qualifies {
            *conn = None;
        }
        qualifies
    }

    /// The probe at start, then the check every [`CHECK_EVERY`] (a probe
    /// when it fails); while no host qualifies (the primary died, the
    /// standby is not promoted yet), a probe every [`PROBE_WHILE_NONE`].
    /// Runs while any clone of the target lives.
    fn spawn_watch(&self) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut first = true;
            let mut conn = None;
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let target = PgTarget(shared);
                let found = target.0.found.load(Ordering::Acquire);
                let probe = first || !found || !target.current_qualifies(&mut conn).await;
                if probe && !target.0.resolving.swap(true, Ordering::AcqRel) {
                    target.resolve().await;
                    target.0.resolving.store(false, Ordering::Release);
                }
                first = false;
                let pause = match target.0.found.load(Ordering::Acquire) {
                    true => CHECK_EVERY,
                    false => PROBE_WHILE_NONE,
                };
                // A probe made for an error that found no host wakes the
                // watch early; asleep, the watch holds the target only weakly.
                let wake = Arc::clone(&target.0.wake);
                drop(target);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = wake.notified() => {}
                }
            }
        });
    }
}

impl SessionAttrs {
    /// The attribute as written in the URL.
    pub fn name(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::Primary => "primary",
        }
    }
}

/// Whether the server `conn` is on has `attrs`.
async fn qualifies(conn: &mut PgConnection, attrs: SessionAttrs) -> sqlx::Result<bool> {
    match attrs.check_sql() {
        None => Ok(true),
        Some(sql) => sqlx::query_scalar(sql).fetch_one(conn).await,
    }
}

/// A fresh connection to `options`: does its server have `attrs`?
pub async fn probe(
    options: &sqlx::postgres::PgConnectOptions,
    attrs: SessionAttrs,
) -> sqlx::Result<bool> {
    let check = async {
        let mut conn = match PgConnection::connect_with(options).await {
            // The server answers; revokd creates its database at start.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
                PgConnection::connect_with(&options.clone().database("postgres")).await?
            }
            other => other?,
        };
        let answer = qualifies(&mut conn, attrs).await;
        let _ = conn.close().await;
        answer
    };
    tokio::time::timeout(PROBE_TIMEOUT, check)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// The first of `hosts` whose server has `attrs`, probed in order; the
/// last error when none has.
pub async fn first_qualifying<'h>(
    hosts: &'h [Host],
    attrs: SessionAttrs,
    database: Option<&str>,
) -> anyhow::Result<&'h Host> {
    let mut errors = Vec::new();
    for host in hosts {
        let options = match database {
            Some(name) => host.options.clone().database(name),
            None => host.options.clone(),
        };
        match probe(&options, attrs).await {
            Ok(true) => return Ok(host),
            Ok(false) => errors.push(format!("{}: not {}", host.label, attrs.name())),
            Err(error) => errors.push(format!("{}: {error}", host.label)),
        }
    }
    anyhow::bail!("no host of DATABASE_URL qualifies ({})", errors.join("; "))
}

/// Whether `error` says the server is gone, shutting down or read-only:
/// the primary may have moved.
pub fn server_moved(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code == "25006" || code.starts_with("08") || code.starts_with("57P")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_loss_and_read_only_errors_say_the_server_moved() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(server_moved(&io));
        assert!(server_moved(&sqlx::Error::PoolTimedOut));
        assert!(!server_moved(&sqlx::Error::RowNotFound));
        assert!(!server_moved(&sqlx::Error::Decode("x".into())));
    }
}
