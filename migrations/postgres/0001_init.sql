-- transbordo lifecycle service on PostgreSQL: the schema of the SQLite migrations
-- 0001..0004 in one step, plus the wake-up notifications. Times are Unix ms (BIGINT).

-- One row per handoff (live chat); see migrations/sqlite/0001_init.sql.
CREATE TABLE live_chats (
    id                        TEXT PRIMARY KEY,
    conversation_id           TEXT NOT NULL,
    provider                  TEXT NOT NULL,
    integration_id            TEXT NOT NULL,
    provider_conversation_id  TEXT NOT NULL,
    state                     TEXT NOT NULL,
    pending_end               TEXT,
    end_status                TEXT,
    wait_timeout_s            BIGINT NOT NULL,
    user_inactivity_timeout_s BIGINT NOT NULL,
    last_provider_ts          BIGINT,
    created_at                BIGINT NOT NULL,
    agent_joined_at           BIGINT,
    last_user_message_at      BIGINT,
    ended_at                  BIGINT,
    handoff                   TEXT,
    -- Insertion order, to break ties between chats created in the same millisecond.
    row_seq                   BIGSERIAL NOT NULL
);
-- At most one open live chat per builder conversation, whichever replica inserts it.
CREATE UNIQUE INDEX live_chats_one_open
    ON live_chats (conversation_id) WHERE state <> 'ended';
CREATE INDEX live_chats_by_provider
    ON live_chats (integration_id, provider_conversation_id);
CREATE INDEX live_chats_by_conversation
    ON live_chats (conversation_id, created_at);

-- Timers, claimed with FOR UPDATE SKIP LOCKED and a lease (`claimed_until`).
CREATE TABLE deadlines (
    live_chat_id  TEXT NOT NULL REFERENCES live_chats (id),
    kind          TEXT NOT NULL,
    due_at        BIGINT NOT NULL,
    claimed_until BIGINT,
    PRIMARY KEY (live_chat_id, kind)
);
CREATE INDEX deadlines_by_due ON deadlines (due_at);

-- Events for the builder, delivered in `seq` order per conversation. Only the head of a
-- conversation (its smallest undelivered seq) is ever leased, so one in flight or
-- retrying holds back only its own conversation.
CREATE TABLE outbox (
    seq             BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    delivered_at    BIGINT,
    leased_until    BIGINT
);
CREATE INDEX outbox_pending ON outbox (conversation_id, seq) WHERE delivered_at IS NULL;
CREATE INDEX outbox_pending_seq ON outbox (seq) WHERE delivered_at IS NULL;

-- Provider webhook / event ids and JWT ids already processed (dedup by a unique key).
CREATE TABLE seen_events (
    source   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seen_at  BIGINT NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX seen_events_by_time ON seen_events (seen_at);

-- What happened to each live chat (GET /v1/conversations/{id}/timeline).
CREATE TABLE timeline (
    seq             BIGSERIAL PRIMARY KEY,
    live_chat_id    TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    at              BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    data            TEXT NOT NULL
);
CREATE INDEX timeline_by_conversation ON timeline (conversation_id, seq);
CREATE INDEX timeline_by_time ON timeline (at);

-- Wake every replica's workers when work appears (sent at commit). Replicas also poll,
-- since a listener that is reconnecting misses notifications.
CREATE FUNCTION transbordo_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('transbordo', TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION transbordo_notify('outbox');
CREATE TRIGGER deadlines_notify AFTER INSERT OR UPDATE OF due_at ON deadlines
    FOR EACH STATEMENT EXECUTE FUNCTION transbordo_notify('timers');
