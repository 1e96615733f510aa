//! The worker role: consumes the apalis-redis queue and applies jobs.
//!
//! apalis-redis 1.0 as shipped wakes an idle worker only on its heartbeat,
//! reclaims a killed worker's jobs after 300 s, and ends a worker for good on
//! any Redis error or undecodable payload. Here a supervisor restarts workers
//! under fresh names and hands their in-flight jobs back at once, a wake-up
//! signal plus a short poll tick makes pickup fast, heartbeats of 3 s × 3
//! reclaim a dead process's jobs within ~12 s, and a tolerant codec turns an
//! undecodable payload into a job that is set aside instead of a crash.
//! A job that fails is set aside or handed back to the queue as
//! [`failure`] decides; no job holds a worker slot for more than a few
//! seconds.

pub mod apply;
mod backend;
pub mod failure;
pub mod maintenance;
mod wake;

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use revokd_jobs::{Job, Producer, now_unix, queue_config};
use tokio_util::sync::CancellationToken;

use crate::{retry::Backoff, store::Keys};

pub use apply::{Applied, Applier, ApplyError};
pub use backend::{Envelope, TolerantCodec};
pub use wake::Wake;

/// What the worker role needs.
#[derive(Clone)]
pub struct WorkerDeps {
    /// Applies jobs to the stores.
    pub applier: Applier,
    /// Redis of the queue (a URL, or Sentinel's primary).
    pub redis: revokd_jobs::RedisTarget,
    /// Key prefix (queue namespace).
    pub prefix: String,
    /// Jobs applied at once.
    pub concurrency: usize,
}

/// Per-task context handed to the job handler.
#[derive(Clone)]
struct HandlerCtx {
    applier: Applier,
    /// Hands jobs back to the queue after a transient failure.
    requeue: Producer,
    stop: CancellationToken,
}

/// apalis workers ("lanes") one process runs, sharing its concurrency. One
/// apalis worker fetches, acknowledges and heartbeats in turn, one command
/// at a time: while its acknowledgements are on their way it fetches
/// nothing, and its slots empty. Several overlap those round trips.
/// Measured with `bench_worker` (100,000 revoke jobs): one lane drained
/// 12,500–14,700 jobs/s at concurrency 64 with a third of the machine idle,
/// and neither a larger fetch (128) nor more slots (256, 512) moved it;
/// four lanes drained 16,000–18,100/s at 64 and 19,900–22,400/s at 256,
/// eight no more than four.
pub const LANES: usize = 4;

/// Runs workers until `stop` fires, restarting any that dies.
pub async fn run(deps: WorkerDeps, stop: CancellationToken) -> anyhow::Result<()> {
    let conn = crate::store::patient_redis(&deps.redis);
    let config = queue_config(&deps.prefix);
    // Fewer lanes than LANES when there are fewer slots.
    let concurrency = deps.concurrency.max(1);
    let count = LANES.min(concurrency);
    let wakes: Vec<Arc<Wake>> = (0..count).map(|_| Arc::default()).collect();
    let helpers = [
        tokio::spawn(wake::listen_for_wakeups(
            deps.redis.clone(),
            Keys::new(&deps.prefix).wake_channel(),
            wakes.clone(),
            stop.clone(),
        )),
        tokio::spawn(backend::keep_promoting(
            conn.clone(),
            config.clone(),
            stop.clone(),
        )),
    ];
    let ctx = HandlerCtx {
        applier: deps.applier.clone(),
        requeue: Producer::new(conn.clone(), &deps.prefix, ""),
        stop: stop.clone(),
    };
    // The slots split between the lanes; a lane fetches no more jobs at
    // once than it has slots, or the jobs it cannot start yet would wait in
    // its buffer while other lanes stand idle.
    let lanes = wakes.into_iter().enumerate().map(|(i, wake)| {
        let slots = concurrency / count + usize::from(i < concurrency % count);
        Lane {
            conn: conn.clone(),
            config: config.clone().batch_size(config.batch_size.min(slots)),
            wake,
            ctx: ctx.clone(),
            slots,
        }
    });
    // A task each: in one task, any lane's wake-up would poll all four,
    // and each poll of an idle apalis worker fetches; and their handlers
    // would share one thread.
    let mut running = tokio::task::JoinSet::new();
    for lane in lanes {
        running.spawn(lane.supervise(stop.clone()));
    }
    while running.join_next().await.is_some() {}
    // Ended, not only told to end: nothing writes after `run` returns.
    for helper in helpers {
        helper.abort();
        let _ = helper.await;
    }
    Ok(())
}

