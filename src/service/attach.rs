//! Attachments on the relay: the `attachments` of `POST …/messages` (checked against the
//! provider, decoded or fetched), and the signed, expiring `/files/…` URLs through which
//! the builder downloads an agent's file the provider keeps behind its credentials.
//!
//! Order of the checks, so a refusal leaves nothing half-sent: the shape of every
//! attachment, then every content type and declared size against the provider, then
//! the bytes (base64 decoded, or a `url` fetched through the `http_request` guard with
//! the provider's size limit), and only then the provider calls.

use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::actions::HttpGuard;
use crate::providers::attachments::{
    bare_type, AttachmentRefusal, AttachmentRule, OutAttachment, UserMessage,
};

/// How long a `/files/…` URL handed to the builder stays valid: long enough for the
/// outbox to deliver the event after the builder was down for a while.
pub const FILE_URL_TTL_MS: i64 = 24 * 3600 * 1000;

/// One attachment as the builder sent it, before its bytes are in hand.
#[derive(Debug, Clone)]
pub struct AttachmentInput {
    /// `name`.
    pub name: String,
    /// `content_type`, bare and lower case.
    pub content_type: String,
    /// `data_base64` or `url`.
    pub source: Source,
    /// `size`, when declared (checked before anything is fetched).
    pub size: Option<u64>,
}

/// Where an attachment's bytes are.
#[derive(Debug, Clone)]
pub enum Source {
    /// Inline, base64.
    Inline(String),
    /// To fetch (or pass on as a link).
    Url(String),
}

/// Why an attachment cannot be relayed; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The provider cannot carry it (`415`/`413 unsupported_attachment`).
    #[error(transparent)]
    Refused(#[from] AttachmentRefusal),
    /// The request is not the documented shape (`400 bad_request`).
    #[error("{0}")]
    Bad(String),
    /// The `url` may not be fetched: the `http_request` guard refused its address
    /// (`400 attachment_url_forbidden`).
    #[error("attachments[{index}].url: {why}")]
    Forbidden {
        /// Which attachment.
        index: usize,
        /// The guard's reason.
        why: String,
    },
    /// The `url` could not be fetched (`502 attachment_fetch_failed`).
    #[error("attachments[{index}].url could not be fetched: {why}")]
    Fetch {
        /// Which attachment.
        index: usize,
        /// What went wrong.
        why: String,
    },
}

/// Reads `attachments` (an array of objects) from a `/messages` body.
pub fn parse_inputs(v: &Value) -> Result<Vec<AttachmentInput>, AttachError> {
    let Value::Array(items) = v else {
        return Err(AttachError::Bad("`attachments` must be an array".into()));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(AttachError::Bad(format!(
                "attachments[{i}] must be an object"
            )));
        };
        const KNOWN: [&str; 5] = ["name", "content_type", "data_base64", "url", "size"];
        if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(AttachError::Bad(format!(
                "attachments[{i}]: unknown field `{k}`; expected one of: {}",
                KNOWN.join(", ")
            )));
        }
        let string = |k: &str| -> Result<Option<String>, AttachError> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(AttachError::Bad(format!(
                    "attachments[{i}].{k} must be a non-empty string"
                ))),
            }
        };
        let name = string("name")?
            .ok_or_else(|| AttachError::Bad(format!("attachments[{i}].name is required")))?;
        let content_type = string("content_type")?.ok_or_else(|| {
            AttachError::Bad(format!("attachments[{i}].content_type is required"))
        })?;
        let source = match (string("data_base64")?, string("url")?) {
            (Some(d), None) => Source::Inline(d),
            (None, Some(u)) => Source::Url(u),
            _ => {
                return Err(AttachError::Bad(format!(
                    "attachments[{i}] needs exactly one of `data_base64` and `url`"
                )))
            }
        };
        let size = match m.get("size") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                AttachError::Bad(format!(
                    "attachments[{i}].size must be a whole number of bytes"
                ))
            })?),
        };
        out.push(AttachmentInput {
            name,
            content_type: bare_type(&content_type),
            source,
            size,
        });
    }
    Ok(out)
}

