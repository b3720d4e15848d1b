-- policies (projection): every promotion of the serving line-up, from the `policy` stream (one
-- system stream; no row belongs to a person). The row with the highest position is the line-up
-- that serves; before the first promotion the table is empty and the configured line-up serves.
CREATE TABLE policy_promotions (
    event_id     uuid PRIMARY KEY,
    position     bigint      NOT NULL,
    promoted_at  timestamptz NOT NULL,
    serving      text        NOT NULL,
    replaced     text        NOT NULL,
    shadows      text[]      NOT NULL,
    forced       boolean     NOT NULL,
    -- The offline evidence, as PolicyPromoted logs it.
    evidence     jsonb       NOT NULL
);
CREATE INDEX policy_promotions_position ON policy_promotions (position);
