-- refresh-token allow-list: every registered refresh token, grouped in
-- rotation families (a family is named by the token_id of its first token)

create table refresh_families (
    family_id      text primary key,
    subject        text,
    expires_at     bigint not null,      -- latest expiry of any member
    revoked_at     bigint,               -- set once, never cleared
    revoked_reason text,                 -- reused | revoked | subject_revoked
    -- false while a revocation decided without Redis has not reached it yet
    in_redis       boolean not null default true
);
create index refresh_families_subject on refresh_families (subject);
create index refresh_families_expires_at on refresh_families (expires_at);
create index refresh_families_not_in_redis on refresh_families (family_id) where not in_redis;

create table refresh_tokens (
    token_id      text primary key,
    family_id     text not null,
    subject       text,
    expires_at    bigint not null,
    -- 0 active, 1 rotated, 2 revoked: only ever raised
    state         smallint not null,
    registered_at bigint not null
);
create index refresh_tokens_family on refresh_tokens (family_id);
create index refresh_tokens_expires_at on refresh_tokens (expires_at);
