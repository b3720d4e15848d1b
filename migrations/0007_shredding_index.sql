-- Following deletions (every process drops the keys of shredded users from its cache) reads
-- only the `UserShredded` events after its cursor, in the global order, without scanning the
-- rest of the log.
CREATE INDEX events_shredded_order ON events (tx_id, position) WHERE event_type = 'UserShredded';
