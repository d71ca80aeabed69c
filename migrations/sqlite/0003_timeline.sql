-- What happened to each live chat, for GET /v1/conversations/{id}/timeline: the run that
-- started it, provider calls, webhooks, state changes, timers, messages (lengths) and
-- outbox deliveries. `data` is a JSON object. Pruned after [timeline] retention_days.
CREATE TABLE timeline (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    live_chat_id    TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    at              INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    data            TEXT NOT NULL
);
CREATE INDEX timeline_by_conversation ON timeline (conversation_id, seq);
CREATE INDEX timeline_by_time ON timeline (at);
