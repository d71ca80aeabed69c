//! Integrations, provider request builders and HTTP clients.
//!
//! - [`config`]: the integrations file ([`Integrations`]), ids, secrets, [`ProviderKind`]
//!   and the [`SettingsTable`] each provider reads its own keys from;
//! - [`call`]: a provider request as data ([`ProviderCall`]) and the builders' helpers;
//! - [`provider`](mod@provider): the [`Provider`] trait, one provider described in one place;
//! - [`liveperson`], [`zendesk`], [`altu`]: the providers, each in its module: settings,
//!   parameters, checks, request builders (shared by the plan and the real client), client
//!   calls and webhook receiver; [`all`] and [`register`] are the registry;
//! - [`request`]: what is common to `start_live_chat` on any provider ([`plan_start`],
//!   [`check_params`], the parameter tables);
//! - [`http`]: the one retry/timeout policy; [`client`]: [`ProviderClient`];
//! - [`observe`]: every HTTP attempt, for the service's timeline;
//! - [`transcript`]: the conversation so far for the agent, split to each provider's limit;
//! - [`schedule`]: business hours (`[[schedule]]`), open-at and next-open;
//! - [`jwt`]: HS256 tokens for the ALTU SDK connector (`docs/connector-protocol.md`).

pub mod altu;
pub mod attachments;
pub mod auth;
pub mod call;
pub mod client;
pub mod config;
pub mod http;
pub mod jwt;
pub mod liveperson;
pub mod oauth1;
pub mod observe;
pub mod provider;
pub mod request;
pub mod result;
pub mod schedule;
pub mod transcript;
pub mod webhooks;
pub mod zendesk;

pub use altu::AltuSettings;
pub use client::{ProviderClient, StartOutcome};
pub use config::{
    ConfigError, Integration, IntegrationId, Integrations, ProviderKind, ProviderSettings, Secret,
    SettingsTable, SettingsValue,
};
pub use http::{LazyClient, Retry, RetryPolicy};
pub use liveperson::LivePersonSettings;
pub use provider::{CloseReason, Handoff, Provider};
pub use request::{
    check_params, plan_start, CallBody, HandoffCx, HeaderValue, ParamProblem, ParamShape,
    ProviderCall, Severity, StartPlan,
};
pub use result::{ActionError, ErrorKind};
pub use schedule::Schedule;
pub use zendesk::ZendeskSettings;

use std::sync::RwLock;

/// The providers built in, in documentation order. Adding a provider is its module
/// (implementing [`Provider`], with its `KIND`) plus its line here.
const BUILT_IN: [ProviderKind; 3] = [liveperson::KIND, zendesk::KIND, altu::KIND];

/// Providers added at run time by [`register`], after the built-in ones.
static REGISTERED: RwLock<Vec<ProviderKind>> = RwLock::new(Vec::new());

/// Every provider: the built-in ones, then the registered ones, in order.
pub fn all() -> Vec<ProviderKind> {
    let extra = match REGISTERED.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    BUILT_IN.iter().copied().chain(extra).collect()
}

/// A provider's name is already taken.
#[derive(Debug, thiserror::Error)]
#[error("a provider named `{0}` is already registered")]
pub struct NameTaken(pub &'static str);

/// Adds a provider defined outside this crate (or in a test): from then on integrations
/// may name it, flows may use it, and the service receives its webhooks. Call it once,
/// before loading integrations.
pub fn register(provider: &'static dyn Provider) -> Result<ProviderKind, NameTaken> {
    let kind = ProviderKind::of(provider);
    let mut reg = match REGISTERED.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if BUILT_IN.iter().chain(reg.iter()).any(|k| k == &kind) {
        return Err(NameTaken(provider.name()));
    }
    reg.push(kind);
    Ok(kind)
}

/// The provider behind a [`ProviderKind`].
pub fn provider(kind: ProviderKind) -> &'static dyn Provider {
    kind.provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_gives_each_kind_its_own_provider() {
        for kind in all() {
            assert_eq!(ProviderKind::parse(kind.as_str()), Some(kind));
            assert!(!provider(kind).param_specs().is_empty(), "{kind}");
        }
        assert!(register(&liveperson::LivePerson).is_err());
    }
}