/// The provider's rule for each input, checking types and declared sizes (nothing is
/// fetched yet). `rule` is the transport's [`AttachmentRule`] lookup.
pub fn check_all(
    inputs: &[AttachmentInput],
    provider: &str,
    rule: impl Fn(&str, &str) -> Result<AttachmentRule, AttachmentRefusal>,
) -> Result<Vec<AttachmentRule>, AttachError> {
    let mut rules = Vec::with_capacity(inputs.len());
    for a in inputs {
        let r = rule(&a.name, &a.content_type)?;
        match (&r, &a.source) {
            (AttachmentRule::Upload { max_bytes, takes }, src) => {
                let size = match src {
                    // 4 base64 characters carry 3 bytes: refused before decoding.
                    Source::Inline(d) => Some(a.size.unwrap_or(0).max(decoded_len(d))),
                    Source::Url(_) => a.size,
                };
                if let Some(size) = size.filter(|s| s > max_bytes) {
                    return Err(AttachmentRefusal::Size {
                        name: a.name.clone(),
                        size,
                        provider: provider.to_string(),
                        takes: takes.clone(),
                    }
                    .into());
                }
            }
            (AttachmentRule::Link, Source::Inline(_)) => {
                return Err(AttachmentRefusal::Type {
                    name: a.name.clone(),
                    content_type: a.content_type.clone(),
                    provider: provider.to_string(),
                    takes: "this type only as a link: send it with `url` instead of `data_base64`"
                        .into(),
                }
                .into())
            }
            (AttachmentRule::Link, Source::Url(_)) => {}
        }
        rules.push(r);
    }
    Ok(rules)
}

fn decoded_len(b64: &str) -> u64 {
    let n = b64.trim_end_matches('=').len() as u64;
    n * 3 / 4
}

/// The bytes of every attachment: base64 decoded, or fetched through `guard` with the
/// provider's size limit (links are passed on unfetched).
pub async fn materialize(
    inputs: Vec<AttachmentInput>,
    rules: &[AttachmentRule],
    provider: &str,
    guard: &HttpGuard,
) -> Result<Vec<OutAttachment>, AttachError> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut client: Option<reqwest::Client> = None;
    for (index, (a, rule)) in inputs.into_iter().zip(rules).enumerate() {
        let (max_bytes, takes) = match rule {
            AttachmentRule::Link => {
                let Source::Url(u) = a.source else {
                    return Err(AttachError::Bad(format!(
                        "attachments[{index}] needs a `url` to be sent as a link"
                    )));
                };
                check_url(&u, guard).map_err(|why| AttachError::Forbidden { index, why })?;
                out.push(OutAttachment {
                    name: a.name,
                    content_type: a.content_type,
                    data: Vec::new(),
                    link: Some(u),
                });
                continue;
            }
            AttachmentRule::Upload { max_bytes, takes } => (*max_bytes, takes.clone()),
        };
        let too_big = |size: u64, name: &str| {
            AttachError::Refused(AttachmentRefusal::Size {
                name: name.to_string(),
                size,
                provider: provider.to_string(),
                takes: takes.clone(),
            })
        };
        let data = match &a.source {
            Source::Inline(d) => base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map_err(|e| {
                    AttachError::Bad(format!(
                        "attachments[{index}].data_base64 is not valid base64 ({})",
                        e.to_string().trim_end_matches('.')
                    ))
                })?,
            Source::Url(u) => {
                let c = match &client {
                    Some(c) => c.clone(),
                    None => {
                        let c =
                            Arc::new(guard.clone())
                                .client()
                                .map_err(|e| AttachError::Fetch {
                                    index,
                                    why: e.to_string(),
                                })?;
                        client = Some(c.clone());
                        c
                    }
                };
                fetch(&c, u, guard, max_bytes, index)
                    .await
                    .map_err(|e| match e {
                        Fetched::TooLarge(n) => too_big(n, &a.name),
                        Fetched::Err(e) => e,
                    })?
            }
        };
        if data.len() as u64 > max_bytes {
            return Err(too_big(data.len() as u64, &a.name));
        }
        out.push(OutAttachment {
            name: a.name,
            content_type: a.content_type,
            data,
            link: None,
        });
    }
    Ok(out)
}

