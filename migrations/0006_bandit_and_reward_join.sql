-- bandit (projection): what the linear bandits have learned, from TipServed and TipRewarded only.

-- Vectors and matrices are stored as bytea: little-endian IEEE 754 doubles (or 64-bit integers
-- for the population's sums), row-major — exact bits, and no per-element array work on every read.

-- The chosen candidate's joint feature vector of every served tip whose reward is not settled yet.
CREATE TABLE bandit_pending (
    tip_id    uuid PRIMARY KEY,
    user_id   uuid  NOT NULL,
    features  bytea NOT NULL
);
CREATE INDEX bandit_pending_user ON bandit_pending (user_id);

-- Each person's ridge model: A⁻¹ (row-major, dim × dim), b, and the rewards it has seen.
CREATE TABLE bandit_users (
    user_id          uuid PRIMARY KEY,
    feature_version  integer            NOT NULL,
    dim              integer NOT NULL,
    a_inv            bytea   NOT NULL,
    b                bytea   NOT NULL,
    n                bigint  NOT NULL
);
-- Matrices of doubles do not compress: keep them out of line without trying.
ALTER TABLE bandit_users ALTER COLUMN a_inv SET STORAGE EXTERNAL;

-- The population's pooled sums (Σ x xᵀ, Σ r x) in fixed point (units of 2^-20): order-independent.
CREATE TABLE bandit_population (
    feature_version  integer  PRIMARY KEY,
    dim              integer NOT NULL,
    xx               bytea   NOT NULL,
    xr               bytea   NOT NULL,
    n                bigint  NOT NULL
);
ALTER TABLE bandit_population ALTER COLUMN xx SET STORAGE EXTERNAL;

-- reward_pending (projection): served tips whose reward is not settled yet, what the reward join
-- needs to settle them (timeouts, completions of snoozed todos).
CREATE TABLE reward_pending (
    tip_id            uuid PRIMARY KEY,
    user_id           uuid        NOT NULL,
    served_at         timestamptz NOT NULL,
    -- the chosen todo's external id (NULL for an advice)
    todo_external_id  text,
    snoozed           boolean     NOT NULL DEFAULT false,
    -- the first completion of that todo within the settle window
    completed_at      timestamptz
);
CREATE INDEX reward_pending_due ON reward_pending (served_at);
CREATE INDEX reward_pending_todo ON reward_pending (user_id, todo_external_id) WHERE todo_external_id IS NOT NULL;
CREATE INDEX reward_pending_user ON reward_pending (user_id);
