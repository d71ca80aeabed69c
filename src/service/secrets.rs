//! Webhook secrets, read from the integration. The only file that knows where each
//! provider keeps them (adapt here when the integration type changes).

use crate::providers::{Integration, ProviderSettings};

/// LivePerson: the app's `client_secret` keys `x-liveperson-signature`.
pub fn liveperson_webhook_secret(i: &Integration) -> Option<&str> {
    match &i.settings {
        ProviderSettings::LivePerson(lp) => {
            Some(lp.client_secret.expose()).filter(|s| !s.is_empty())
        }
        _ => None,
    }
}

/// Zendesk: the webhook's signing secret (`webhook_secret`); none → webhooks refused.
pub fn zendesk_webhook_secret(i: &Integration) -> Option<&str> {
    match &i.settings {
        ProviderSettings::Zendesk(zd) => zd
            .webhook_secret
            .as_ref()
            .map(|s| s.expose())
            .filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// ALTU SDK connector: `access_key` signs the HS256 JWTs in both directions.
pub fn altu_access_key(i: &Integration) -> Option<&str> {
    match &i.settings {
        ProviderSettings::AltuSdk(a) => Some(a.access_key.expose()).filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// ALTU SDK connector: `access_token`, the `sub` claim of the platform's tokens.
pub fn altu_access_token(i: &Integration) -> Option<&str> {
    match &i.settings {
        ProviderSettings::AltuSdk(a) => Some(a.access_token.expose()).filter(|s| !s.is_empty()),
        _ => None,
    }
}