/// A URL's scheme and literal address, checked before anything is sent (names are
/// checked by the guarded client's resolver).
fn check_url(u: &str, guard: &HttpGuard) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{}` URLs are not fetched", url.scheme()));
    }
    guard.check_url(&url).map_err(|f| f.to_string())?;
    Ok(url)
}

enum Fetched {
    TooLarge(u64),
    Err(AttachError),
}

/// GET `u` through the guarded client, streamed: stops as soon as `max_bytes` is passed.
async fn fetch(
    client: &reqwest::Client,
    u: &str,
    guard: &HttpGuard,
    max_bytes: u64,
    index: usize,
) -> Result<Vec<u8>, Fetched> {
    let url =
        check_url(u, guard).map_err(|why| Fetched::Err(AttachError::Forbidden { index, why }))?;
    let mut resp = client
        .get(url)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            Fetched::Err(match crate::actions::http_guard::forbidden_in(&e) {
                Some(f) => AttachError::Forbidden {
                    index,
                    why: f.to_string(),
                },
                None => AttachError::Fetch {
                    index,
                    why: e.without_url().to_string(),
                },
            })
        })?;
    if !resp.status().is_success() {
        return Err(Fetched::Err(AttachError::Fetch {
            index,
            why: format!("the server answered {}", resp.status()),
        }));
    }
    if let Some(n) = resp.content_length().filter(|n| *n > max_bytes) {
        return Err(Fetched::TooLarge(n));
    }
    let mut data = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                data.extend_from_slice(&c);
                if data.len() as u64 > max_bytes {
                    return Err(Fetched::TooLarge(data.len() as u64));
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(Fetched::Err(AttachError::Fetch {
                    index,
                    why: e.without_url().to_string(),
                }))
            }
        }
    }
    Ok(data)
}

/// The user's message as the service relays it.
pub fn user_message(text: Option<String>, attachments: Vec<OutAttachment>) -> UserMessage {
    UserMessage { text, attachments }
}

/// What the timeline keeps of a user's attachments: names, types and sizes, never bytes.
pub fn timeline_view(attachments: &[OutAttachment]) -> Value {
    Value::Array(
        attachments
            .iter()
            .map(|a| {
                json!({"name": a.name, "content_type": a.content_type,
                       "size": a.data.len(), "link": a.link.is_some()})
            })
            .collect(),
    )
}

// ---- signed /files URLs ----------------------------------------------------------------

/// What a `/files/…` token grants: one file of one live chat, until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileGrant {
    /// The live chat (handoff) id.
    pub chat: String,
    /// The provider's path of the file (LivePerson `relativePath`).
    pub path: String,
    /// File name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Expiry, ms since the epoch.
    pub expires_ms: i64,
}

fn mac(secret: &str, payload: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    m.update(b"transbordo-file.");
    m.update(payload.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The token of a grant: `base64url(json).base64url(HMAC-SHA256)`, keyed by the
/// builder's signing secret (the builder already trusts it; nothing else is needed).
pub fn sign_grant(secret: &str, g: &FileGrant) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(serde_json::to_vec(g).unwrap_or_default());
    let sig = b64.encode(mac(secret, &payload));
    format!("{payload}.{sig}")
}

/// Why a `/files/…` token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not a token we signed (`404`: nothing is told about what exists).
    #[error("no such file")]
    Invalid,
    /// Signed, but past its expiry (`410`).
    #[error("this file URL expired; the event's URL is valid for 24 hours")]
    Expired,
}

/// Checks a token's signature (constant time) and expiry.
pub fn verify_grant(secret: &str, token: &str, now_ms: i64) -> Result<FileGrant, GrantError> {
    use subtle::ConstantTimeEq;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, sig) = token.split_once('.').ok_or(GrantError::Invalid)?;
    let given = b64.decode(sig).map_err(|_| GrantError::Invalid)?;
    let want = mac(secret, payload);
    if !bool::from(want.ct_eq(&given)) {
        return Err(GrantError::Invalid);
    }
    let raw = b64.decode(payload).map_err(|_| GrantError::Invalid)?;
    let g: FileGrant = serde_json::from_slice(&raw).map_err(|_| GrantError::Invalid)?;
    if g.expires_ms < now_ms {
        return Err(GrantError::Expired);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip_and_refuse_tampering() {
        let g = FileGrant {
            chat: "h1".into(),
            path: "/v1/x.png".into(),
            name: "x.png".into(),
            content_type: "image/png".into(),
            expires_ms: 2_000,
        };
        let t = sign_grant("k", &g);
        assert_eq!(verify_grant("k", &t, 1_000), Ok(g));
        assert_eq!(verify_grant("other", &t, 1_000), Err(GrantError::Invalid));
        assert_eq!(verify_grant("k", &t, 3_000), Err(GrantError::Expired));
        let forged = format!("{}x", t);
        assert_eq!(verify_grant("k", &forged, 1_000), Err(GrantError::Invalid));
    }

    #[test]
    fn declared_and_inline_sizes_are_checked_before_fetching() {
        let inputs = vec![AttachmentInput {
            name: "a.png".into(),
            content_type: "image/png".into(),
            source: Source::Inline("AAAAAAAA".into()),
            size: None,
        }];
        let rule = |_: &str, _: &str| {
            Ok(AttachmentRule::Upload {
                max_bytes: 5,
                takes: "5 bytes".into(),
            })
        };
        assert!(matches!(
            check_all(&inputs, "P", rule),
            Err(AttachError::Refused(AttachmentRefusal::Size {
                size: 6,
                ..
            }))
        ));
    }
}
