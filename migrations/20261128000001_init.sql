-- revokd's durable record. Postgres is the source of truth: Redis's deny-list
-- can always be rebuilt from these tables. Times are unix seconds (bigint),
-- as in every JSON body of the API.

-- one row per revoked token, kept until the token has expired
create table revoked_tokens (
    token_id     text primary key,       -- jti, or sha256:<hex> of the token; never the token itself
    subject      text,
    expires_at   bigint not null,        -- the token's exp (capped at the maximum lifetime)
    revoked_at   bigint not null,
    reason       text,
    requested_by text not null,
    -- false while a revocation written directly to Postgres (queue down) has
    -- not reached Redis yet
    in_redis     boolean not null default true
);
create index revoked_tokens_expires_at on revoked_tokens (expires_at);
create index revoked_tokens_not_in_redis on revoked_tokens (token_id) where not in_redis;

-- "sign out everywhere": tokens of subject issued before not_before are revoked
create table subject_watermarks (
    subject     text primary key,
    not_before  bigint not null,
    reason      text,
    updated_at  bigint not null,
    in_redis    boolean not null default true
);
create index subject_watermarks_not_before on subject_watermarks (not_before);
create index subject_watermarks_not_in_redis on subject_watermarks (subject) where not in_redis;

-- append-only log of every revocation request; job_id makes a re-applied job
-- (at-least-once delivery) a no-op
create table revocation_audit (
    id           bigserial primary key,
    job_id       text not null unique,
    kind         text not null,          -- revoke | revoke_all
    token_id     text,
    subject      text,
    expires_at   bigint,
    not_before   bigint,
    reason       text,
    requested_by text not null,
    requested_at bigint not null,
    applied_at   bigint not null
);
create index revocation_audit_requested_at on revocation_audit (requested_at);
