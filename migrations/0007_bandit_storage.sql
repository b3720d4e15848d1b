-- Matrices of doubles do not compress: keep the bandit's matrices out of line without trying.
ALTER TABLE bandit_users ALTER COLUMN a_inv SET STORAGE EXTERNAL;
ALTER TABLE bandit_population ALTER COLUMN xx SET STORAGE EXTERNAL;
