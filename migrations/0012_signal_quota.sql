-- Accepted signals per person per UTC day (#16 item 11): `POST /signals` reserves a batch's
-- signals here before appending it and refuses a batch that would pass `OO_SIGNAL_QUOTA`
-- (429 with Retry-After until the next UTC midnight). Operational, not derived from the log;
-- a person's rows go with their deletion, and days before yesterday are forgotten.
CREATE TABLE signal_quota (
    user_id   uuid   NOT NULL,
    day       date   NOT NULL,
    accepted  bigint NOT NULL,
    PRIMARY KEY (user_id, day)
);
