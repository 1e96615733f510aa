//! The roles an app or node runs in the background, awaited on stop.

use std::time::Duration;

use revokd::{
    app::Services,
    read::checker::Checker,
    worker::{self, WorkerDeps},
};
use tokio_util::sync::CancellationToken;

use crate::wait::eventually;

/// How long a role may take to end once its shutdown has fired.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Roles of an app or node running in the background, by name.
#[derive(Default)]
pub struct Roles(Vec<(&'static str, tokio::task::JoinHandle<()>)>);

impl Roles {
    /// Runs `role` in the background.
    pub fn spawn<F>(&mut self, name: &'static str, role: F)
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        let handle = tokio::spawn(async move {
            let _ = role.await;
        });
        self.0.push((name, handle));
    }

    /// Waits for every role to end (its shutdown has fired); fails the test
    /// naming a role that does not end within [`STOP_WITHIN`].
    pub async fn join(&mut self) {
        for (name, handle) in std::mem::take(&mut self.0) {
            let abort = handle.abort_handle();
            match tokio::time::timeout(STOP_WITHIN, handle).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("{name} ended abnormally: {error}"),
                Err(_) => {
                    abort.abort();
                    panic!("{name} still running {STOP_WITHIN:?} after shutdown");
                }
            }
        }
    }

    /// The marker guard, as `serve` runs it for the api and worker roles:
    /// watches the marker, rebuilds Redis from Postgres when it is gone.
    pub fn spawn_marker_guard(&mut self, services: &Services, stop: &CancellationToken) {
        let guard = services
            .maintenance(services.deny_patient.clone())
            .guard(stop.clone());
        self.spawn("marker guard", guard);
    }

    /// The resync, as `serve` runs it for the worker role: copies pending
    /// rows (and lost chunks') into Redis every second.
    pub fn spawn_resync(&mut self, services: &Services, stop: &CancellationToken) {
        let resync = services.resync(services.deny_patient.clone());
        self.spawn("resync", resync.run(stop.clone()));
    }

    /// The worker, with [`worker_deps`].
    pub fn spawn_worker(&mut self, services: &Services, stop: &CancellationToken) {
        self.spawn("worker", worker::run(worker_deps(services), stop.clone()));
    }

    /// Aborts every role without waiting.
    pub fn abort(&self) {
        self.0.iter().for_each(|(_, handle)| handle.abort());
    }
}

/// The worker of a test app: its stores, queue and a concurrency of 8.
pub fn worker_deps(services: &Services) -> WorkerDeps {
    WorkerDeps {
        applier: services.applier(),
        redis: services.redis.clone(),
        prefix: services.config.key_prefix.clone(),
        concurrency: 8,
    }
}

/// Waits (up to 5 s) until `checker` has read the pending revocations once,
/// as a client of `serve` would once it is ready.
pub async fn pending_loaded(checker: &Checker) {
    let pending = std::sync::Arc::clone(checker.pending());
    eventually(Duration::from_secs(5), "pending revocations read", || {
        let loaded = pending.is_loaded();
        async move { loaded }
    })
    .await;
}
