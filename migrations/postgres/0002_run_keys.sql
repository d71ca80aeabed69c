-- `Idempotency-Key` of POST /v1/conversations/{id}/run: the first run's answer, so a
-- retry with the same key gets it again instead of starting a second handoff. A row
-- without an answer is a run in progress, ours until `lease_until` (Unix ms).
CREATE TABLE run_keys (
    conversation_id TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    lease_until     BIGINT NOT NULL,
    status          INTEGER,
    body            TEXT,
    PRIMARY KEY (conversation_id, idem_key)
);
CREATE INDEX run_keys_by_time ON run_keys (created_at);
