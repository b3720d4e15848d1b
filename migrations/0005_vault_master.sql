-- The public recipient of the master key that wraps every key in the vault. A process whose
-- master key is not this one refuses to start, and refuses to wrap new keys once a rotation has
-- replaced it (the check runs in the same transaction as the insert).
CREATE TABLE vault_master (
    id         smallint PRIMARY KEY CHECK (id = 1),
    recipient  text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
