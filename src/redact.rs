//! The one redaction policy: what every output (`render` requests, `--trace`, the `run`
//! document, the service timeline, log fields, error messages) hides, and how.
//!
//! A bottom-level module: it depends on nothing else in the crate, so every layer
//! (flow, actions, providers, interp, service, cli) may use it.
//!
//! # What is hidden
//! Each hidden value is replaced by [`REDACTED`] (`[redacted]`).
//!
//! - **Credential headers** ([`is_secret_header`], case-insensitive): `authorization`,
//!   `proxy-authorization`, `cookie`, `set-cookie`, `x-api-key`, `apikey`, `api-key`, and
//!   any name ending in `-key`, `-token` or `-secret` (except `idempotency-key`, a
//!   request id), and any name that is a secret key (below).
//! - **Secret keys** ([`is_secret_key`], case-insensitive) in JSON bodies (at any depth),
//!   form bodies and URL query strings: any name containing `password`, `passwd`,
//!   `secret`, `token`, `api_key` or `apikey` (so `client_secret`, `access_token`,
//!   `refresh_token`, … too), plus `authorization`. A `null` value stays `null` (nothing
//!   to hide, and it shows the field was unset).
//! - **URLs** ([`url`]): query values under secret keys, and the password of a
//!   `user:password@` part.
//! - **Configured secret values, wherever they appear** ([`register_secrets`]): the
//!   integrations' credentials (each provider's `secrets()`), the service's API tokens
//!   and the builder's signing secret. They are replaced inside any string: a URL path,
//!   a message text, an error message, a header of any name. Values shorter than
//!   [`MIN_SECRET_LEN`] are not registered (replacing two letters everywhere would hide
//!   ordinary text and protect nothing).
//!
//! Object keys are printed as they are (they name fields; flows do not put secrets in
//! keys).
//!
//! # Why one process-wide set of secret values
//! Log fields and error messages are written far from where the configuration is known;
//! a set every layer can read means no output needs a handle threaded to it. The set only
//! grows: hiding a secret of a configuration no longer used costs nothing.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The marker written wherever a secret would be.
pub const REDACTED: &str = "[redacted]";

/// Configured secret values shorter than this are not registered.
pub const MIN_SECRET_LEN: usize = 4;

static SECRETS: RwLock<Option<Arc<[String]>>> = RwLock::new(None);

/// Adds configured secret values (credentials, tokens) to the set hidden everywhere.
/// Values shorter than [`MIN_SECRET_LEN`] are ignored; registering twice is harmless.
pub fn register_secrets<I, S>(values: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let new: Vec<String> = values
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    if new.is_empty() {
        return;
    }
    let mut guard = match SECRETS.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let mut all: Vec<String> = guard.as_deref().map(<[String]>::to_vec).unwrap_or_default();
    for s in new {
        // A secret in a URL travels percent-encoded: hide that spelling too.
        let encoded = percent_encode(&s);
        for v in [
            Some(s),
            (encoded.len() >= MIN_SECRET_LEN).then_some(encoded),
        ]
        .into_iter()
        .flatten()
        {
            if !all.contains(&v) {
                all.push(v);
            }
        }
    }
    // Longest first: a secret that contains another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    *guard = Some(all.into());
}

/// The policy with the secret values registered so far. Take one per document: it
/// holds a snapshot, so a large document does not lock once per string.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    secrets: Option<Arc<[String]>>,
    extra: Vec<String>,
}

impl Policy {
    /// The registered secret values as they are now.
    pub fn current() -> Policy {
        let secrets = match SECRETS.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        Policy {
            secrets,
            extra: Vec::new(),
        }
    }

    /// Also hides these values (secrets known only here, e.g. one integration's).
    pub fn with_values<I, S>(mut self, values: I) -> Policy
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.extra.extend(
            values
                .into_iter()
                .map(|s| s.as_ref().to_string())
                .filter(|s| s.len() >= MIN_SECRET_LEN),
        );
        self.extra.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self
    }

    fn values(&self) -> impl Iterator<Item = &str> {
        self.extra
            .iter()
            .chain(self.secrets.iter().flat_map(|s| s.iter()))
            .map(String::as_str)
    }

    /// `s` with every secret value replaced (borrowed when there is none).
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(s);
        for sec in self.values() {
            if out.contains(sec) {
                out = Cow::Owned(out.replace(sec, REDACTED));
            }
        }
        out
    }

    /// A string value: a URL is redacted as a URL ([`Policy::url`]), a form-encoded
    /// string as a form, anything else for secret values only.
    pub fn string<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if looks_like_url(s) {
            return Cow::Owned(self.url(s));
        }
        if looks_like_form(s) {
            if let Cow::Owned(f) = query(s) {
                return Cow::Owned(self.text(&f).into_owned());
            }
        }
        self.text(s)
    }

    /// A URL with secret query values, the `user:password@` password and every secret
    /// value hidden. Works on templates too (`https://{service}/x?token=…`): no parsing
    /// beyond `?`, `&`, `=` and `#`.
    pub fn url(&self, u: &str) -> String {
        let (before_fragment, fragment) = match u.find('#') {
            Some(i) => u.split_at(i),
            None => (u, ""),
        };
        let (base, q) = match before_fragment.find('?') {
            Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
            None => (before_fragment, None),
        };
        let mut out = userinfo(base).into_owned();
        if let Some(q) = q {
            out.push('?');
            out.push_str(&query(q));
        }
        out.push_str(fragment);
        self.text(&out).into_owned()
    }

    /// A headers object: credential headers hidden, other values cleaned of secret
    /// values.
    pub fn headers(&self, headers: &Value) -> Value {
        match headers {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = if is_secret_header(k) && !v.is_null() {
                            Value::String(REDACTED.into())
                        } else {
                            self.json(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => self.json(other),
        }
    }

    /// A JSON value with the whole policy applied (a copy; [`Policy::view`] serializes
    /// without one).
    pub fn json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => match self.string(s) {
                Cow::Borrowed(_) => v.clone(),
                Cow::Owned(o) => Value::String(o),
            },
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let x = if is_secret_name(k) && !x.is_null() {
                            Value::String(REDACTED.into())
                        } else {
                            self.json(x)
                        };
                        (k.clone(), x)
                    })
                    .collect::<Map<_, _>>(),
            ),
            other => other.clone(),
        }
    }

    /// Serializes `v` with the policy applied, without copying it first.
    pub fn view<'a>(&'a self, v: &'a Value) -> View<'a> {
        View { policy: self, v }
    }
}

