-- Connections to providers (Todoist; #18). Operational, not derived from the log: what a
-- connection needs to work and must never enter an event.
-- `secrets`: the provider's access token and sync cursor, sealed under the person's own data key
-- (so deleting the person shreds them) and bound to (person, provider, generation). Deleted on
-- disconnection. `next_sync_at`, `failures`: the background sync's schedule and back-off.
CREATE TABLE connections (
    user_id       uuid        NOT NULL,
    provider      text        NOT NULL,
    generation    integer     NOT NULL,
    secrets       bytea       NOT NULL,
    status        text        NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'broken')),
    connected_at  timestamptz NOT NULL,
    last_sync_at  timestamptz,
    last_outcome  text,
    failures      integer     NOT NULL DEFAULT 0,
    next_sync_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, provider)
);
CREATE INDEX connections_due ON connections (next_sync_at) WHERE status = 'connected';

-- Tokens to revoke at the provider after a disconnection, until the provider confirms (or says
-- it does not know the token). Sealed under a key of oO's own (the vault's transit secret), not
-- the person's: a deletion destroys the person's key at once, and the token must still be
-- revoked afterwards. Kept only until the revocation succeeds.
CREATE TABLE pending_revocations (
    id               uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL,
    provider         text        NOT NULL,
    token            bytea       NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_revocations_due ON pending_revocations (next_attempt_at);
