//! How an idle worker learns that a job is waiting: a wake-up published by
//! producers after each push (see [`listen_for_wakeups`]), and a poll tick
//! for jobs nobody announced (retries, producers that do not publish).
//!
//! apalis's worker fetches every time its task is polled while no fetch is
//! running, and a [`PollStrategy`] cannot hold a fetch back or start one: it
//! can only wake the task. That loses a wake-up whenever it arrives while a
//! fetch is in flight that Redis ran before the push: the wake-up's poll
//! finds the fetch still running, the fetch then comes back empty, and the
//! job waits for the next tick (up to [`POLL_TICK`]). `bench_propagation`
//! hits it often, its probes pushing just as the worker fetches after the
//! previous job: the slowest probes were woken within 0.1 ms of the push and
//! picked up ~70 ms later.
//!
//! So the strategy keeps count: each wake-up raises a generation, the
//! worker's queue connection ([`TrackedConn`]) counts the commands it starts
//! and ends, and a fetch started after generation `g` was seen covers every
//! wake-up up to `g`. When a poll ends with a wake-up not covered and no
//! command of the backend in flight (whose end would poll the worker again),
//! the strategy wakes the worker at once, and that poll fetches.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{PollSnapshot, PollStrategy};
use futures::{StreamExt, task::AtomicWaker};
use redis::{Cmd, Pipeline, RedisFuture, Value, aio::ConnectionLike};
use revokd_jobs::{RedisConn, RedisTarget};
use tokio_util::sync::CancellationToken;

use crate::instruments::PROPAGATION;

/// How often an idle worker looks for jobs without being woken (retries and
/// jobs pushed by producers that do not publish a wake-up).
const POLL_TICK: Duration = Duration::from_millis(100);

/// Wake-ups received, shared by the pub/sub listener and the worker.
#[derive(Debug, Default)]
pub struct Wake {
    /// Raised by each wake-up.
    generation: AtomicU64,
    waker: AtomicWaker,
}

impl Wake {
    /// Wakes the worker to fetch now.
    pub fn signal(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.waker.wake();
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Commands started and ended on one worker's queue connection.
#[derive(Debug, Default)]
pub(super) struct Commands {
    started: AtomicU64,
    ended: AtomicU64,
}

impl Commands {
    fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    fn in_flight(&self) -> bool {
        self.ended.load(Ordering::Acquire) != self.started()
    }

    /// Counts a command as started until the guard drops (answered, failed
    /// or abandoned).
    fn start(self: &Arc<Self>) -> CommandGuard {
        self.started.fetch_add(1, Ordering::AcqRel);
        CommandGuard(Arc::clone(self))
    }
}

struct CommandGuard(Arc<Commands>);

impl Drop for CommandGuard {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::AcqRel);
    }
}

/// The worker's queue connection: a [`RedisConn`] whose commands are
/// counted in [`Commands`], so the strategy knows when a fetch was sent and
/// whether one is still running.
#[derive(Clone)]
pub struct TrackedConn {
    conn: RedisConn,
    commands: Arc<Commands>,
}

impl TrackedConn {
    pub(super) fn new(conn: RedisConn) -> (Self, Arc<Commands>) {
        let commands = Arc::new(Commands::default());
        let conn = Self {
            conn,
            commands: Arc::clone(&commands),
        };
        (conn, commands)
    }
}

