//! Integrations, provider request builders and HTTP clients.
