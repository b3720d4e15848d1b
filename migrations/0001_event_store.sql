-- The event store (owned by the `commands` crate). Global order for readers is the pair
-- (tx_id, position): positions are handed out at insert time, transaction ids let a reader
-- stop below the oldest transaction still in flight (see docs/adr/0002-global-order.md).
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    user_id         uuid        NOT NULL,
    -- Public fields only; personal fields hold the placeholder "[sealed]".
    payload         jsonb       NOT NULL,
    -- Personal fields of this event, AEAD-sealed under the user's data key (NULL: none).
    sealed          bytea,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    -- Optimistic concurrency: one event per (aggregate, sequence).
    CONSTRAINT events_stream_sequence PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_event_id UNIQUE (event_id)
);
CREATE UNIQUE INDEX events_global_order ON events (tx_id, position);
CREATE INDEX events_user ON events (user_id);

-- Aggregate snapshots (operational: derivable from the log). States hold no personal field.
CREATE TABLE snapshots (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Idempotent ingestion (operational): a signal id is stored once per user, checked in the
-- append transaction.
CREATE TABLE ingested_signals (
    user_id     uuid NOT NULL,
    signal_id   text NOT NULL,
    PRIMARY KEY (user_id, signal_id)
);

-- The key vault (operational): each user's data key, wrapped with age to the master key.
CREATE TABLE key_vault (
    user_id     uuid PRIMARY KEY,
    key_id      uuid        NOT NULL UNIQUE,
    wrapped     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Secrets of the service itself (the blind-index key), wrapped like data keys.
CREATE TABLE vault_secrets (
    name        text PRIMARY KEY,
    wrapped     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Blind index (operational): keyed hashes of an email or (issuer, subject), never plaintext.
CREATE TABLE user_lookup (
    kind        text  NOT NULL,
    hash        bytea NOT NULL,
    user_id     uuid  NOT NULL,
    PRIMARY KEY (kind, hash)
);
CREATE INDEX user_lookup_user ON user_lookup (user_id);

-- Sessions (operational): only the hash of the token is stored.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid        NOT NULL UNIQUE,
    user_id     uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Consumer checkpoints (operational): one row per projection or relay, advanced in the same
-- transaction as the work it covers.
CREATE TABLE checkpoints (
    name            text PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    status          text        NOT NULL DEFAULT 'live',
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
