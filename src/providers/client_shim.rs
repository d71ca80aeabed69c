//! Placeholder for the provider clients (replaced when the providers branch lands step 2).
#![allow(missing_docs)]
use serde_json::{Map, Value};

use super::{HandoffCx, Integration, IntegrationId, ProviderKind};
use crate::actions::{ActionError, ErrorKind};

#[derive(Debug, Clone)]
pub struct Handoff {
    pub provider: ProviderKind,
    pub integration_id: IntegrationId,
    pub provider_conversation_id: String,
    pub handoff_id: String,
}
pub struct StartOutcome {
    pub result: Value,
    pub handoff: Option<Handoff>,
    pub warnings: Vec<String>,
}
#[derive(Clone, Default)]
pub struct ProviderClient {
    _private: (),
}
impl ProviderClient {
    pub async fn start_live_chat(
        &self,
        _i: &Integration,
        _p: &Map<String, Value>,
        _cx: &HandoffCx,
    ) -> StartOutcome {
        StartOutcome {
            result: ActionError::new(ErrorKind::Unavailable, "provider clients not built yet")
                .to_result(),
            handoff: None,
            warnings: vec![],
        }
    }
}
