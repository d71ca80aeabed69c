//! Live-chat integrations: the operator-owned TOML file that says which provider an
//! `integration_id` points to, with which credentials (live-chat spec §1).
//!
//! ```toml
//! [[integration]]
//! id = 7
//! provider = "liveperson"
//! account_id = "12345678"
//! client_id = "my-app"
//! client_secret = "${LP_CLIENT_SECRET}"
//! ```
//!
//! Any string value written exactly `"${NAME}"` is read from the environment at load time.
//! Every credential is held in a [`Secret`], whose `Debug`/`Display` print `[redacted]`.

use crate::flow::json::line_col;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use miette::{NamedSource, SourceSpan};
use serde::Deserialize;
use toml::Spanned;

/// Default CSDS (domain discovery) base URL for LivePerson.
pub const DEFAULT_CSDS_URL: &str = "https://api.liveperson.net";

/// A credential. Kept in its own type so it cannot be printed by accident: `Debug` and
/// `Display` both print `[redacted]`; only [`Secret::expose`] gives the value, and only the
/// HTTP client calls it, at send time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The id a flow uses to pick an integration. Flows write it as a number or a string
/// (`7` and `"7"` are the same integration), so it is normalised to its decimal text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
#[serde(transparent)]
pub struct IntegrationId(String);

impl IntegrationId {
    /// An id from its text form.
    pub fn new(id: impl Into<String>) -> Self {
        IntegrationId(id.into())
    }

    /// Reads `parameters.integration_id`: an integer, an integral float or a non-empty
    /// string (trimmed). Anything else is not an id.
    pub fn from_json(v: &serde_json::Value) -> Option<IntegrationId> {
        match v {
            serde_json::Value::String(s) => {
                let t = s.trim();
                (!t.is_empty()).then(|| IntegrationId(t.to_string()))
            }
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(IntegrationId(i.to_string()))
                } else if let Some(u) = n.as_u64() {
                    Some(IntegrationId(u.to_string()))
                } else {
                    let f = n.as_f64()?;
                    (f.fract() == 0.0 && f.abs() < 9.0e15).then(|| IntegrationId(format!("{f:.0}")))
                }
            }
            _ => None,
        }
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IntegrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which provider an integration talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub enum ProviderKind {
    /// LivePerson Messaging, Connector API.
    #[serde(rename = "liveperson")]
    LivePerson,
    /// Zendesk Support (tickets).
    #[serde(rename = "zendesk")]
    Zendesk,
    /// Our generic agent-platform connector (`docs/connector-protocol.md`).
    #[serde(rename = "altu_sdk")]
    AltuSdk,
}

impl ProviderKind {
    /// Every provider, in documentation order.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::LivePerson,
        ProviderKind::Zendesk,
        ProviderKind::AltuSdk,
    ];

    /// The name used in the integrations file and in traces.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::LivePerson => "liveperson",
            ProviderKind::Zendesk => "zendesk",
            ProviderKind::AltuSdk => "altu_sdk",
        }
    }

    /// Parses the integrations-file name.
    pub fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "liveperson" => Some(ProviderKind::LivePerson),
            "zendesk" => Some(ProviderKind::Zendesk),
            "altu_sdk" => Some(ProviderKind::AltuSdk),
            _ => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// LivePerson credentials and endpoints.
#[derive(Debug, Clone)]
pub struct LivePersonSettings {
    /// The LivePerson account (site) id; also the `brandId`.
    pub account_id: String,
    /// The app install's client id (Sentinel client credentials).
    pub client_id: String,
    /// The app install's client secret; also the webhook signing key.
    pub client_secret: Secret,
    /// CSDS base URL (default [`DEFAULT_CSDS_URL`]); a plain `http://` URL (local fake)
    /// makes the discovered domains `http://` too.
    pub csds_url: String,
}

/// Zendesk Support credentials.
#[derive(Debug, Clone)]
pub struct ZendeskSettings {
    /// `https://{subdomain}.zendesk.com` (no trailing slash), or a fake's URL.
    pub base_url: String,
    /// The API user's email (token auth is `{email}/token:{api_token}`).
    pub email: String,
    /// The API token.
    pub api_token: Secret,
    /// Webhook signing secret, used by the lifecycle service to verify webhooks.
    pub webhook_secret: Option<Secret>,
}

