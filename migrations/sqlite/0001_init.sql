-- transbordo lifecycle service: initial schema.
-- Times are Unix milliseconds (INTEGER).

-- One row per handoff (live chat). `id` is the interpreter's handoff id.
-- state: waiting | with_agent | closing | ended. `pending_end` is the status a
-- `closing` chat ends with once the provider conversation is closed.
CREATE TABLE live_chats (
    id                        TEXT PRIMARY KEY,
    conversation_id           TEXT NOT NULL,
    provider                  TEXT NOT NULL,
    integration_id            TEXT NOT NULL,
    provider_conversation_id  TEXT NOT NULL,
    state                     TEXT NOT NULL,
    pending_end               TEXT,
    end_status                TEXT,
    wait_timeout_s            INTEGER NOT NULL,
    user_inactivity_timeout_s INTEGER NOT NULL,
    last_provider_ts          INTEGER,
    created_at                INTEGER NOT NULL,
    agent_joined_at           INTEGER,
    last_user_message_at      INTEGER,
    ended_at                  INTEGER
);
-- At most one open live chat per builder conversation.
CREATE UNIQUE INDEX live_chats_one_open
    ON live_chats (conversation_id) WHERE state != 'ended';
CREATE INDEX live_chats_by_provider
    ON live_chats (integration_id, provider_conversation_id);
CREATE INDEX live_chats_by_conversation
    ON live_chats (conversation_id, created_at);

-- Timers. kind: wait | inactivity | close (a watchdog that resumes an interrupted close).
CREATE TABLE deadlines (
    live_chat_id TEXT NOT NULL REFERENCES live_chats (id),
    kind         TEXT NOT NULL,
    due_at       INTEGER NOT NULL,
    PRIMARY KEY (live_chat_id, kind)
);
CREATE INDEX deadlines_by_due ON deadlines (due_at);

-- Events for the builder, delivered in `seq` order per conversation.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX outbox_pending ON outbox (conversation_id, seq) WHERE delivered_at IS NULL;

-- Provider webhook / event ids and JWT ids already processed (dedup and replay protection).
CREATE TABLE seen_events (
    source   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seen_at  INTEGER NOT NULL,
    PRIMARY KEY (source, event_id)
);
