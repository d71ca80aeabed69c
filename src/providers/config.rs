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
//! The common keys (`id`, `provider`, `wait_timeout_s`, `user_inactivity_timeout_s`,
//! `agent_reply_timeout_s`, `schedule`) and the `[[schedule]]` tables
//! ([`crate::providers::schedule`]) are read here; the others by the integration's provider ([`Provider::parse_settings`],
//! through a [`SettingsTable`]), which keeps its settings as a [`ProviderSettings`].
//! Any string value written exactly `"${NAME}"` is read from the environment at load time.
//! Every credential is held in a [`Secret`], whose `Debug`/`Display` print `[redacted]`.

use crate::flow::json::line_col;
use crate::providers::provider::Provider;
use crate::providers::schedule::{Interval, Schedule, DAY_KEYS};
use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use miette::{NamedSource, SourceSpan};
use serde::Deserialize;
use toml::Spanned;

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

/// Which provider an integration talks to: a handle on a registered [`Provider`]
/// ([`crate::providers::register`]). It is written, in the integrations file, in stored
/// handoffs and in JSON outputs, as the provider's name (`"liveperson"`).
#[derive(Clone, Copy)]
pub struct ProviderKind(&'static dyn Provider);

impl ProviderKind {
    /// The kind of a provider (each provider module has its `KIND` constant).
    pub const fn of(provider: &'static dyn Provider) -> Self {
        ProviderKind(provider)
    }

    /// The name used in the integrations file and in traces.
    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    /// The provider itself.
    pub fn provider(self) -> &'static dyn Provider {
        self.0
    }

    /// The registered provider of that name.
    pub fn parse(s: &str) -> Option<ProviderKind> {
        crate::providers::all()
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl PartialEq for ProviderKind {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ProviderKind {}

impl std::hash::Hash for ProviderKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderKind({:?})", self.as_str())
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ProviderKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        ProviderKind::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown provider `{name}`")))
    }
}

/// Provider-specific part of an integration: the value the provider's
/// [`Provider::parse_settings`] made, read back by that provider with
/// [`ProviderSettings::get`]. Its `Debug` is the value's (secrets print `[redacted]`).
#[derive(Clone)]
pub struct ProviderSettings(Arc<dyn SettingsValue>);

/// What a provider keeps as its settings: any `Debug` value (keep credentials in
/// [`Secret`]s so it prints none).
pub trait SettingsValue: Any + fmt::Debug + Send + Sync {}

impl<T: Any + fmt::Debug + Send + Sync> SettingsValue for T {}

impl ProviderSettings {
    /// Wraps a provider's settings.
    pub fn new<T: SettingsValue>(value: T) -> Self {
        ProviderSettings(Arc::new(value))
    }

    /// The settings, if they are a `T` (the provider that made them asks for its type).
    pub fn get<T: SettingsValue>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.0;
        any.downcast_ref::<T>()
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
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
    /// Seconds a joined agent may leave the user's message unanswered before the builder
    /// hears `agent_reply_overdue` (0 = never).
    pub agent_reply_timeout_s: u64,
    /// Business hours (`schedule = "name"`): outside them `start_live_chat` sends
    /// nothing and fails with kind `unavailable`.
    pub schedule: Option<Arc<Schedule>>,
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

/// One `[[integration]]` table as written: its keys and values with their positions, in
/// file order. The common keys are read here, the rest by the integration's provider.
type RawTable = IndexMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    integration: Vec<Spanned<RawTable>>,
    #[serde(default)]
    schedule: Vec<Spanned<RawSchedule>>,
}

/// One `[[schedule]]` table as written, every value with its position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: Spanned<String>,
    timezone: Spanned<String>,
    #[serde(default)]
    mon: Vec<Spanned<String>>,
    #[serde(default)]
    tue: Vec<Spanned<String>>,
    #[serde(default)]
    wed: Vec<Spanned<String>>,
    #[serde(default)]
    thu: Vec<Spanned<String>>,
    #[serde(default)]
    fri: Vec<Spanned<String>>,
    #[serde(default)]
    sat: Vec<Spanned<String>>,
    #[serde(default)]
    sun: Vec<Spanned<String>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged, expecting = "an integer or a string")]
enum RawId {
    Int(i64),
    Str(String),
}

/// The keys every integration has, whatever its provider.
const COMMON_KEYS: [&str; 6] = [
    "id",
    "provider",
    "wait_timeout_s",
    "user_inactivity_timeout_s",
    "agent_reply_timeout_s",
    "schedule",
];

