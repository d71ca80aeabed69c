//! Integrations, provider request builders and HTTP clients.
//!
//! TEMPORARY shim with the interface of the providers branch, so the interpreter can be
//! built and tested before that branch lands. Replaced wholesale by the merge.
#![allow(missing_docs, dead_code)]

use serde_json::{json, Map, Value};

use crate::actions::{ActionError, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntegrationId(String);
impl IntegrationId {
    pub fn from_json(v: &Value) -> Option<IntegrationId> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(IntegrationId(s.trim().to_string())),
            Value::Number(n) => Some(IntegrationId(n.to_string())),
            _ => None,
        }
    }
}
impl std::fmt::Display for IntegrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    LivePerson,
    Zendesk,
    AltuSdk,
}
impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::LivePerson => "liveperson",
            ProviderKind::Zendesk => "zendesk",
            ProviderKind::AltuSdk => "altu_sdk",
        }
    }
}
#[derive(Clone)]
pub struct Secret(String);
impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    LivePerson {
        account_id: String,
        client_id: String,
        client_secret: Secret,
    },
    Zendesk {
        webhook_secret: Option<Secret>,
    },
    AltuSdk {
        access_key: Secret,
        access_token: Secret,
    },
}
#[derive(Debug, Clone)]
pub struct Integration {
    pub id: IntegrationId,
    pub provider: ProviderKind,
    pub wait_timeout_s: u64,
    pub user_inactivity_timeout_s: u64,
    pub settings: ProviderSettings,
}
/// Shim: `"${NAME}"` reads the environment (missing → empty).
fn shim_str(t: &toml::Value, k: &str) -> String {
    let v = t.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(name) => std::env::var(name).unwrap_or_default(),
        None => v.to_string(),
    }
}
#[derive(Debug, Clone, Default)]
pub struct Integrations {
    list: Vec<Integration>,
}
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{0}")]
pub struct ConfigError(String);
impl Integrations {
    pub fn from_toml_str(src: &str, _name: &str) -> Result<Integrations, ConfigError> {
        let v: toml::Value = toml::from_str(src).map_err(|e| ConfigError(e.to_string()))?;
        let mut list = Vec::new();
        for t in v
            .get("integration")
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default()
        {
            let id = match t.get("id") {
                Some(toml::Value::Integer(i)) => i.to_string(),
                Some(toml::Value::String(s)) => s.clone(),
                _ => continue,
            };
            let provider = match t.get("provider").and_then(|p| p.as_str()) {
                Some("liveperson") => ProviderKind::LivePerson,
                Some("zendesk") => ProviderKind::Zendesk,
                _ => ProviderKind::AltuSdk,
            };
            let secs = |k: &str| t.get(k).and_then(|x| x.as_integer()).unwrap_or(0).max(0) as u64;
            let settings = match provider {
                ProviderKind::LivePerson => ProviderSettings::LivePerson {
                    account_id: shim_str(&t, "account_id"),
                    client_id: shim_str(&t, "client_id"),
                    client_secret: Secret(shim_str(&t, "client_secret")),
                },
                ProviderKind::Zendesk => ProviderSettings::Zendesk {
                    webhook_secret: Some(shim_str(&t, "webhook_secret"))
                        .filter(|s| !s.is_empty())
                        .map(Secret),
                },
                ProviderKind::AltuSdk => ProviderSettings::AltuSdk {
                    access_key: Secret(shim_str(&t, "access_key")),
                    access_token: Secret(shim_str(&t, "access_token")),
                },
            };
            list.push(Integration {
                id: IntegrationId(id),
                provider,
                wait_timeout_s: secs("wait_timeout_s"),
                user_inactivity_timeout_s: secs("user_inactivity_timeout_s"),
                settings,
            });
        }
        Ok(Integrations { list })
    }
    pub fn get(&self, id: &IntegrationId) -> Option<&Integration> {
        self.list.iter().find(|i| &i.id == id)
    }
    pub fn ids(&self) -> Vec<IntegrationId> {
        self.list.iter().map(|i| i.id.clone()).collect()
    }
}
pub struct HandoffCx {
    pub handoff_id: String,
    pub conversation_id: String,
    pub contact: Value,
}
pub struct ProviderCall {
    pub body: Value,
}
impl ProviderCall {
    pub fn to_json(&self) -> Value {
        json!({"method":"POST","url":"shim","headers":{},"body":self.body})
    }
}
pub struct StartPlan {
    pub calls: Vec<ProviderCall>,
    pub warnings: Vec<String>,
}
pub fn plan_start(
    _i: &Integration,
    params: &Map<String, Value>,
    _cx: &HandoffCx,
) -> Result<StartPlan, ActionError> {
    Ok(StartPlan {
        calls: vec![ProviderCall {
            body: Value::Object(params.clone()),
        }],
        warnings: vec![],
    })
}
pub enum ParamShape {
    Templated,
    Static(Value),
}
pub enum Severity {
    Error,
    Warning,
}
pub struct ParamProblem {
    pub param: String,
    pub message: String,
    pub severity: Severity,
}
pub fn check_params(_k: ProviderKind, _p: &[(&str, ParamShape)]) -> Vec<ParamProblem> {
    vec![]
}
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
pub struct ProviderClient;
impl ProviderClient {
    pub async fn start_live_chat(
        &self,
        _i: &Integration,
        _p: &Map<String, Value>,
        _cx: &HandoffCx,
    ) -> StartOutcome {
        StartOutcome {
            result: ActionError::new(ErrorKind::Unavailable, "shim").to_result(),
            handoff: None,
            warnings: vec![],
        }
    }
}
