//! [`RedisTarget`]: where revokd's Redis is — one URL, or the primary that
//! Redis Sentinel names, followed across failovers — and [`RedisConn`], a
//! multiplexed connection to it that moves to the new primary by itself.
//!
//! With Sentinel, the primary is looked up (`SENTINEL MASTERS` on the
//! sentinels, then `ROLE` on the node, by the `redis` crate) at first use;
//! at once when a sentinel announces a failover (`+switch-master`, on a
//! subscription kept to one sentinel at a time) or an error says the node
//! is gone or no longer the primary (connection lost, `READONLY`,
//! `MASTERDOWN`); and, as a safety net, every 5 s (every second while no
//! sentinel can be subscribed to). When
//! the verified address changes, the target's *generation* goes up: every
//! [`RedisConn`] opens a connection to the new primary on its next command,
//! and listeners that watch [`RedisTarget::changed`] (pub/sub, stream
//! readers) reconnect. With a plain URL the generation never moves and a
//! [`RedisConn`] is a `ConnectionManager`.

use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};

/// How often the sentinels are asked for the primary while no sentinel can
/// be subscribed to.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// ... and while a sentinel's `+switch-master` announcements are heard.
pub const RESOLVE_EVERY_SUBSCRIBED: Duration = Duration::from_secs(5);
/// Shortest time between two lookups made for errors.
const RESOLVE_AFTER_ERROR_MIN: Duration = Duration::from_millis(100);
/// How long connecting and subscribing to a sentinel may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before subscribing to the next sentinel after one was lost.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);
/// The channel on which sentinels announce a new primary:
/// `<master> <old ip> <old port> <new ip> <new port>`.
const SWITCH_CHANNEL: &str = "+switch-master";

/// Where Redis is. Cheap to clone: clones share the lookup and generation.
#[derive(Clone)]
pub struct RedisTarget(Arc<Shared>);

struct Shared {
    mode: Mode,
    /// Goes up each time the verified primary changes (0: never looked up).
    generation: AtomicU64,
    /// The primary, as last verified.
    current: RwLock<Option<Client>>,
    changed: tokio::sync::watch::Sender<u64>,
    /// A lookup is running.
    resolving: AtomicBool,
    /// Another lookup is owed once the running one ends.
    again: AtomicBool,
    /// A sentinel's `+switch-master` announcements are being heard.
    subscribed: AtomicBool,
    /// The safety-net lookup's period while subscribed, in milliseconds.
    poll_subscribed_ms: AtomicU64,
    /// When the last lookup for an error started.
    last_poke: Mutex<Option<std::time::Instant>>,
    /// The database of every connection (REDIS_URL's).
    db: i64,
}

enum Mode {
    /// One URL: its client is `current`, never replaced.
    Url,
    Sentinel {
        client: Box<tokio::sync::Mutex<SentinelClient>>,
        master: String,
        /// The sentinels, for logs.
        sentinels: String,
        /// The sentinels, for the `+switch-master` subscription.
        nodes: Vec<ConnectionInfo>,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.mode {
            Mode::Url => f.write_str("RedisTarget::Url"),
            Mode::Sentinel {
                master, sentinels, ..
            } => f
                .debug_struct("RedisTarget::Sentinel")
                .field("master", master)
                .field("sentinels", sentinels)
                .field("generation", &self.generation())
                .finish(),
        }
    }
}

impl RedisTarget {
    /// Redis at `url`.
    pub fn url(url: &str) -> RedisResult<Self> {
        let client = Client::open(url)?;
        let db = client.get_connection_info().redis_settings().db();
        Ok(Self::new(Mode::Url, Some(client), db))
    }