/// ALTU SDK connector settings (`docs/connector-protocol.md`).
#[derive(Debug, Clone)]
pub struct AltuSettings {
    /// Where our events are POSTed.
    pub webhook_url: String,
    /// The identifier the platform issued for this integration (JWT claim `sub`).
    pub access_token: Secret,
    /// The HS256 key both sides use to sign and verify event JWTs.
    pub access_key: Secret,
}

/// Provider-specific part of an integration.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// LivePerson settings.
    LivePerson(LivePersonSettings),
    /// Zendesk settings.
    Zendesk(ZendeskSettings),
    /// ALTU SDK settings.
    AltuSdk(AltuSettings),
}

/// One configured live-chat integration.
#[derive(Debug, Clone)]
pub struct Integration {
    /// The id flows refer to.
    pub id: IntegrationId,
    /// The provider.
    pub provider: ProviderKind,
    /// Seconds to wait for an agent before giving up (0 = no wait timeout).
    pub wait_timeout_s: u64,
    /// Seconds of user silence, while with an agent, before ending the chat (0 = none).
    pub user_inactivity_timeout_s: u64,
    /// Credentials and endpoints.
    pub settings: ProviderSettings,
}

/// A problem in an integrations file, with its position, renderable by miette.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{location}{message}")]
#[diagnostic(code(transbordo::integrations))]
pub struct ConfigError {
    /// What is wrong (never contains a secret value).
    pub message: String,
    /// `name:line:col: ` prefix, or `name: ` when there is no position.
    location: String,
    /// 1-based line and column of the problem, when known.
    pub line_col: Option<(usize, usize)>,
    #[source_code]
    src: std::sync::Arc<NamedSource<String>>,
    #[label("{message}")]
    span: Option<SourceSpan>,
}

impl ConfigError {
    fn at(src: &str, name: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let message = message.into();
        let line_col = span.as_ref().map(|r| line_col(src, r.start));
        let location = match line_col {
            Some((l, c)) => format!("{name}:{l}:{c}: "),
            None => format!("{name}: "),
        };
        ConfigError {
            message,
            location,
            line_col,
            src: std::sync::Arc::new(NamedSource::new(name, src.to_string())),
            span: span.map(|r| SourceSpan::from((r.start, r.end.saturating_sub(r.start).max(1)))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    integration: Vec<Spanned<RawIntegration>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged, expecting = "an integer or a string")]
enum RawId {
    Int(i64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegration {
    id: Spanned<RawId>,
    provider: Spanned<String>,
    #[serde(default)]
    wait_timeout_s: Option<Spanned<u64>>,
    #[serde(default)]
    user_inactivity_timeout_s: Option<Spanned<u64>>,
    // LivePerson
    account_id: Option<Spanned<RawId>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<String>>,
    csds_url: Option<Spanned<String>>,
    // Zendesk
    base_url: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    api_token: Option<Spanned<String>>,
    webhook_secret: Option<Spanned<String>>,
    // ALTU SDK
    webhook_url: Option<Spanned<String>>,
    access_token: Option<Spanned<String>>,
    access_key: Option<Spanned<String>>,
}

/// The loaded integrations file: integrations by id, in file order.
#[derive(Debug, Clone, Default)]
pub struct Integrations {
    items: Vec<Integration>,
}

struct Ctx<'a> {
    src: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Option<Range<usize>>, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(self.src, self.name, span, msg)
    }

    /// Expands `"${NAME}"` from the environment; errors name the variable only.
    fn string(&self, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
        let s = v.get_ref();
        if let Some(var) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            return match std::env::var(var) {
                Ok(val) if !val.is_empty() => Ok(val),
                Ok(_) => Err(self.err(
                    Some(v.span()),
                    format!("environment variable `{var}` (for `{field}`) is empty"),
                )),
                Err(_) => Err(self.err(
                    Some(v.span()),
                    format!("environment variable `{var}` (for `{field}`) is not set"),
                )),
            };
        }
        Ok(s.clone())
    }

    fn required(
        &self,
        v: &Option<Spanned<String>>,
        field: &str,
        provider: &str,
        table: &Range<usize>,
    ) -> Result<String, ConfigError> {
        match v {
            Some(v) => {
                let s = self.string(v, field)?;
                if s.trim().is_empty() {
                    return Err(self.err(Some(v.span()), format!("`{field}` must not be empty")));
                }
                Ok(s)
            }
            None => Err(self.err(
                Some(table.clone()),
                format!("missing required field `{field}` for provider `{provider}`"),
            )),
        }
    }

    fn url(&self, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
        let s = self.string(v, field)?;
        let t = s.trim().trim_end_matches('/').to_string();
        if !(t.starts_with("http://") || t.starts_with("https://")) || t.len() <= "https://".len() {
            return Err(self.err(
                Some(v.span()),
                format!("`{field}` must be an http:// or https:// URL"),
            ));
        }
        Ok(t)
    }
}

fn raw_id_text(id: &RawId) -> String {
    match id {
        RawId::Int(i) => i.to_string(),
        RawId::Str(s) => s.trim().to_string(),
    }
}

impl Integrations {
    /// Builds a set from integrations made in code (library use). Duplicate ids keep the
    /// first.
    pub fn from_integrations(items: Vec<Integration>) -> Self {
        let mut seen = std::collections::HashSet::new();
        Integrations {
            items: items
                .into_iter()
                .filter(|i| seen.insert(i.id.clone()))
                .collect(),
        }
    }

