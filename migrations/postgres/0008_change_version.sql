-- Counts the writes of a live chat's row by changes. A change reads the row without a
-- lock and writes with `WHERE version = <as read>` in one statement (two round trips,
-- no transaction); a row changed in between makes it read again.
ALTER TABLE live_chats ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
