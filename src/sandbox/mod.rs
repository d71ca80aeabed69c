//! Faithful local fakes of LivePerson, Zendesk and an agent platform.
