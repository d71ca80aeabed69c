//! Integrations, provider request builders and HTTP clients.
//!
//! - [`config`]: the integrations file ([`Integrations`]), ids, secrets;
//! - [`request`]: provider requests as data ([`plan_start`], [`check_params`]);
//! - [`liveperson`], [`zendesk`], [`altu`]: per-provider builders, shared by the plan and
//!   the real client so the bodies are built in one place;
//! - [`http`]: the one retry/timeout policy; [`client`]: [`ProviderClient`];
//! - [`transcript`]: the conversation so far for the agent, split to each provider's limit;
//! - [`jwt`]: HS256 tokens for the ALTU SDK connector (`docs/connector-protocol.md`).

pub mod altu;
pub mod client;
pub mod config;
pub mod http;
pub mod jwt;
pub mod liveperson;
pub mod request;
pub mod transcript;
pub mod zendesk;

pub use client::{CloseReason, Handoff, ProviderClient, StartOutcome};
pub use config::{
    AltuSettings, ConfigError, Integration, IntegrationId, Integrations, LivePersonSettings,
    ProviderKind, ProviderSettings, Secret, ZendeskSettings,
};
pub use http::{Retry, RetryPolicy};
pub use request::{
    check_params, plan_start, CallBody, HandoffCx, HeaderValue, ParamProblem, ParamShape,
    ProviderCall, Severity, StartPlan,
};
