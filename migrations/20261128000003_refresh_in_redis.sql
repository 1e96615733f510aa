-- refresh-token registrations written straight to Postgres while Redis was
-- unreachable wait here for the resync to copy them into Redis
alter table refresh_tokens add column in_redis boolean not null default true;
create index refresh_tokens_not_in_redis on refresh_tokens (token_id) where not in_redis;
