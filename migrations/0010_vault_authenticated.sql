-- Wrapped keys are authenticated (#16 item 15) and a master-key rotation runs in batches (#16
-- item 7).
--
-- `wrapped_for` is the recipient of the master key a row is wrapped to; during a rotation rows
-- are under the old or the new one. `mac` binds the row (user and key id, or secret name, and
-- the wrapped bytes) under a key derived from that master key's secret half: anyone who can write
-- the database can wrap a key they know to the public recipient, but cannot authenticate it, and
-- oO refuses a row whose MAC fails. Rows from before this migration are authenticated once, by
-- the first process that opens the vault (`vault_master.authenticated`), after checking that
-- they unwrap under the current master key.
ALTER TABLE key_vault ADD COLUMN wrapped_for text, ADD COLUMN mac bytea;
ALTER TABLE vault_secrets ADD COLUMN wrapped_for text, ADD COLUMN mac bytea;

-- `previous_recipient` is set while a rotation is under way: every row is then wrapped to it or
-- to `recipient`, and a process must hold both identities.
ALTER TABLE vault_master
    ADD COLUMN previous_recipient text,
    ADD COLUMN authenticated boolean NOT NULL DEFAULT false;
