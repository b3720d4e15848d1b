-- no-transaction
-- A person's events in the log's order, read page by page by the streamed `GET /me/export`
-- (keyset pagination); it serves every lookup by user that `events_user` served, which 0014
-- drops. Built concurrently, one statement alone (several statements in one query would run in
-- one implicit transaction), so the log keeps taking appends while it is built.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_user_order ON events (user_id, tx_id, position);
