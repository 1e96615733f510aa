-- Since a bulk chunk's rows stay `in_redis` null (20261204000001), the
-- column is mostly null, and Postgres estimates `not in_redis` as true of
-- nearly every row (it counts the nulls in): the overlay's poll (every
-- 250 ms in every API process), the resync (every second) and /v1/stats
-- scanned the whole table, ~300 ms at 1.2 M rows, instead of this partial
-- index. `in_redis is false` is estimated from the column's statistics,
-- nulls excluded, and matches this index's predicate; the queries now say
-- that. Keyed by expiry: the overlay lists live rows only.
create index revoked_tokens_pending on revoked_tokens (expires_at) where in_redis is false;
drop index if exists revoked_tokens_not_in_redis;