/// One apalis worker at a time under a name of its own, and what it runs on.
struct Lane {
    conn: revokd_jobs::RedisConn,
    config: apalis_redis::Config,
    wake: Arc<Wake>,
    ctx: HandlerCtx,
    slots: usize,
}

impl Lane {
    /// Runs this lane's worker until `stop` fires, restarting it under a
    /// fresh name whenever it dies and handing its jobs back at once.
    async fn supervise(self, stop: CancellationToken) {
        let Lane {
            conn,
            config,
            wake,
            ctx,
            slots,
        } = self;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while !stop.is_cancelled() {
            let name = format!(
                "revokd-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            let backend = backend::wrap(conn.clone(), config.clone(), Arc::clone(&wake));
            let worker = WorkerBuilder::new(name.as_str())
                .backend(backend)
                .data(ctx.clone())
                .concurrency(slots)
                .build(handle);
            let started = tokio::time::Instant::now();
            let signal = stop.clone();
            tracing::debug!(worker = %name, "worker starting");
            let outcome = worker
                .run_until(async move {
                    signal.cancelled().await;
                    Ok::<(), std::io::Error>(())
                })
                .await;
            if stop.is_cancelled() {
                break;
            }
            match &outcome {
                Ok(()) => tracing::warn!(worker = %name, "worker stopped; restarting"),
                Err(error) => tracing::warn!(worker = %name, %error, "worker failed; restarting"),
            }
            // A fetch that failed on a huge scheduled backlog must not fail again.
            if let Err(error) = backend::promote_due(&conn, &config, revokd_jobs::now_unix()).await
            {
                tracing::debug!(%error, "cannot promote scheduled jobs yet");
            }
            match backend::rescue(&conn, &config, &name).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(worker = %name, jobs = n, "re-queued the failed worker's jobs")
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot re-queue yet; heartbeats of live workers will")
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff.reset();
            }
            backoff.wait(&stop).await;
        }
    }
}

async fn handle(
    job: Envelope,
    ctx: Data<HandlerCtx>,
    task: Option<TaskId>,
) -> Result<(), BoxDynError> {
    let task = task.map(|t| t.to_string()).unwrap_or_default();
    let job = match job {
        Envelope::Job(Job::Unknown) => {
            let error = ApplyError::Invalid("unknown job kind".into());
            return Err(set_aside(&task, None, "unknown_kind", error));
        }
        Envelope::Job(job) => job,
        Envelope::Undecodable(why) => {
            let error = ApplyError::Invalid(why);
            return Err(set_aside(&task, None, "undecodable", error));
        }
    };
    tracing::debug!(target: crate::instruments::PROPAGATION, job_id = job.job_id(), "picked up");
    let error = match ctx.applier.apply_with_retry(&job, &ctx.stop).await {
        Ok(applied) => {
            tracing::debug!(job_id = job.job_id(), ?applied, "job applied");
            return Ok(());
        }
        Err(error) => error,
    };
    match failure::classify(&error) {
        failure::Verdict::Dead(cause) => Err(set_aside(&task, job.job_id(), cause, error)),
        failure::Verdict::Transient => hand_back(&ctx, &job, error).await,
    }
}

/// A job that can never apply: one error line, counted by cause, and an
/// [`AbortError`], which apalis-redis records as `Killed` in the dead set
/// (`{queue}:dead`, by task id) without retrying.
fn set_aside(
    task: &str,
    job_id: Option<&str>,
    cause: &'static str,
    error: ApplyError,
) -> BoxDynError {
    tracing::error!(task_id = task, job_id, cause, %error, "job can never apply; set aside in the queue's dead set");
    crate::instruments::job_dead(cause);
    AbortError::new(error).into()
}

/// A store is unavailable: push the job back with a delay and report this
/// delivery done, so the slot is free and apalis-redis's 25-attempt limit is
/// never reached. Only when the push fails too (Redis down) does apalis get
/// the error, to reschedule the delivery itself.
async fn hand_back(ctx: &HandlerCtx, job: &Job, error: ApplyError) -> Result<(), BoxDynError> {
    let delay = failure::requeue_delay(job, now_unix());
    match ctx.requeue.push_after(job, delay).await {
        Ok(_) => {
            crate::instruments::job_requeued();
            tracing::warn!(job_id = job.job_id(), %error, retry_in = ?delay, "job not applied; handed back to the queue");
            Ok(())
        }
        Err(push) => {
            tracing::warn!(job_id = job.job_id(), %error, requeue_error = %push, "job not applied and not handed back; the queue reschedules it");
            Err(error.into())
        }
    }
}
