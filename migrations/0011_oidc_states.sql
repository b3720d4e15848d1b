-- Sign-in states already used (#16 item 10): a callback's state is accepted once, by whichever
-- replica sees it first, so a captured callback URL with its state cookie cannot be replayed to
-- make oO call the provider's token endpoint again and again. Only a hash of the state is kept,
-- until the state would have expired anyway.
CREATE TABLE oidc_used_states (
    state_hash  bytea PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX oidc_used_states_expiry ON oidc_used_states (expires_at);