/// The common keys of one table, typed.
struct Common {
    id: Spanned<RawId>,
    provider: Spanned<String>,
    wait_timeout_s: u64,
    user_inactivity_timeout_s: u64,
    agent_reply_timeout_s: u64,
    schedule: Option<Spanned<String>>,
}

/// The loaded integrations file: integrations by id, in file order.
#[derive(Debug, Clone, Default)]
pub struct Integrations {
    items: Vec<Integration>,
    schedules: Vec<Arc<Schedule>>,
}

struct Ctx<'a> {
    src: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Option<Range<usize>>, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(self.src, self.name, span, msg)
    }

    /// A value of type `T`, or the type error serde gives, at the value.
    fn typed<T: serde::de::DeserializeOwned>(
        &self,
        v: &Spanned<toml::Value>,
    ) -> Result<T, ConfigError> {
        T::deserialize(v.get_ref().clone())
            .map_err(|e| self.err(Some(v.span()), e.message().trim().to_string()))
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

    /// The common keys of a table: unknown keys and type errors in file order, then the
    /// missing ones (serde's messages, as when the whole table was one struct).
    fn common(&self, table: &Spanned<RawTable>, known: &[&str]) -> Result<Common, ConfigError> {
        let (mut id, mut provider) = (None, None);
        let (mut wait, mut inactivity, mut reply) = (0, 0, 0);
        let mut schedule = None;
        for (k, v) in table.get_ref() {
            match k.get_ref().as_str() {
                "id" => id = Some(Spanned::new(v.span(), self.typed::<RawId>(v)?)),
                "provider" => provider = Some(Spanned::new(v.span(), self.typed::<String>(v)?)),
                "wait_timeout_s" => wait = self.typed::<u64>(v)?,
                "user_inactivity_timeout_s" => inactivity = self.typed::<u64>(v)?,
                "agent_reply_timeout_s" => reply = self.typed::<u64>(v)?,
                "schedule" => schedule = Some(Spanned::new(v.span(), self.typed::<String>(v)?)),
                other if known.contains(&other) => {}
                other => {
                    return Err(self.err(
                        Some(k.span()),
                        format!(
                            "unknown field `{other}`, expected one of {}",
                            quoted_list(known)
                        ),
                    ))
                }
            }
        }
        let missing =
            |field: &str| self.err(Some(table.span()), format!("missing field `{field}`"));
        Ok(Common {
            id: id.ok_or_else(|| missing("id"))?,
            provider: provider.ok_or_else(|| missing("provider"))?,
            wait_timeout_s: wait,
            user_inactivity_timeout_s: inactivity,
            agent_reply_timeout_s: reply,
            schedule,
        })
    }
}

impl Ctx<'_> {
    /// One `[[schedule]]`: its zone, intervals (each `HH:MM-HH:MM`, none overlapping
    /// another of the same day) and holidays (`YYYY-MM-DD`), errors at the value.
    fn schedule(&self, raw: &RawSchedule) -> Result<Arc<Schedule>, ConfigError> {
        if raw.name.get_ref().trim().is_empty() {
            return Err(self.err(Some(raw.name.span()), "`name` must not be empty"));
        }
        let written = [
            &raw.mon, &raw.tue, &raw.wed, &raw.thu, &raw.fri, &raw.sat, &raw.sun,
        ];
        let mut days: [Vec<Interval>; 7] = Default::default();
        for (d, items) in written.iter().enumerate() {
            let mut seen: Vec<(Interval, &Spanned<String>)> = Vec::new();
            for text in items.iter() {
                let iv = Interval::parse(text.get_ref())
                    .map_err(|e| self.err(Some(text.span()), e.to_string()))?;
                if let Some((_, other)) = seen
                    .iter()
                    .find(|(o, _)| o.start < iv.end && iv.start < o.end)
                {
                    return Err(self.err(
                        Some(text.span()),
                        format!(
                            "interval `{}` overlaps `{}` on `{}`",
                            text.get_ref(),
                            other.get_ref(),
                            DAY_KEYS[d]
                        ),
                    ));
                }
                seen.push((iv, text));
            }
            days[d] = seen.into_iter().map(|(iv, _)| iv).collect();
        }
        let mut holidays = Vec::new();
        for h in &raw.holidays {
            let date: jiff::civil::Date = h.get_ref().trim().parse().map_err(|_| {
                self.err(
                    Some(h.span()),
                    format!("`{}` is not a date `YYYY-MM-DD`", h.get_ref()),
                )
            })?;
            holidays.push(date);
        }
        Schedule::new(
            raw.name.get_ref().clone(),
            raw.timezone.get_ref().trim(),
            days,
            holidays,
        )
        .map(Arc::new)
        .map_err(|e| self.err(Some(raw.timezone.span()), e.to_string()))
    }
}

