//! Circuit breakers for the stores: after one failure, requests stop trying a
//! store until a background probe sees it answer again, so an outage costs one
//! failed attempt instead of one timeout per request.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// How often a down store is probed.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Up/down state of one store.
#[derive(Debug)]
pub struct Health {
    name: &'static str,
    up: AtomicBool,
    probing: AtomicBool,
}

impl Health {
    /// A store presumed up until it fails.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            up: AtomicBool::new(true),
            probing: AtomicBool::new(false),
        })
    }

    /// Whether requests should try the store.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Marks the store up (a request or probe just saw it answer).
    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(store = self.name, "store is reachable again");
        }
    }

    /// Marks the store down and starts one background probe that marks it up
    /// again once `probe` succeeds.
    pub fn mark_down<F, Fut>(self: &Arc<Self>, probe: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        if self.up.swap(false, Ordering::Relaxed) {
            crate::instruments::fallback_activated(self.name);
            tracing::warn!(
                store = self.name,
                "store unreachable; falling back until it answers"
            );
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if probe().await {
                    break;
                }
            }
            // Clear `probing` first: a failure reported in between then
            // starts a new probe instead of finding one still "running".
            this.probing.store(false, Ordering::Release);
            this.mark_up();
        });
    }
}
