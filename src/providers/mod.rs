//! Integrations, provider request builders and HTTP clients.
//!
//! - [`config`]: the integrations file ([`Integrations`]), ids, secrets;
//! - [`call`]: a provider request as data ([`ProviderCall`]) and the builders' helpers;
//! - [`provider`](mod@provider): the [`Provider`] trait, one provider described in one place;
//! - [`liveperson`], [`zendesk`], [`altu`]: the providers, each in its module: parameters,
//!   checks, request builders (shared by the plan and the real client), client calls;
//! - [`request`]: what is common to `start_live_chat` on any provider ([`plan_start`],
//!   [`check_params`], the parameter tables);
//! - [`http`]: the one retry/timeout policy; [`client`]: [`ProviderClient`];
//! - [`observe`]: every HTTP attempt, for the service's timeline;
//! - [`transcript`]: the conversation so far for the agent, split to each provider's limit;
//! - [`jwt`]: HS256 tokens for the ALTU SDK connector (`docs/connector-protocol.md`).

pub mod altu;
pub mod call;
pub mod client;
pub mod config;
pub mod http;
pub mod jwt;
pub mod liveperson;
pub mod observe;
pub mod provider;
pub mod request;
pub mod transcript;
pub mod zendesk;

pub use client::{ProviderClient, StartOutcome};
pub use config::{
    AltuSettings, ConfigError, Integration, IntegrationId, Integrations, LivePersonSettings,
    ProviderKind, ProviderSettings, Secret, ZendeskSettings,
};
pub use http::{Retry, RetryPolicy};
pub use provider::{CloseReason, Handoff, Provider};
pub use request::{
    check_params, plan_start, CallBody, HandoffCx, HeaderValue, ParamProblem, ParamShape,
    ProviderCall, Severity, StartPlan,
};

/// The provider behind each [`ProviderKind`]: the one place that lists them. Adding a
/// provider is its module (implementing [`Provider`]) plus its line here (and, for now,
/// its variant and settings in [`config`]).
pub fn provider(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::LivePerson => &liveperson::LivePerson,
        ProviderKind::Zendesk => &zendesk::Zendesk,
        ProviderKind::AltuSdk => &altu::AltuSdk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_gives_each_kind_its_own_provider() {
        for kind in ProviderKind::ALL {
            assert_eq!(provider(kind).kind(), kind);
            assert!(!provider(kind).param_specs().is_empty(), "{kind}");
        }
    }
}