impl ConnectionLike for TrackedConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let guard = self.commands.start();
        let reply = self.conn.req_packed_command(cmd);
        Box::pin(async move {
            let _guard = guard;
            reply.await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let guard = self.commands.start();
        let replies = self.conn.req_packed_commands(pipeline, offset, count);
        Box::pin(async move {
            let _guard = guard;
            replies.await
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Wakes the worker on a wake-up or a tick, and again after a fetch that
/// started before the latest wake-up (see the module doc). apalis polls it
/// around each `poll_next` of the backend: `poll_drive` before, `on_poll`
/// after.
pub(super) struct WakeStrategy {
    wake: Arc<Wake>,
    commands: Arc<Commands>,
    tick: tokio::time::Interval,
    /// Wake-up generation and commands started when the current poll began.
    before: (u64, u64),
    /// Every wake-up up to this generation is covered by a fetch sent after it.
    covered: u64,
}

impl WakeStrategy {
    pub(super) fn new(wake: Arc<Wake>, commands: Arc<Commands>) -> Self {
        let mut tick = tokio::time::interval(POLL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            wake,
            commands,
            tick,
            before: (0, 0),
            covered: 0,
        }
    }
}

impl PollStrategy for WakeStrategy {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        self.wake.waker.register(cx.waker());
        let mut ticked = false;
        // Drained so the timer is re-armed and wakes this task again.
        while self.tick.poll_tick(cx).is_ready() {
            ticked = true;
        }
        let generation = self.wake.generation();
        self.before = (generation, self.commands.started());
        if ticked || generation > self.covered {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }

    fn on_poll(&mut self, _: &PollSnapshot) {
        let (generation, started) = self.before;
        // Only a fetch is started in `poll_next`: it ran after `generation`.
        if self.commands.started() != started {
            self.covered = self.covered.max(generation);
        }
        if self.wake.generation() > self.covered && !self.commands.in_flight() {
            tracing::debug!(target: PROPAGATION, "wake-up not covered by a fetch; fetching again");
            self.wake.waker.wake();
        }
    }
}

/// Listens on the wake-up channel and signals every worker (`wakes`, one
/// a lane), reconnecting forever; without it the workers still poll every
/// [`POLL_TICK`].
pub async fn listen_for_wakeups(
    redis: RedisTarget,
    channel: String,
    wakes: Vec<Arc<Wake>>,
    stop: CancellationToken,
) {
    let signal = || wakes.iter().for_each(|wake| wake.signal());
    let listen = async {
        loop {
            let mut moved = redis.changed();
            match subscribe(&redis, &channel).await {
                Ok(mut pubsub) => {
                    // Jobs may have arrived while we were not listening.
                    signal();
                    moved.mark_unchanged();
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            m = messages.next() => if m.is_none() { break },
                            // A new primary: listen there.
                            _ = moved.changed() => break,
                        }
                        tracing::debug!(target: PROPAGATION, "wake-up received");
                        signal();
                    }
                }
                Err(error) => tracing::debug!(%error, "wake-up channel unavailable"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        () = listen => {}
        () = stop.cancelled() => {}
    }
}

async fn subscribe(redis: &RedisTarget, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let (_, client) = redis.client().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Wake as TaskWake, Waker},
    };

    use super::*;

    /// A waker that counts its wake-ups: each is one more poll of the worker.
    #[derive(Default)]
    struct Polls(AtomicUsize);

    impl TaskWake for Polls {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    impl Polls {
        fn count(&self) -> usize {
            self.0.load(Ordering::Acquire)
        }
    }

    /// One poll of the worker's backend: the strategy around `fetch`, which
    /// stands for what apalis's `poll_next` does to the connection.
    fn poll<T>(strategy: &mut WakeStrategy, cx: &mut Context<'_>, fetch: impl FnOnce() -> T) -> T {
        let snapshot = PollSnapshot::default();
        let _ = strategy.poll_drive(cx, &snapshot);
        let outcome = fetch();
        strategy.on_poll(&snapshot);
        outcome
    }

    /// A strategy, what it watches, and a waker that counts the worker's polls.
    fn setup() -> (Arc<Wake>, Arc<Commands>, WakeStrategy, Arc<Polls>, Waker) {
        let wake = Arc::new(Wake::default());
        let commands = Arc::new(Commands::default());
        let strategy = WakeStrategy::new(Arc::clone(&wake), Arc::clone(&commands));
        let polls = Arc::new(Polls::default());
        let waker = Waker::from(Arc::clone(&polls));
        (wake, commands, strategy, polls, waker)
    }

    #[tokio::test(start_paused = true)]
    async fn wake_up_during_a_fetch_that_comes_back_empty_fetches_again() {
        let (wake, commands, mut strategy, polls, waker) = setup();
        let mut cx = Context::from_waker(&waker);

        // An idle poll sends a fetch (the tick's), which Redis runs before
        // the job is pushed.
        let fetch = poll(&mut strategy, &mut cx, || commands.start());
        // The job's wake-up arrives while that fetch's reply is on its way.
        wake.signal();
        let woken = polls.count();
        poll(&mut strategy, &mut cx, || ());
        assert_eq!(polls.count(), woken, "no extra poll while the fetch runs");

        // The fetch comes back empty; its poll sends nothing.
        drop(fetch);
        poll(&mut strategy, &mut cx, || ());
        assert_eq!(polls.count(), woken + 1, "the worker is polled again");

        // That poll sends the fetch that finds the job: nothing more owed.
        let fetch = poll(&mut strategy, &mut cx, || commands.start());
        drop(fetch);
        poll(&mut strategy, &mut cx, || ());
        assert_eq!(polls.count(), woken + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wake_up_before_the_fetch_is_covered_by_it() {
        let (wake, commands, mut strategy, polls, waker) = setup();
        let mut cx = Context::from_waker(&waker);

        wake.signal();
        let woken = polls.count();
        let fetch = poll(&mut strategy, &mut cx, || commands.start());
        drop(fetch);
        poll(&mut strategy, &mut cx, || ());
        assert_eq!(
            polls.count(),
            woken,
            "no fetch beyond the one the wake-up caused"
        );
    }
}
