-- A handoff's intent, written before the first provider call of a start_live_chat and
-- deleted in the transaction that records its live chat (or when the start failed). A
-- row left behind is a handoff cut by a crash: the reconcile adopts or closes its
-- provider conversation. Claimed by one replica at a time until `lease_until` (Unix ms).
CREATE TABLE handoff_intents (
    handoff_id      TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    integration_id  TEXT NOT NULL,
    provider        TEXT NOT NULL,
    consumer_key    TEXT,
    created_at      BIGINT NOT NULL,
    lease_until     BIGINT NOT NULL
);
CREATE INDEX handoff_intents_by_lease ON handoff_intents (lease_until);
