-- Claims with a lease, so a claimant that dies loses its work after a while:
-- a claimed deadline is not due again before `claimed_until`, a leased outbox head is
-- not delivered again before `leased_until` (Unix ms; NULL = free).
ALTER TABLE deadlines ADD COLUMN claimed_until INTEGER;
ALTER TABLE outbox ADD COLUMN leased_until INTEGER;