/// A JSON value that serializes with the [`Policy`] applied ([`Policy::view`]).
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    policy: &'a Policy,
    v: &'a Value,
}

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.v {
            Value::String(x) => s.serialize_str(&self.policy.string(x)),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(&self.policy.view(x))?;
                }
                seq.end()
            }
            Value::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, x) in m {
                    if is_secret_name(k) && !x.is_null() {
                        map.serialize_entry(k, REDACTED)?;
                    } else {
                        map.serialize_entry(k, &self.policy.view(x))?;
                    }
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A header whose value is a credential (see the module documentation).
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // A request id, not a credential: hiding it would hide which request was retried.
    if n == "idempotency-key" {
        return false;
    }
    matches!(
        n.as_str(),
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "set-cookie"
            | "x-api-key"
            | "apikey"
            | "api-key"
    ) || n.ends_with("-key")
        || n.ends_with("-token")
        || n.ends_with("-secret")
        || is_secret_key(&n)
}

/// A body or query key whose value is a credential (see the module documentation).
pub fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || ["password", "passwd", "secret", "token", "api_key", "apikey"]
            .iter()
            .any(|w| n.contains(w))
}

/// Either: inside JSON, a key may hold a header map's entries as well as body fields,
/// so both rules apply.
fn is_secret_name(name: &str) -> bool {
    is_secret_header(name)
}

/// `text` with the registered secret values hidden (error messages, log fields).
pub fn text(s: &str) -> String {
    Policy::current().text(s).into_owned()
}

/// A URL with the policy applied (log fields, error messages).
pub fn url(u: &str) -> String {
    Policy::current().url(u)
}

/// A JSON value with the policy applied.
pub fn json(v: &Value) -> Value {
    Policy::current().json(v)
}

/// A headers object with the policy applied.
pub fn headers(v: &Value) -> Value {
    Policy::current().headers(v)
}

fn looks_like_url(s: &str) -> bool {
    let starts = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    starts("http://") || starts("https://")
}

/// `a=b&c=d` with no spaces: a form body or a bare query string.
fn looks_like_form(s: &str) -> bool {
    s.contains('=')
        && !s.contains(char::is_whitespace)
        && s.split('&')
            .all(|p| p.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
}

/// A query string (or form body) with the values of secret keys hidden; borrowed when
/// nothing changed.
fn query(q: &str) -> Cow<'_, str> {
    let mut changed = false;
    let parts: Vec<Cow<'_, str>> = q
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !v.is_empty() && is_secret_key(&percent_decode(k)) => {
                changed = true;
                Cow::Owned(format!("{k}={REDACTED}"))
            }
            _ => Cow::Borrowed(p),
        })
        .collect();
    if changed {
        Cow::Owned(parts.join("&"))
    } else {
        Cow::Borrowed(q)
    }
}

/// `scheme://user:password@host…` with the password hidden.
fn userinfo(base: &str) -> Cow<'_, str> {
    let Some(start) = base.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(base);
    };
    let authority_end = base[start..].find('/').map_or(base.len(), |i| start + i);
    let authority = &base[start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(base);
    };
    let Some(colon) = authority[..at].find(':') else {
        return Cow::Borrowed(base);
    };
    Cow::Owned(format!(
        "{}{}{}",
        &base[..start + colon + 1],
        REDACTED,
        &base[start + at..]
    ))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_keys_urls_and_values() {
        let p = Policy::default().with_values(["S3CR3T-VALUE"]);
        assert!(is_secret_header("Proxy-Authorization"));
        assert!(is_secret_header("X-Session-Token"));
        assert!(!is_secret_header("X-Channel"));
        assert!(is_secret_key("client_secret"));
        assert!(is_secret_key("PASSWD"));
        assert!(!is_secret_key("name"));
        assert_eq!(
            p.url("https://u:pw@h.example/a/S3CR3T-VALUE?api_key=1&q=x&Access%5FToken=2#f"),
            "https://u:[redacted]@h.example/a/[redacted]?api_key=[redacted]&q=x&Access%5FToken=[redacted]#f"
        );
        assert_eq!(
            p.json(&json!({"a": {"Password": "x", "token": null}, "m": "say S3CR3T-VALUE", "f": "user=a&password=b"})),
            json!({"a": {"Password": "[redacted]", "token": null}, "m": "say [redacted]", "f": "user=a&password=[redacted]"})
        );
        let v = json!({"Cookie": "c=1", "list": ["https://x.example/?secret=1"]});
        assert_eq!(
            serde_json::to_value(p.view(&v)).unwrap_or_default(),
            p.json(&v)
        );
        assert_eq!(p.text("nothing here"), Cow::Borrowed("nothing here"));
    }
}
