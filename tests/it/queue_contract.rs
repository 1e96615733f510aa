//! The contract between revokd's queue code and stock apalis-redis 1.0: what
//! revokd writes, the stock `RedisStorage` reads, and what the stock storage
//! writes, revokd finds (`revokd::store::queue`, `revokd_jobs`'s `queue`).
//! An apalis-redis upgrade that moves a key or changes a format fails here.

use std::time::Duration;

use apalis::prelude::{BoxDynError, Data, TaskBuilder, TaskSink, WorkerBuilder, WorkerContext};
use apalis_redis::RedisStorage;
use redis::{AsyncCommands, aio::ConnectionManager};
use revokd::store::{
    queue::{promote_due, rescue},
    redis::DenyList,
};
use revokd_jobs::{
    Job, Producer, RevokeBatch, RevokeItem, RevokeSubject, RevokeToken, now_unix, queue_config,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    Options, PrefixGuard, TestApp, eventually, redis_url, unique_prefix, worker_deps,
};

async fn connect() -> ConnectionManager {
    redis::Client::open(redis_url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap()
}

/// A connection, and a guard that deletes every key under `prefix` after the test.
async fn redis_under(prefix: &str) -> (ConnectionManager, PrefixGuard) {
    let guard = PrefixGuard {
        url: redis_url(),
        prefix: prefix.to_owned(),
    };
    (connect().await, guard)
}

/// A unique worker name: apalis refuses a name registered moments ago.
fn worker_name(role: &str) -> String {
    format!("contract-{role}-{}", uuid::Uuid::new_v4().simple())
}

/// Hands each job to the test.
async fn take(job: Job, seen: Data<mpsc::UnboundedSender<Job>>) -> Result<(), BoxDynError> {
    seen.send(job)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_the_producer_pushes_are_fetched_and_decoded_by_stock_apalis_redis() {
    let prefix = unique_prefix();
    let (mut conn, _guard) = redis_under(&prefix).await;
    let config = queue_config(&prefix);
    let producer = Producer::new(conn.clone(), &prefix, "contract");
    let revoke = Job::Revoke(RevokeToken::new("contract-t", None, now_unix() + 600));
    let revoke_all = Job::RevokeAll(RevokeSubject::new("contract-s", now_unix()));
    let later = Job::Revoke(RevokeToken::new("contract-later", None, now_unix() + 600));
    producer.push(&revoke).await.unwrap();
    assert!(
        producer
            .push_once(&revoke_all, "contract-key")
            .await
            .unwrap()
    );
    producer.push_after(&later, Duration::ZERO).await.unwrap();
    // A chunk as the API pushes it: its task id derived from its job id.
    let chunk = Job::RevokeBatch(RevokeBatch::new(vec![RevokeItem::new(
        "contract-c",
        None,
        now_unix() + 600,
    )]));
    producer.push_as_job_task(&chunk).await.unwrap();
    let task = revokd_jobs::task_id_of(chunk.job_id().unwrap()).unwrap();
    let held: bool = conn.hexists(config.job_data_hash(), &task).await.unwrap();
    assert!(held, "the queue holds the chunk under its job's task id");

    // The stock push honours the idempotency key the producer claimed.
    let duplicate = TaskBuilder::new(serde_json::to_vec(&revoke_all).unwrap())
        .idempotency_key("contract-key")
        .build();
    let pushed = apalis_redis::queries::push_tasks(&mut conn, &config, &[duplicate])
        .await
        .unwrap();
    assert_eq!(
        pushed,
        (0, 0),
        "the producer's idempotency key is apalis-redis's"
    );

    let (seen, mut jobs) = mpsc::unbounded_channel();
    let worker = WorkerBuilder::new(worker_name("stock").as_str())
        .backend(RedisStorage::<Job>::new(conn.clone()).with_config(config))
        .data(seen)
        .build(take);
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let running = tokio::spawn(worker.run_until(async move {
        signal.cancelled().await;
        Ok::<(), std::io::Error>(())
    }));
    let mut taken = Vec::new();
    while taken.len() < 4 {
        let job = tokio::time::timeout(Duration::from_secs(10), jobs.recv())
            .await
            .expect("stock apalis-redis fetches the producer's jobs")
            .unwrap();
        taken.push(job);
    }
    stop.cancel();
    let _ = running.await;
    for job in [revoke, revoke_all, later, chunk] {
        assert!(taken.contains(&job), "{job:?} decoded as pushed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stock_apalis_redis_pushes_is_applied_and_vacuumed_by_revokd() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    // The app's guard deletes the keys.
    let mut conn = connect().await;
    let config = queue_config(&app.prefix);
    let deny = DenyList::new(conn.clone(), &app.prefix);
    let job = Job::Revoke(RevokeToken::new("contract-stock", None, now_unix() + 600));
    RedisStorage::<Job>::new(conn.clone())
        .with_config(config.clone())
        .push(job)
        .await
        .unwrap();
    assert_eq!(deny.queue_depth(&config).await.unwrap().pending, 1);
    assert_eq!(
        promote_due(&conn.clone().into(), &config, revokd_jobs::now_unix())
            .await
            .unwrap(),
        1,
        "revokd promotes the job from where stock apalis-redis parked it"
    );

    let stop = CancellationToken::new();
    let worker = tokio::spawn(revokd::worker::run(
        worker_deps(&app.services),
        stop.clone(),
    ));
    app.wait_for_row("contract-stock").await;
    eventually(Duration::from_secs(10), "completion recorded", || async {
        let depth = deny.queue_depth(&config).await.unwrap();
        depth.done == 1 && depth.pending + depth.running == 0
    })
    .await;
    stop.cancel();
    let _ = worker.await;
    assert_eq!(
        deny.vacuum_jobs(&config, i64::MAX, i64::MAX).await.unwrap(),
        1,
        "revokd's vacuum finds the finished job"
    );
    let payloads: u64 = conn.hlen(config.job_data_hash()).await.unwrap();
    assert_eq!(payloads, 0, "the vacuum took the payload with the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_stock_workers_jobs_are_rescued_by_revokd() {
    let prefix = unique_prefix();
    let (mut conn, _guard) = redis_under(&prefix).await;
    let config = queue_config(&prefix);
    let deny = DenyList::new(conn.clone(), &prefix);
    let producer = Producer::new(conn.clone(), &prefix, "contract");
    let job = Job::Revoke(RevokeToken::new("contract-stuck", None, now_unix() + 600));
    producer.push(&job).await.unwrap();

    // A stock worker claims the job and hangs in it, then dies.
    let name = worker_name("stuck");
    let (entered, mut started) = mpsc::unbounded_channel::<()>();
    let worker = WorkerBuilder::new(name.as_str())
        .backend(RedisStorage::<Job>::new(conn.clone()).with_config(config.clone()))
        .data(entered)
        .build(
            |_: Job, entered: Data<mpsc::UnboundedSender<()>>| async move {
                let _ = entered.send(());
                std::future::pending::<Result<(), BoxDynError>>().await
            },
        );
    let running = tokio::spawn(worker.run());
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("the stock worker takes the job");
    let depth = deny.queue_depth(&config).await.unwrap();
    assert_eq!((depth.pending, depth.running), (0, 1), "{depth:?}");
    running.abort();
    let _ = running.await;

    let metadata = config.worker_metadata_key(&WorkerContext::new(&name));
    let registered: bool = conn.exists(&metadata).await.unwrap();
    assert!(registered, "the stock worker left its metadata");
    assert_eq!(
        rescue(&conn.clone().into(), &config, &name).await.unwrap(),
        1
    );
    let depth = deny.queue_depth(&config).await.unwrap();
    assert_eq!((depth.pending, depth.running), (1, 0), "{depth:?}");
    let score: Option<f64> = conn.zscore(config.workers_set(), &name).await.unwrap();
    assert_eq!(score, None, "the dead worker is deregistered");
    let left: bool = conn.exists(&metadata).await.unwrap();
    assert!(!left, "its metadata is gone");
}

/// A push wakes idle workers in the same script call: one message on the
/// wake-up channel per push that queued something (a single job, a chunked
/// `revoke_many`), none for a duplicate the idempotency key refused.
#[tokio::test]
async fn each_push_that_queues_publishes_one_wake_up() {
    use futures::StreamExt as _;
    use revokd_jobs::{RevokeItem, wake_channel};

    let prefix = unique_prefix();
    let (conn, _guard) = redis_under(&prefix).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(wake_channel(&prefix)).await.unwrap();
    let mut messages = pubsub.on_message();
    let producer = Producer::new(conn, &prefix, "contract");

    let job = Job::Revoke(RevokeToken::new("contract-wake", None, now_unix() + 600));
    assert!(producer.push_once(&job, "wake-key").await.unwrap());
    let items = (0..1_500).map(|i| RevokeItem::new(format!("wake-{i}"), None, now_unix() + 600));
    assert_eq!(producer.revoke_many(items).await.unwrap().len(), 2);
    // The same key again: nothing queued, nothing published.
    assert!(!producer.push_once(&job, "wake-key").await.unwrap());

    for push in ["push_once", "revoke_many"] {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap_or_else(|_| panic!("no wake-up for {push}"))
            .unwrap();
        assert_eq!(message.get_channel_name(), wake_channel(&prefix));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), messages.next())
            .await
            .is_err(),
        "a wake-up for a push that queued nothing"
    );
}
