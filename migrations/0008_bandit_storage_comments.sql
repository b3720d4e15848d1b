-- What the bandit's bytea columns hold now (the comments of 0006 describe the first layout, which
-- still reads): see projections/src/bandit.rs.
COMMENT ON COLUMN bandit_pending.features IS
  'the chosen candidate''s 10 features, then the context''s 8 (little-endian doubles); joint() rebuilds the 80-value vector. 80 doubles: the joint vector itself (earlier rows)';
COMMENT ON COLUMN bandit_users.a_inv IS
  'upper triangle of the symmetric A⁻¹, row-major (i <= j), dim (dim + 1) / 2 little-endian doubles; dim × dim: the whole matrix (earlier rows)';
COMMENT ON COLUMN bandit_population.xx IS
  'upper triangle of the symmetric Σ x xᵀ, row-major (i <= j), dim (dim + 1) / 2 little-endian 64-bit integers in units of 2^-20; dim × dim: the whole matrix (earlier rows)';
