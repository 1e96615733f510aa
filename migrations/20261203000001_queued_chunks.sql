-- A bulk revocation's rows are recorded as queued (in_redis null) while
-- their chunk's job waits in the queue: not pending for the API processes'
-- overlay or the resync, which would otherwise read every row of a large
-- bulk revocation four times a second (and, past 10,000 rows, send every
-- check to Postgres). in_redis: true = in Redis, false = pending (Redis
-- lacks it and no job will bring it), null = queued (a job will). A push
-- that fails turns its rows pending; rows queued for longer than a minute
-- (their job lost, say in a failover) are copied by the resync.
alter table revoked_tokens alter column in_redis drop not null;
create index revoked_tokens_queued on revoked_tokens (revoked_at) where in_redis is null;
