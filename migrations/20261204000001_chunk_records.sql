-- A bulk revocation's chunk, recorded by the API before its job is pushed,
-- is one row here until a worker has written its items into Redis: the
-- worker then deletes this row and leaves the items' rows as they are
-- (in_redis null: "in Redis, or brought there by its chunk"). Before, the
-- worker rewrote every item's row to mark it in Redis — a second,
-- non-HOT write of each row (in_redis is in an index predicate), about as
-- costly as recording it, and a dead tuple each.
--
-- A chunk still here a minute after it was queued (its job lost, or no
-- worker running) counts as pending: the overlay lists its rows, and the
-- resync turns them pending (in_redis false) and copies them. The resync
-- does so after 15 s already when the queue no longer holds the chunk's
-- job (the API pushes it under a task id its job id gives).
create table queued_chunks (
    job_id     text primary key,
    queued_at  bigint not null,           -- unix seconds
    token_ids  text[] not null
);
create index queued_chunks_queued_at on queued_chunks (queued_at);

-- Rows queued by the previous version (a job in flight, or lost): pending,
-- so that the overlay and the resync cover them; their job, if it runs,
-- marks them in Redis.
update revoked_tokens set in_redis = false where in_redis is null;
drop index if exists revoked_tokens_queued;
