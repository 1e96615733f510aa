//! The load: a snapshot of everything the replica holds, from Redis when its
//! deny-list is complete (the marker is present), else from Postgres page by
//! page, applied as events. It notes where the stream was before reading, so
//! following resumes from there and misses nothing applied meanwhile.

use redis::aio::MultiplexedConnection;
use revokd_jobs::now_unix;

use super::{Event, Follower};
use crate::store::{Scope, redis::Snapshot};

/// On (re)connect, events are replayed from this far before the snapshot:
/// replaying is harmless, missing one is not.
const REPLAY_MS: u64 = 60_000;
/// Rows per Postgres page.
const PAGE: i64 = 10_000;

impl Follower {
    /// Loads a snapshot; returns the stream id to follow from.
    pub(super) async fn load(
        &self,
        conn: &mut MultiplexedConnection,
        stream: &str,
    ) -> anyhow::Result<String> {
        // Note where the stream is *before* the snapshot, minus a replay
        // window, so nothing applied meanwhile is missed.
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        let from_ms = last
            .ids
            .first()
            .and_then(|e| e.id.split('-').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| u64::try_from(revokd_jobs::now_unix_ms()).unwrap_or_default())
            .saturating_sub(REPLAY_MS);
        let now = now_unix();
        let started = std::time::Instant::now();
        // A marker another server set (a failover copied it here) proves
        // nothing: `marker_current` compares it with this server.
        let (snapshot, source) = if self.deny.marker_current().await.unwrap_or(false) {
            (self.deny.snapshot(now).await?, "redis")
        } else {
            (self.snapshot_from_postgres(now).await?, "postgres")
        };
        let (n_tokens, n_subjects, n_refresh) = (
            snapshot.tokens.len(),
            snapshot.subjects.len(),
            snapshot.refresh.len(),
        );
        for (id, until) in snapshot.tokens {
            self.replica.apply(&Event::Token { id, until });
        }
        for (id, not_before, until) in snapshot.subjects {
            self.replica.apply(&Event::Subject {
                id,
                not_before,
                until,
            });
        }
        for (id, family, state, until) in snapshot.refresh {
            self.replica.apply(&Event::Refresh {
                id,
                family,
                state,
                until,
            });
        }
        for (id, until) in snapshot.families {
            self.replica.apply(&Event::Family { id, until });
        }
        for (id, not_before, until) in snapshot.issuers {
            self.replica.apply(&Event::Issuer {
                id,
                not_before,
                until,
            });
        }
        self.replica.freshness.loaded();
        crate::instruments::replica_loaded(source);
        tracing::info!(
            source,
            tokens = n_tokens,
            subjects = n_subjects,
            refresh = n_refresh,
            took = ?started.elapsed(),
            "replica loaded"
        );
        Ok(format!("{from_ms}-0"))
    }

    /// What Postgres holds, with the lifetimes Redis would give it.
    async fn snapshot_from_postgres(&self, now: i64) -> sqlx::Result<Snapshot> {
        let (db, ttl) = (&self.db, self.ttl);
        let cutoff = ttl.expired_before(now);
        let until = now.saturating_add(ttl.watermark());
        let tokens = all_pages(
            |after| async move { db.live_tokens_page(&after, cutoff, PAGE).await },
            |r| r.token_id.clone(),
        )
        .await?;
        let subjects = all_pages(
            |after| async move { db.watermarks_page(&after, PAGE).await },
            |(subject, _)| subject.clone(),
        )
        .await?;
        let refresh = all_pages(
            |after| async move { db.refresh_page(&after, cutoff, PAGE).await },
            |r| r.token_id.clone(),
        )
        .await?;
        let families = all_pages(
            |after| async move { db.revoked_families_page(&after, PAGE).await },
            |(family, _)| family.clone(),
        )
        .await?;
        let issuers = all_pages(
            |after| async move { db.watermark_page(Scope::Issuer, &after, PAGE).await },
            |(issuer, _)| issuer.clone(),
        )
        .await?;
        Ok(Snapshot {
            tokens: tokens
                .into_iter()
                .map(|r| (r.token_id, ttl.deny_until(r.expires_at, now)))
                .collect(),
            subjects: subjects.into_iter().map(|(s, nb)| (s, nb, until)).collect(),
            refresh: refresh
                .into_iter()
                .map(|r| {
                    let until = ttl.deny_until(r.expires_at, now);
                    (
                        r.token_id,
                        r.family_id,
                        u8::try_from(r.state).unwrap_or(2),
                        until,
                    )
                })
                .collect(),
            families: families.into_iter().map(|(f, _)| (f, until)).collect(),
            issuers: issuers.into_iter().map(|(i, nb)| (i, nb, until)).collect(),
        })
    }
}

/// Every row of a query read in pages ordered by key: `page(after)` returns
/// the rows after key `after` (the first page after `""`), `key` a row's key.
async fn all_pages<T, Page>(
    page: impl Fn(String) -> Page,
    key: impl Fn(&T) -> String,
) -> sqlx::Result<Vec<T>>
where
    Page: Future<Output = sqlx::Result<Vec<T>>>,
{
    let mut rows = Vec::new();
    let mut after = String::new();
    loop {
        let mut next = page(after).await?;
        let Some(last) = next.last() else {
            return Ok(rows);
        };
        after = key(last);
        rows.append(&mut next);
    }
}
