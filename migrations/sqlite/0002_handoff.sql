-- The interpreter's whole handoff (JSON), so the provider transport can act on the
-- conversation after a restart (LivePerson consumer token key, Zendesk requester id).
ALTER TABLE live_chats ADD COLUMN handoff TEXT;