/// `` `a`, `b`, `c` ``.
fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn raw_id_text(id: &RawId) -> String {
    match id {
        RawId::Int(i) => i.to_string(),
        RawId::Str(s) => s.trim().to_string(),
    }
}

/// A provider's keys of one `[[integration]]` table, given to its
/// [`Provider::parse_settings`]: typed reads with `"${NAME}"` expansion, and errors at
/// the right place of the file. Keys of other providers were refused before.
pub struct SettingsTable<'a> {
    cx: &'a Ctx<'a>,
    provider: &'static str,
    span: Range<usize>,
    keys: &'a RawTable,
}

impl SettingsTable<'_> {
    /// The value of `key` as written, with its position.
    pub fn get(&self, key: &str) -> Option<&Spanned<toml::Value>> {
        self.keys
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }

    /// An error at `span` (a value's), or at the whole table when `None`.
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        self.cx
            .err(Some(span.unwrap_or_else(|| self.span.clone())), message)
    }

    /// The error for a required key that is not there.
    pub fn missing(&self, key: &str) -> ConfigError {
        self.error(
            None,
            format!(
                "missing required field `{key}` for provider `{}`",
                self.provider
            ),
        )
    }

    fn spanned_string(&self, key: &str) -> Result<Option<Spanned<String>>, ConfigError> {
        self.get(key)
            .map(|v| Ok(Spanned::new(v.span(), self.cx.typed::<String>(v)?)))
            .transpose()
    }

    /// An optional string, `"${NAME}"` expanded.
    pub fn optional_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.spanned_string(key)?
            .map(|v| self.cx.string(&v, key))
            .transpose()
    }

    /// A required, non-empty string, `"${NAME}"` expanded.
    pub fn required_string(&self, key: &str) -> Result<String, ConfigError> {
        let Some(v) = self.spanned_string(key)? else {
            return Err(self.missing(key));
        };
        let s = self.cx.string(&v, key)?;
        if s.trim().is_empty() {
            return Err(self.error(Some(v.span()), format!("`{key}` must not be empty")));
        }
        Ok(s)
    }

    /// A required credential ([`SettingsTable::required_string`] in a [`Secret`]).
    pub fn required_secret(&self, key: &str) -> Result<Secret, ConfigError> {
        self.required_string(key).map(Secret)
    }

    /// An optional credential.
    pub fn optional_secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        Ok(self.optional_string(key)?.map(Secret))
    }

    /// An optional boolean.
    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(key).map(|v| self.cx.typed::<bool>(v)).transpose()
    }

    /// An optional `http://` or `https://` URL, without its trailing `/`.
    pub fn optional_url(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(v) = self.spanned_string(key)? else {
            return Ok(None);
        };
        let s = self.cx.string(&v, key)?;
        let t = s.trim().trim_end_matches('/').to_string();
        if !(t.starts_with("http://") || t.starts_with("https://")) || t.len() <= "https://".len() {
            return Err(self.error(
                Some(v.span()),
                format!("`{key}` must be an http:// or https:// URL"),
            ));
        }
        Ok(Some(t))
    }

    /// A required URL.
    pub fn required_url(&self, key: &str) -> Result<String, ConfigError> {
        self.optional_url(key)?.ok_or_else(|| self.missing(key))
    }

    /// A required id written as an integer or a string (`"${NAME}"` expanded), as text.
    pub fn required_id(&self, key: &str) -> Result<String, ConfigError> {
        let Some(v) = self.get(key) else {
            return Err(self.missing(key));
        };
        let t = raw_id_text(&self.cx.typed::<RawId>(v)?);
        let t = match t.strip_prefix("${").and_then(|x| x.strip_suffix('}')) {
            Some(var) => std::env::var(var).map_err(|_| {
                self.error(
                    Some(v.span()),
                    format!("environment variable `{var}` (for `{key}`) is not set"),
                )
            })?,
            None => t,
        };
        if t.is_empty() {
            return Err(self.error(Some(v.span()), format!("`{key}` must not be empty")));
        }
        Ok(t)
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
            schedules: Vec::new(),
        }
    }

    /// Reads and parses an integrations file; the error names the file.
    pub fn load(path: &Path) -> Result<Integrations, ConfigError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::at("", &name, None, format!("cannot read file: {e}")))?;
        Integrations::from_toml_str(&src, &name)
    }

    /// Parses integrations from TOML text; `name` labels positions in errors. Each
    /// provider reads its own keys ([`Provider::parse_settings`]).
    pub fn from_toml_str(src: &str, name: &str) -> Result<Integrations, ConfigError> {
        let cx = Ctx { src, name };
        let raw: RawFile = toml::from_str(src).map_err(|e| {
            let msg = e.message().trim().to_string();
            cx.err(e.span(), msg)
        })?;
        let kinds = crate::providers::all();
        let mut known: Vec<&str> = COMMON_KEYS.to_vec();
        for k in kinds.iter().flat_map(|k| k.provider().settings_keys()) {
            if !known.contains(k) {
                known.push(k);
            }
        }
        let commons = raw
            .integration
            .iter()
            .map(|t| cx.common(t, &known))
            .collect::<Result<Vec<_>, _>>()?;
        let schedules = raw
            .schedule
            .iter()
            .map(|s| cx.schedule(s.get_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, s) in raw.schedule.iter().enumerate() {
            let name = s.get_ref().name.get_ref();
            if let Some(first) = raw.schedule[..i]
                .iter()
                .find(|f| f.get_ref().name.get_ref() == name)
            {
                let (l, c) = line_col(src, first.get_ref().name.span().start);
                return Err(cx.err(
                    Some(s.get_ref().name.span()),
                    format!("duplicate schedule `{name}` (first defined at {l}:{c})"),
                ));
            }
        }
        let mut items = Vec::new();
        let mut ids: HashMap<IntegrationId, Range<usize>> = HashMap::new();
        for (entry, r) in raw.integration.iter().zip(commons) {
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
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                cx.err(
                    Some(r.provider.span()),
                    format!(
                        "unknown provider `{}`; expected one of {}",
                        r.provider.get_ref(),
                        quoted_list(&names)
                    ),
                )
            })?;
            let own = provider.provider().settings_keys();
            // Keys that belong to another provider are as wrong as unknown ones.
            for (k, v) in entry.get_ref() {
                let key = k.get_ref().as_str();
                if !COMMON_KEYS.contains(&key) && !own.contains(&key) {
                    return Err(cx.err(
                        Some(v.span().start..v.span().start + 1),
                        format!(
                            "`{key}` is not a setting of provider `{provider}` (expected: {})",
                            quoted_list(own)
                        ),
                    ));
                }
            }
            let table = SettingsTable {
                cx: &cx,
                provider: provider.as_str(),
                span: entry.span(),
                keys: entry.get_ref(),
            };
            let settings = provider.provider().parse_settings(&table)?;
            let schedule = match &r.schedule {
                None => None,
                Some(name) => Some(
                    schedules
                        .iter()
                        .find(|s| &s.name == name.get_ref())
                        .cloned()
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                schedules.iter().map(|s| s.name.as_str()).collect();
                            cx.err(
                                Some(name.span()),
                                if known.is_empty() {
                                    format!(
                                        "unknown schedule `{}`: the file has no [[schedule]]",
                                        name.get_ref()
                                    )
                                } else {
                                    format!(
                                        "unknown schedule `{}`; expected one of {}",
                                        name.get_ref(),
                                        quoted_list(&known)
                                    )
                                },
                            )
                        })?,
                ),
            };
            items.push(Integration {
                id,
                provider,
                wait_timeout_s: r.wait_timeout_s,
                user_inactivity_timeout_s: r.user_inactivity_timeout_s,
                agent_reply_timeout_s: r.agent_reply_timeout_s,
                schedule,
                settings,
            });
        }
        Ok(Integrations { items, schedules })
    }

    /// The integration a flow's `integration_id` names, if configured.
    pub fn get(&self, id: &IntegrationId) -> Option<&Integration> {
        self.items.iter().find(|i| &i.id == id)
    }

    /// Looks up by the raw JSON value of `parameters.integration_id`.
    pub fn get_json(&self, id: &serde_json::Value) -> Option<&Integration> {
        IntegrationId::from_json(id).and_then(|id| self.get(&id))
    }

    /// The `[[schedule]]` tables, in file order.
    pub fn schedules(&self) -> impl Iterator<Item = &Arc<Schedule>> {
        self.schedules.iter()
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

    /// Every credential of every integration (each provider's `secrets()`), for the
    /// [`crate::redact`] policy to hide wherever it appears.
    pub fn secret_values(&self) -> Vec<String> {
        self.items
            .iter()
            .flat_map(|i| crate::providers::provider(i.provider).secrets(&i.settings))
            .collect()
    }
}
