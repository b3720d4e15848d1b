-- no-transaction
-- `events_user_order` (0013) begins with `user_id`: this index is redundant.
DROP INDEX CONCURRENTLY IF EXISTS events_user;