    /// The primary of `master` as the `sentinels` (`host:port`, comma
    /// separated) name it; `url`'s password, user and database apply to it
    /// (its host and port are not used). `sentinel_password`, when set,
    /// authenticates to the sentinels. A task (on the current tokio
    /// runtime) looks the primary up every [`RESOLVE_EVERY`].
    pub fn sentinel(
        sentinels: &str,
        master: &str,
        url: &str,
        sentinel_password: Option<&str>,
    ) -> RedisResult<Self> {
        let settings = Client::open(url)?
            .get_connection_info()
            .redis_settings()
            .clone();
        let db = settings.db();
        let mut nodes = Vec::new();
        for node in sentinels
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let mut info = format!("redis://{node}").into_connection_info()?;
            if let Some(password) = sentinel_password {
                let redis = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(redis);
            }
            nodes.push(info);
        }
        if nodes.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "REDIS_SENTINELS names no sentinel",
            )));
        }
        let node_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
        let client = SentinelClient::build(
            nodes.clone(),
            master.to_owned(),
            Some(node_info),
            SentinelServerType::Master,
        )?;
        let target = Self::new(
            Mode::Sentinel {
                client: Box::new(tokio::sync::Mutex::new(client)),
                master: master.to_owned(),
                sentinels: sentinels.to_owned(),
                nodes,
            },
            None,
            db,
        );
        if tokio::runtime::Handle::try_current().is_ok() {
            target.spawn_watch();
            target.spawn_switch_listener();
        }
        Ok(target)
    }

    fn new(mode: Mode, current: Option<Client>, db: i64) -> Self {
        let (changed, _) = tokio::sync::watch::channel(0);
        Self(Arc::new(Shared {
            mode,
            generation: AtomicU64::new(0),
            current: RwLock::new(current),
            changed,
            resolving: AtomicBool::new(false),
            again: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            poll_subscribed_ms: AtomicU64::new(millis(RESOLVE_EVERY_SUBSCRIBED)),
            last_poke: Mutex::new(None),
            db,
        }))
    }

    /// Whether the primary comes from Sentinel.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.0.mode, Mode::Sentinel { .. })
    }

    /// How many times the primary changed (0 with a plain URL).
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Whether a sentinel's `+switch-master` announcements are being heard.
    pub fn is_subscribed(&self) -> bool {
        self.0.subscribed.load(Ordering::Acquire)
    }

    /// Sets the safety-net lookup's period while subscribed (default
    /// [`RESOLVE_EVERY_SUBSCRIBED`]); from the next period on.
    pub fn set_poll_while_subscribed(&self, every: Duration) {
        self.0
            .poll_subscribed_ms
            .store(millis(every), Ordering::Release);
    }

    /// Tells of every change of the primary (the new generation).
    pub fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changed.subscribe()
    }

    /// The current primary and its generation; looked up first when it
    /// never was.
    pub async fn client(&self) -> RedisResult<(u64, Client)> {
        if let Some(client) = read(&self.0.current).clone() {
            return Ok((self.generation(), client));
        }
        self.resolve().await?;
        let client = read(&self.0.current)
            .clone()
            .ok_or_else(|| RedisError::from((redis::ErrorKind::Io, "no primary known yet")))?;
        Ok((self.generation(), client))
    }

    /// A connection that follows the primary, with `config`'s timeouts.
    pub fn connection(&self, config: ConnectionManagerConfig) -> RedisConn {
        RedisConn(Inner::Following {
            target: self.clone(),
            config,
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// Looks the primary up now; bumps the generation when it moved.
    pub async fn resolve(&self) -> RedisResult<()> {
        let Mode::Sentinel { client, master, .. } = &self.0.mode else {
            return Ok(());
        };
        let found = client.lock().await.async_get_client().await?;
        let addr = found.get_connection_info().addr().to_string();
        let moved = read(&self.0.current)
            .as_ref()
            .is_none_or(|c| c.get_connection_info().addr().to_string() != addr);
        if moved {
            *self
                .0
                .current
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(found);
            let generation = self.0.generation.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::info!(master = %master, primary = %addr, generation, "redis primary (sentinel)");
            self.0.changed.send_replace(generation);
        }
        Ok(())
    }

    /// An error said the primary may have moved: looks it up soon (one
    /// lookup at a time, at most every 100 ms).
    pub fn poke(&self) {
        if !self.is_sentinel() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        {
            let mut last = self
                .0
                .last_poke
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = std::time::Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < RESOLVE_AFTER_ERROR_MIN) {
                return;
            }
            *last = Some(now);
        }
        self.request_lookup();
    }

    /// Looks the primary up soon: now, or right after the lookup running.
    fn request_lookup(&self) {
        self.0.again.store(true, Ordering::Release);
        if self.0.resolving.swap(true, Ordering::AcqRel) {
            return; // the running lookup's task runs the one owed
        }
        let target = self.clone();
        tokio::spawn(async move { target.run_lookups(false).await });
    }

    /// Lookups until none is owed. The caller set `resolving`; it is
    /// cleared on return.
    async fn run_lookups(&self, periodic: bool) {
        loop {
            self.0.again.store(false, Ordering::Release);
            match self.resolve().await {
                Err(error) if periodic => {
                    tracing::warn!(%error, "sentinels name no reachable primary");
                }
                Err(error) => tracing::debug!(%error, "sentinel lookup failed"),
                Ok(()) => {}
            }
            self.0.resolving.store(false, Ordering::Release);
            // Owed meanwhile, and no other task took it up.
            if !self.0.again.load(Ordering::Acquire)
                || self.0.resolving.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }

    /// The safety-net lookup, every [`RESOLVE_EVERY`] (every
    /// [`RESOLVE_EVERY_SUBSCRIBED`] while subscribed), while any clone of
    /// the target lives.
    fn spawn_watch(&self) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let target = RedisTarget(shared);
                if !target.0.resolving.swap(true, Ordering::AcqRel) {
                    target.run_lookups(true).await;
                }
                let pause = if target.is_subscribed() {
                    Duration::from_millis(target.0.poll_subscribed_ms.load(Ordering::Acquire))
                } else {
                    RESOLVE_EVERY
                };
                drop(target);
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Keeps a subscription to `+switch-master` on one sentinel at a time
    /// (the next one when it is lost), while any clone of the target lives;
    /// an announcement for this master starts a lookup at once.
    fn spawn_switch_listener(&self) {
        let Mode::Sentinel { master, nodes, .. } = &self.0.mode else {
            return;
        };
        let (master, nodes) = (master.clone(), nodes.clone());
        let weak = Arc::downgrade(&self.0);
        // Ends (an error) when the last clone of the target is dropped.
        let mut alive = self.0.changed.subscribe();
        tokio::spawn(async move {
            for node in nodes.iter().cycle() {
                let heard = listen_for_switches(node, &master, &weak);
                tokio::select! {
                    outcome = heard => {
                        if let Err(error) = outcome {
                            tracing::debug!(%error, sentinel = %node.addr(), "sentinel subscription lost");
                        }
                    }
                    () = dropped(&mut alive) => return,
                }
                let Some(shared) = weak.upgrade() else { return };
                shared.subscribed.store(false, Ordering::Release);
                drop(shared);
                tokio::select! {
                    () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
                    () = dropped(&mut alive) => return,
                }
            }
        });
    }
}

/// Subscribes to `+switch-master` on the sentinel at `node` and starts a
/// lookup for each announcement about `master`, until the connection ends.
async fn listen_for_switches(
    node: &ConnectionInfo,
    master: &str,
    target: &std::sync::Weak<Shared>,
) -> RedisResult<()> {
    let client = Client::open(node.clone())?;
    let mut pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(SWITCH_CHANNEL).await?;
        Ok::<_, RedisError>(pubsub)
    })
    .await
    .map_err(|_| RedisError::from((redis::ErrorKind::Io, "subscribing timed out")))??
    .into_on_message();
    {
        let Some(shared) = target.upgrade() else {
            return Ok(());
        };
        shared.subscribed.store(true, Ordering::Release);
        // A switch announced before the subscription is the lookup's to find.
        RedisTarget(shared).request_lookup();
    }
    while let Some(message) = pubsub.next().await {
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        if payload.split(' ').next() != Some(master) {
            continue;
        }
        let Some(shared) = target.upgrade() else {
            return Ok(());
        };
        tracing::info!(master = %master, announced = %payload, "sentinel announced a new primary");
        RedisTarget(shared).request_lookup();
    }
    Err(RedisError::from((
        redis::ErrorKind::Io,
        "sentinel subscription closed",
    )))
}

