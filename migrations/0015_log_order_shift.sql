-- The log's order survives a logical dump and restore (#16 item 6, ADR 0002 amended).
--
-- Events are ordered by the transaction id that appended them. A logical dump copies `tx_id` as
-- data, while the cluster it is restored into counts transactions from its own, possibly lower,
-- number: new events would sort before the restored ones, and every reader (projector, relay,
-- deletion follower) would stay behind them for good. So the order is the transaction id plus a
-- shift kept here: 0 on the cluster that wrote the log; raised, when oO starts, just past the
-- log's largest `tx_id` if the cluster's counter is behind it (`db::realign_log_order`). The
-- shift is the same for every writer and reader of this database, and only grows, so the order
-- of what was written is kept, and what is written next sorts after it.
CREATE TABLE log_order (
    id     smallint PRIMARY KEY CHECK (id = 1),
    shift  numeric NOT NULL DEFAULT 0 CHECK (shift >= 0)
);
INSERT INTO log_order (id, shift) VALUES (1, 0);

-- This transaction's place in the log. Appends take it from the column's default, which stays
-- the bare `pg_current_xact_id()` while the shift is 0 (a function call per row costs ~7 µs);
-- `realign_log_order` sets a default with the shift written in when it raises it.
CREATE FUNCTION oo_log_now() RETURNS xid8 LANGUAGE sql VOLATILE AS $$
    SELECT (pg_current_xact_id()::text::numeric + shift)::text::xid8 FROM log_order WHERE id = 1
$$;

-- Below this, no transaction is still in flight: readers stop there (ADR 0002).
CREATE FUNCTION oo_log_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::numeric + shift)::text::xid8 FROM log_order WHERE id = 1
$$;
