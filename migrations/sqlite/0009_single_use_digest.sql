-- A single-use token (an ALTU webhook's `jti`) is remembered with the sha256 of the
-- request it came with: the same request sent again (a proxy's retry, or the sender's
-- after a lost answer, when the first attempt died between burning the token and
-- applying its events) is let through, and its events are deduplicated by event id;
-- the token with any other body is still a replay.
ALTER TABLE seen_events ADD COLUMN digest TEXT;
