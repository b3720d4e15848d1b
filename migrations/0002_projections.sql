-- Read models (owned by the `projections` crate). Every table here can be dropped and rebuilt
-- from the log; rebuilds build copies of them (CREATE TABLE ... (LIKE ... INCLUDING ALL)).

-- open_tasks: the current candidate todos per user. The title stays sealed: the row keeps the
-- sealed envelope of the event that last set it, opened with the user's key when served.
CREATE TABLE open_tasks (
    user_id         uuid        NOT NULL,
    external_id     text        NOT NULL,
    source          text        NOT NULL,
    priority        smallint    NOT NULL,
    due             timestamptz,
    first_seen_at   timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    title_event_id  uuid        NOT NULL,
    sealed          bytea,
    PRIMARY KEY (user_id, external_id)
);

-- features: per-user context features.
CREATE TABLE user_features (
    user_id             uuid PRIMARY KEY,
    signals_task        bigint   NOT NULL DEFAULT 0,
    signals_habit       bigint   NOT NULL DEFAULT 0,
    signals_calendar    bigint   NOT NULL DEFAULT 0,
    signals_mood        bigint   NOT NULL DEFAULT 0,
    signals_context     bigint   NOT NULL DEFAULT 0,
    tasks_completed     bigint   NOT NULL DEFAULT 0,
    -- signals by hour of day (UTC until a time zone is known), 24 counters
    activity_by_hour    bigint[] NOT NULL DEFAULT array_fill(0::bigint, ARRAY[24]),
    latest_mood         smallint,
    latest_mood_at      timestamptz,
    place               text,
    time_zone           text,
    tips_served         bigint   NOT NULL DEFAULT 0,
    last_signal_at      timestamptz
);

-- tip_log: served tips with reactions and rewards (the metrics baseline).
CREATE TABLE tip_log (
    tip_id          uuid PRIMARY KEY,
    user_id         uuid             NOT NULL,
    served_at       timestamptz      NOT NULL,
    policy          text             NOT NULL,
    policy_version  text             NOT NULL,
    chosen_kind     text             NOT NULL,
    chosen_id       text             NOT NULL,
    candidates      integer          NOT NULL,
    propensity      double precision NOT NULL,
    score           double precision NOT NULL,
    first_reaction  text,
    last_reaction   text,
    reactions       integer          NOT NULL DEFAULT 0,
    reacted_at      timestamptz,
    reward          double precision,
    settled_by      text,
    rewarded_at     timestamptz
);
CREATE INDEX tip_log_user ON tip_log (user_id, served_at);
