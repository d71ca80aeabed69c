-- Issue 19: the human part for the re-entry details, and the agent reply timer.
-- agent_*: the agent who joined or last wrote; *_messages: relayed messages counted;
-- reply_timeout_s / awaiting_reply_since: the unanswered stretch that started at the
-- user's first message after the agent's last one (NULL: none running).
ALTER TABLE live_chats ADD COLUMN agent_id TEXT;
ALTER TABLE live_chats ADD COLUMN agent_name TEXT;
ALTER TABLE live_chats ADD COLUMN user_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE live_chats ADD COLUMN agent_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE live_chats ADD COLUMN reply_timeout_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE live_chats ADD COLUMN awaiting_reply_since INTEGER;

-- Message texts of the human part, kept only with `[reentry] transcript = true`.
-- sender: user | agent.
CREATE TABLE live_chat_messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    live_chat_id TEXT NOT NULL REFERENCES live_chats (id),
    sender       TEXT NOT NULL,
    text         TEXT NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX live_chat_messages_by_chat ON live_chat_messages (live_chat_id, seq);
