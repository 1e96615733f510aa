-- A bulk revocation's chunk (up to 1,000 items, one job) is one request:
-- it gets one audit row (kind 'revoke_batch', keyed by the chunk's job id),
-- whose token_ids lists the chunk's token ids in order; each token's
-- subject, expiry and reason are in revoked_tokens. Before, each item had
-- an audit row of its own (keyed '{job_id}:{index}'): with its three index
-- entries, about as costly as the item's revocation row itself. Rows
-- written that way stay as they are.
alter table revocation_audit add column token_ids text[];
