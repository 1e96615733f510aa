-- "revoke everything this issuer signed before T" (a leaked signing key, a
-- compromised tenant): tokens whose iss is issuer and whose iat is earlier
-- than not_before are revoked; shaped like subject_watermarks
create table issuer_watermarks (
    issuer      text primary key,       -- the iss claim, or sha256:<hex> of one revokd cannot store verbatim
    not_before  bigint not null,
    reason      text,
    updated_at  bigint not null,
    in_redis    boolean not null default true
);
create index issuer_watermarks_not_before on issuer_watermarks (not_before);
create index issuer_watermarks_not_in_redis on issuer_watermarks (issuer) where not in_redis;

-- the issuer of a revoke_issuer request
alter table revocation_audit add column issuer text;