    /// Reads and parses an integrations file; the error names the file.
    pub fn load(path: &Path) -> Result<Integrations, ConfigError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::at("", &name, None, format!("cannot read file: {e}")))?;
        Integrations::from_toml_str(&src, &name)
    }

    /// Parses integrations from TOML text; `name` labels positions in errors.
    pub fn from_toml_str(src: &str, name: &str) -> Result<Integrations, ConfigError> {
        let cx = Ctx { src, name };
        let raw: RawFile = toml::from_str(src).map_err(|e| {
            let msg = e.message().trim().to_string();
            cx.err(e.span(), msg)
        })?;
        let mut items = Vec::new();
        let mut ids: HashMap<IntegrationId, Range<usize>> = HashMap::new();
        for entry in &raw.integration {
            let table = entry.span();
            let r = entry.get_ref();
            let id_text = raw_id_text(r.id.get_ref());
            if id_text.is_empty() {
                return Err(cx.err(Some(r.id.span()), "`id` must not be empty"));
            }
            let id = IntegrationId(id_text);
            if let Some(first) = ids.get(&id) {
                let (l, c) = line_col(src, first.start);
                return Err(cx.err(
                    Some(r.id.span()),
                    format!("duplicate integration id `{id}` (first defined at {l}:{c})"),
                ));
            }
            ids.insert(id.clone(), r.id.span());
            let provider = ProviderKind::parse(r.provider.get_ref()).ok_or_else(|| {
                cx.err(
                    Some(r.provider.span()),
                    format!(
                        "unknown provider `{}`; expected one of `liveperson`, `zendesk`, `altu_sdk`",
                        r.provider.get_ref()
                    ),
                )
            })?;
            let pname = provider.as_str();
            // Fields that belong to another provider are as wrong as unknown ones.
            let foreign: &[(&str, bool, Option<Range<usize>>)] = &[
                (
                    "account_id",
                    r.account_id.is_some(),
                    r.account_id.as_ref().map(|v| v.span()),
                ),
                (
                    "client_id",
                    r.client_id.is_some(),
                    r.client_id.as_ref().map(|v| v.span()),
                ),
                (
                    "client_secret",
                    r.client_secret.is_some(),
                    r.client_secret.as_ref().map(|v| v.span()),
                ),
                (
                    "csds_url",
                    r.csds_url.is_some(),
                    r.csds_url.as_ref().map(|v| v.span()),
                ),
                (
                    "base_url",
                    r.base_url.is_some(),
                    r.base_url.as_ref().map(|v| v.span()),
                ),
                (
                    "email",
                    r.email.is_some(),
                    r.email.as_ref().map(|v| v.span()),
                ),
                (
                    "api_token",
                    r.api_token.is_some(),
                    r.api_token.as_ref().map(|v| v.span()),
                ),
                (
                    "webhook_secret",
                    r.webhook_secret.is_some(),
                    r.webhook_secret.as_ref().map(|v| v.span()),
                ),
                (
                    "webhook_url",
                    r.webhook_url.is_some(),
                    r.webhook_url.as_ref().map(|v| v.span()),
                ),
                (
                    "access_token",
                    r.access_token.is_some(),
                    r.access_token.as_ref().map(|v| v.span()),
                ),
                (
                    "access_key",
                    r.access_key.is_some(),
                    r.access_key.as_ref().map(|v| v.span()),
                ),
            ];
            let allowed: &[&str] = match provider {
                ProviderKind::LivePerson => {
                    &["account_id", "client_id", "client_secret", "csds_url"]
                }
                ProviderKind::Zendesk => &["base_url", "email", "api_token", "webhook_secret"],
                ProviderKind::AltuSdk => &["webhook_url", "access_token", "access_key"],
            };
            for (field, present, span) in foreign {
                if *present && !allowed.contains(field) {
                    return Err(cx.err(
                        span.clone().map(|s| s.start..s.start + 1),
                        format!(
                            "`{field}` is not a setting of provider `{pname}` (expected: {})",
                            allowed
                                .iter()
                                .map(|a| format!("`{a}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            let settings = match provider {
                ProviderKind::LivePerson => {
                    let account_id = match &r.account_id {
                        Some(a) => {
                            let t = raw_id_text(a.get_ref());
                            let t = if let Some(var) =
                                t.strip_prefix("${").and_then(|x| x.strip_suffix('}'))
                            {
                                std::env::var(var).map_err(|_| {
                                    cx.err(
                                        Some(a.span()),
                                        format!("environment variable `{var}` (for `account_id`) is not set"),
                                    )
                                })?
                            } else {
                                t
                            };
                            if t.is_empty() {
                                return Err(
                                    cx.err(Some(a.span()), "`account_id` must not be empty")
                                );
                            }
                            t
                        }
                        None => {
                            return Err(cx.err(
                                Some(table.clone()),
                                "missing required field `account_id` for provider `liveperson`",
                            ))
                        }
                    };
                    let csds_url = match &r.csds_url {
                        Some(u) => cx.url(u, "csds_url")?,
                        None => DEFAULT_CSDS_URL.to_string(),
                    };
                    ProviderSettings::LivePerson(LivePersonSettings {
                        account_id,
                        client_id: cx.required(&r.client_id, "client_id", pname, &table)?,
                        client_secret: Secret(cx.required(
                            &r.client_secret,
                            "client_secret",
                            pname,
                            &table,
                        )?),
                        csds_url,
                    })
                }
                ProviderKind::Zendesk => {
                    let base_url = match &r.base_url {
                        Some(u) => cx.url(u, "base_url")?,
                        None => {
                            return Err(cx.err(
                                Some(table.clone()),
                                "missing required field `base_url` for provider `zendesk`",
                            ))
                        }
                    };
                    let webhook_secret = match &r.webhook_secret {
                        Some(w) => Some(Secret(cx.string(w, "webhook_secret")?)),
                        None => None,
                    };
                    ProviderSettings::Zendesk(ZendeskSettings {
                        base_url,
                        email: cx.required(&r.email, "email", pname, &table)?,
                        api_token: Secret(cx.required(&r.api_token, "api_token", pname, &table)?),
                        webhook_secret,
                    })
                }
                ProviderKind::AltuSdk => {
                    let webhook_url = match &r.webhook_url {
                        Some(u) => cx.url(u, "webhook_url")?,
                        None => {
                            return Err(cx.err(
                                Some(table.clone()),
                                "missing required field `webhook_url` for provider `altu_sdk`",
                            ))
                        }
                    };
                    ProviderSettings::AltuSdk(AltuSettings {
                        webhook_url,
                        access_token: Secret(cx.required(
                            &r.access_token,
                            "access_token",
                            pname,
                            &table,
                        )?),
                        access_key: Secret(cx.required(
                            &r.access_key,
                            "access_key",
                            pname,
                            &table,
                        )?),
                    })
                }
            };
            items.push(Integration {
                id,
                provider,
                wait_timeout_s: r.wait_timeout_s.as_ref().map(|v| *v.get_ref()).unwrap_or(0),
                user_inactivity_timeout_s: r
                    .user_inactivity_timeout_s
                    .as_ref()
                    .map(|v| *v.get_ref())
                    .unwrap_or(0),
                settings,
            });
        }
        Ok(Integrations { items })
    }

    /// The integration a flow's `integration_id` names, if configured.
    pub fn get(&self, id: &IntegrationId) -> Option<&Integration> {
        self.items.iter().find(|i| &i.id == id)
    }

    /// Looks up by the raw JSON value of `parameters.integration_id`.
    pub fn get_json(&self, id: &serde_json::Value) -> Option<&Integration> {
        IntegrationId::from_json(id).and_then(|id| self.get(&id))
    }

    /// All integrations, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Integration> {
        self.items.iter()
    }

    /// How many integrations are configured.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none are configured.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
