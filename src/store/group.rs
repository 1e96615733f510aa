//! Group commit: the writes many jobs hand in at the same time go to a store
//! as one statement (Postgres) or one script call (Redis).
//!
//! Each caller hands its item to one task, which — once one of a few write
//! slots is free — takes every item queued meanwhile (up to a limit),
//! writes them together in the background and answers each caller with its
//! own result. A caller still returns only once its own item is written, so
//! delivery stays at-least-once; what changes is that a backlog costs the
//! store one call per group instead of one per job, while an idle one still
//! writes each item at once (a group of one).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use tokio::sync::{Semaphore, mpsc, oneshot};

/// An item of a group and the caller waiting for its result: a flush
/// answers each, as soon as that one is written; one it drops unanswered
/// makes its caller write the item on its own.
pub struct Queued<I, O> {
    /// What the caller handed in.
    pub item: I,
    reply: oneshot::Sender<O>,
}

impl<I, O> Queued<I, O> {
    /// Hands `result` to the caller.
    pub fn answer(self, result: O) {
        // The caller may have gone (its job cancelled): nothing to tell.
        let _ = self.reply.send(result);
    }
}

type Flush<I, O> =
    dyn Fn(Vec<Queued<I, O>>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// Gathers items into groups written by `flush`. The task starts on first
/// use, so that building one needs no runtime. Cheap to clone.
pub struct Group<I, O> {
    flush: Arc<Flush<I, O>>,
    /// Largest group.
    max: usize,
    /// Groups written at the same time, so that one slow group (a row lock
    /// held elsewhere) does not hold up the others.
    in_flight: usize,
    queue: Arc<OnceLock<mpsc::Sender<Queued<I, O>>>>,
}

impl<I, O> Clone for Group<I, O> {
    fn clone(&self) -> Self {
        Self {
            flush: Arc::clone(&self.flush),
            max: self.max,
            in_flight: self.in_flight,
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Group<I, O> {
    /// Groups of up to `max` items, `in_flight` of them written at once by
    /// `flush`, which answers each item ([`Queued::answer`]).
    pub fn new<F, Fut>(max: usize, in_flight: usize, flush: F) -> Self
    where
        F: Fn(Vec<Queued<I, O>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            flush: Arc::new(move |items| Box::pin(flush(items))),
            max: max.max(1),
            in_flight: in_flight.max(1),
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Writes `item` with whatever else is queued; its result. `None` when
    /// no answer came (the runtime is shutting down, or `flush` dropped it
    /// unanswered): the caller writes it on its own.
    pub async fn submit(&self, item: I) -> Option<O> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * self.max);
            tokio::spawn(run(Arc::clone(&self.flush), self.max, self.in_flight, rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue.send(Queued { item, reply }).await.ok()?;
        answer.await.ok()
    }
}

/// The task: once a write slot is free, waits for an item, takes every item
/// queued behind it (up to `max`) and writes them in the background;
/// repeats until every sender is gone.
async fn run<I: Send + 'static, O: Send + 'static>(
    flush: Arc<Flush<I, O>>,
    max: usize,
    in_flight: usize,
    mut rx: mpsc::Receiver<Queued<I, O>>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut queued = Vec::with_capacity(max);
        if rx.recv_many(&mut queued, max).await == 0 {
            return;
        }
        let flush = Arc::clone(&flush);
        tokio::spawn(async move {
            flush(queued).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn concurrent_items_share_groups_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let group = Group::new(8, 1, move |queued: Vec<Queued<u32, u32>>| {
            seen.lock().unwrap().push(queued.len());
            async move {
                tokio::task::yield_now().await;
                for q in queued {
                    let result = q.item * 10;
                    q.answer(result);
                }
            }
        });
        let answers = futures::future::join_all((0..40).map(|i| {
            let group = group.clone();
            async move { group.submit(i).await }
        }))
        .await;
        let expected: Vec<_> = (0..40).map(|i| Some(i * 10)).collect();
        assert_eq!(answers, expected);
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
        assert!(sizes.len() < 40, "no two items shared a group: {sizes:?}");
    }

    #[tokio::test]
    async fn an_item_flush_did_not_answer_gets_none() {
        let group = Group::new(4, 2, |queued: Vec<Queued<u32, u32>>| async move {
            for q in queued.into_iter().filter(|q| q.item != 3) {
                let result = q.item;
                q.answer(result);
            }
        });
        // One at a time: a group of one each, so only item 3 goes unanswered.
        assert_eq!(group.submit(1).await, Some(1));
        assert_eq!(group.submit(3).await, None);
    }
}
