-- bandit (projection): rewards learned but not yet folded into the stored matrices.
--
-- Rewriting a person's A⁻¹ (26 KB, out of line) on every reward, and the population's Σ x xᵀ
-- (26 KB) on every batch, was most of the WAL the service wrote under steady load, and most of
-- the dead tuples vacuum had to clear. The matrices are now rewritten only when a count of
-- rewards reaches a multiple of a fixed step (projections/src/bandit.rs: USER_TAIL,
-- POPULATION_TAIL); the rewards since wait here, each as the two factors of its joint vector
-- (as in bandit_pending) and its reward, and are applied in order when the model is read. The
-- step is a function of the count alone, so the live projector and a rebuild store the same bits.

-- How many rewards a_inv and b hold; n stays the count of every reward learned (folded + tail).
ALTER TABLE bandit_users ADD COLUMN folded bigint;
UPDATE bandit_users SET folded = n;
ALTER TABLE bandit_users ALTER COLUMN folded SET NOT NULL;

CREATE TABLE bandit_user_tail (
    user_id   uuid             NOT NULL,
    -- the reward's ordinal among the person's (folded < k <= n)
    k         bigint           NOT NULL,
    features  bytea            NOT NULL,
    reward    double precision NOT NULL,
    PRIMARY KEY (user_id, k)
);

ALTER TABLE bandit_population ADD COLUMN folded bigint;
UPDATE bandit_population SET folded = n;
ALTER TABLE bandit_population ALTER COLUMN folded SET NOT NULL;

-- No user_id: like the sums, these rows are no one's (the log holds the same vectors in clear).
CREATE TABLE bandit_population_tail (
    feature_version  integer          NOT NULL,
    -- the reward's ordinal among the population's (folded < k <= n)
    k                bigint           NOT NULL,
    features         bytea            NOT NULL,
    reward           double precision NOT NULL,
    PRIMARY KEY (feature_version, k)
);
