//! The one seam between the lifecycle and the provider clients: what the service needs
//! to do to a provider conversation after the handoff.
//!
//! [`ProviderTransport`] implements it over `providers::ProviderClient`; tests inject
//! their own implementations.

use std::sync::Arc;

use async_trait::async_trait;

use super::store::{EndStatus, LiveChatRecord};
use crate::actions::{ActionError, ErrorKind};
use crate::providers::attachments::{AttachmentRefusal, AttachmentRule, UserMessage};
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

    /// How the chat's provider carries an attachment (see
    /// [`crate::providers::Provider::attachment_rule`]). The default: none.
    fn attachment_rule(
        &self,
        chat: &LiveChatRecord,
        name: &str,
        content_type: &str,
    ) -> Result<AttachmentRule, AttachmentRefusal> {
        Err(AttachmentRefusal::Type {
            name: name.to_string(),
            content_type: content_type.to_string(),
            provider: chat.provider.clone(),
            takes: "no attachments".into(),
        })
    }

    /// Relays a user message with attachments; the default sends the text only.
    async fn send_user_content(
        &self,
        chat: &LiveChatRecord,
        msg: &UserMessage,
    ) -> Result<(), ActionError> {
        match &msg.text {
            Some(t) if msg.attachments.is_empty() => self.send_user_message(chat, t).await,
            _ => Err(ActionError::new(
                ErrorKind::Config,
                "this transport relays text only",
            )),
        }
    }

    /// Relays the user's typing; `Ok(false)` where the provider has no indicator.
    async fn send_typing(&self, chat: &LiveChatRecord, typing: bool) -> Result<bool, ActionError> {
        let _ = (chat, typing);
        Ok(false)
    }

    /// Downloads a file the provider keeps behind its credentials (`/files/…`).
    async fn download_file(
        &self,
        chat: &LiveChatRecord,
        path: &str,
    ) -> Result<Vec<u8>, ActionError> {
        let _ = (chat, path);
        Err(ActionError::new(
            ErrorKind::Config,
            "this transport keeps no files",
        ))
    }
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

    fn attachment_rule(
        &self,
        chat: &LiveChatRecord,
        name: &str,
        content_type: &str,
    ) -> Result<AttachmentRule, AttachmentRefusal> {
        let id = IntegrationId::new(chat.integration_id.clone());
        match self.integrations.get(&id) {
            Some(i) => {
                crate::providers::provider(i.provider).attachment_rule(i, name, content_type)
            }
            None => Err(AttachmentRefusal::Type {
                name: name.to_string(),
                content_type: content_type.to_string(),
                provider: chat.provider.clone(),
                takes: "nothing: the integration is no longer configured".into(),
            }),
        }
    }

    async fn send_user_content(
        &self,
        chat: &LiveChatRecord,
        msg: &UserMessage,
    ) -> Result<(), ActionError> {
        let (integration, handoff) = self.resolve(chat)?;
        self.client
            .send_user_content(integration, &handoff, msg)
            .await
    }

    async fn send_typing(&self, chat: &LiveChatRecord, typing: bool) -> Result<bool, ActionError> {
        let (integration, handoff) = self.resolve(chat)?;
        self.client.send_typing(integration, &handoff, typing).await
    }

    async fn download_file(
        &self,
        chat: &LiveChatRecord,
        path: &str,
    ) -> Result<Vec<u8>, ActionError> {
        let (integration, handoff) = self.resolve(chat)?;
        self.client.download_file(integration, &handoff, path).await
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
