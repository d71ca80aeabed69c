//! The one seam between the lifecycle and the provider clients: what the service needs
//! to do to a provider conversation after the handoff.
//!
//! [`ProviderTransport`] implements it over `providers::ProviderClient`; tests inject
//! their own implementations.

use std::sync::Arc;

use async_trait::async_trait;

use super::store::{EndStatus, LiveChatRecord};
use crate::actions::{ActionError, ErrorKind};
use crate::providers::{
    CloseReason, Handoff, Integration, IntegrationId, Integrations, ProviderClient,
};

/// Sends the user's side of a live chat to the provider.
#[async_trait]
pub trait LiveChatTransport: Send + Sync {
    /// Relays a user message to the agent.
    async fn send_user_message(&self, chat: &LiveChatRecord, text: &str)
        -> Result<(), ActionError>;
    /// Closes the provider conversation (timeouts, user close).
    async fn close(&self, chat: &LiveChatRecord) -> Result<(), ActionError>;
}

/// The transport over the real provider clients (LivePerson, Zendesk, ALTU SDK).
pub struct ProviderTransport {
    client: ProviderClient,
    integrations: Arc<Integrations>,
}

impl ProviderTransport {
    /// A transport using `client` for the integrations of the service.
    pub fn new(client: ProviderClient, integrations: Arc<Integrations>) -> Self {
        ProviderTransport {
            client,
            integrations,
        }
    }

    /// The integration and the handoff of a stored live chat.
    fn resolve(&self, chat: &LiveChatRecord) -> Result<(&Integration, Handoff), ActionError> {
        let id = IntegrationId::new(chat.integration_id.clone());
        let integration = self.integrations.get(&id).ok_or_else(|| {
            ActionError::new(
                ErrorKind::Config,
                format!(
                    "integration `{}` is no longer configured",
                    chat.integration_id
                ),
            )
        })?;
        // Chats stored before the handoff column existed lack the optional ids: the
        // provider client then falls back to what the record holds.
        let handoff = chat
            .handoff
            .as_deref()
            .and_then(|h| serde_json::from_str::<Handoff>(h).ok())
            .unwrap_or_else(|| Handoff {
                provider: integration.provider,
                integration_id: id,
                provider_conversation_id: chat.provider_conversation_id.clone(),
                consumer_token_key: None,
                handoff_id: chat.id.clone(),
                requester_id: None,
            });
        Ok((integration, handoff))
    }
}

#[async_trait]
impl LiveChatTransport for ProviderTransport {
    async fn send_user_message(
        &self,
        chat: &LiveChatRecord,
        text: &str,
    ) -> Result<(), ActionError> {
        let (integration, handoff) = self.resolve(chat)?;
        self.client
            .send_user_message(integration, &handoff, text)
            .await
    }

    async fn close(&self, chat: &LiveChatRecord) -> Result<(), ActionError> {
        let (integration, handoff) = self.resolve(chat)?;
        let reason = match chat.pending_end {
            Some(EndStatus::UserClosed) => CloseReason::UserClosed,
            Some(EndStatus::Timeout) => CloseReason::Timeout,
            Some(EndStatus::UserInactivityTimeout) => CloseReason::UserInactivityTimeout,
            _ => CloseReason::Error,
        };
        self.client.close(integration, &handoff, reason).await
    }
}
