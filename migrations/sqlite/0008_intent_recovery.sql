-- Crash recovery that rests on documented provider behaviour (issue 17).
-- claim: NULL while the intent belongs to the run that wrote it; the reconcile's claim
--   token once a replica took it over. The run's live chat is recorded only while the
--   claim is NULL, a reconcile's adoption only under its own claim (the fence).
-- lp_consumer_id: LivePerson's id of the consumer (the ConsumerJWS claim), which the
--   connector's webhooks name as the CONSUMER participant.
-- probe_conversation_id: the conversation a second request opened (closed at once).
-- unresolved_at: when the intent was reported unresolved (past its deadline); note: why.
ALTER TABLE handoff_intents ADD COLUMN claim TEXT;
ALTER TABLE handoff_intents ADD COLUMN lp_consumer_id TEXT;
ALTER TABLE handoff_intents ADD COLUMN probe_conversation_id TEXT;
ALTER TABLE handoff_intents ADD COLUMN unresolved_at INTEGER;
ALTER TABLE handoff_intents ADD COLUMN note TEXT;
CREATE INDEX handoff_intents_by_consumer ON handoff_intents (integration_id, consumer_key);
-- Conversations a provider webhook announced that no live chat tracked when it came
-- (LivePerson reports every conversation of the app). The webhook only records them;
-- the reconcile matches them to intents.
CREATE TABLE provider_sightings (
    integration_id           TEXT NOT NULL,
    provider_conversation_id TEXT NOT NULL,
    consumer_id              TEXT NOT NULL,
    open                     BOOLEAN NOT NULL,
    seen_at                  INTEGER NOT NULL,
    PRIMARY KEY (integration_id, provider_conversation_id)
);
CREATE INDEX provider_sightings_by_consumer ON provider_sightings (integration_id, consumer_id);
