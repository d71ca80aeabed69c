//! The one seam between the lifecycle and the provider clients: what the service needs
//! to do to a provider conversation after the handoff.
//!
//! **Merge note:** the real implementation over `providers::ProviderClient` is written
//! at merge time ([`unwired_transport`] is the placeholder `serve` uses until then).

use std::sync::Arc;

use async_trait::async_trait;

use super::store::LiveChatRecord;
use crate::actions::{ActionError, ErrorKind};

/// Sends the user's side of a live chat to the provider.
#[async_trait]
pub trait LiveChatTransport: Send + Sync {
    /// Relays a user message to the agent.
    async fn send_user_message(&self, chat: &LiveChatRecord, text: &str)
        -> Result<(), ActionError>;
    /// Closes the provider conversation (timeouts, user close).
    async fn close(&self, chat: &LiveChatRecord) -> Result<(), ActionError>;
}

/// Placeholder transport that fails every call with a `config` error, so a live chat
/// ends with `error` rather than hanging when nothing is wired.
pub struct UnwiredTransport;

#[async_trait]
impl LiveChatTransport for UnwiredTransport {
    async fn send_user_message(
        &self,
        _chat: &LiveChatRecord,
        _text: &str,
    ) -> Result<(), ActionError> {
        Err(ActionError::new(
            ErrorKind::Config,
            "no provider transport is wired into this build",
        ))
    }
    async fn close(&self, _chat: &LiveChatRecord) -> Result<(), ActionError> {
        Err(ActionError::new(
            ErrorKind::Config,
            "no provider transport is wired into this build",
        ))
    }
}

/// The transport `serve` uses. Replaced at merge by one over `ProviderClient`.
pub fn unwired_transport() -> Arc<dyn LiveChatTransport> {
    Arc::new(UnwiredTransport)
}
