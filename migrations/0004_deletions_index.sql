-- Finding deletions that a crash interrupted (requested, not yet shredded) at start-up without
-- scanning the log.
CREATE INDEX events_deletions ON events (user_id, event_type)
    WHERE event_type IN ('UserDeletionRequested', 'UserShredded');