/// Returns once the watch's sender (the target) is dropped.
async fn dropped(alive: &mut tokio::sync::watch::Receiver<u64>) {
    while alive.changed().await.is_ok() {}
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn read<T: Clone>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `error` says the node is gone or no longer the primary.
pub fn primary_moved(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
        || {
            // Scripts wrap the server's error in their own text.
            let text = error.to_string();
            text.contains("READONLY") || text.contains("MASTERDOWN")
        }
}

/// A multiplexed connection to the target's primary: a `ConnectionManager`
/// to it, replaced by one to the new primary on the first command after a
/// change. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisConn(Inner);

#[derive(Clone)]
enum Inner {
    Fixed(ConnectionManager),
    Following {
        target: RedisTarget,
        config: ConnectionManagerConfig,
        current: Arc<Mutex<Option<(u64, ConnectionManager)>>>,
    },
}

impl From<ConnectionManager> for RedisConn {
    fn from(conn: ConnectionManager) -> Self {
        Self(Inner::Fixed(conn))
    }
}

impl RedisConn {
    /// How many times the primary changed (0 for a fixed connection).
    pub fn generation(&self) -> u64 {
        match &self.0 {
            Inner::Fixed(_) => 0,
            Inner::Following { target, .. } => target.generation(),
        }
    }

    /// The connection to the current primary.
    async fn manager(&self) -> RedisResult<ConnectionManager> {
        let (target, config, current) = match &self.0 {
            Inner::Fixed(conn) => return Ok(conn.clone()),
            Inner::Following {
                target,
                config,
                current,
            } => (target, config, current),
        };
        let generation = target.generation();
        if let Some((at, conn)) = &*current.lock().unwrap_or_else(PoisonError::into_inner)
            && *at == generation
        {
            return Ok(conn.clone());
        }
        let (generation, client) = target.client().await?;
        let conn = ConnectionManager::new_lazy_with_config(client, config.clone())?;
        *current.lock().unwrap_or_else(PoisonError::into_inner) = Some((generation, conn.clone()));
        Ok(conn)
    }

    fn failed(&self, error: &RedisError) {
        if let Inner::Following { target, .. } = &self.0
            && primary_moved(error)
        {
            target.poke();
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut conn = self.manager().await?;
            let result = conn.req_packed_command(cmd).await;
            if let Err(error) = &result {
                self.failed(error);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.manager().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(error) = &result {
                self.failed(error);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Fixed(conn) => conn.get_db(),
            Inner::Following { target, .. } => target.0.db,
        }
    }
}
