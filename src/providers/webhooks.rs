//! Provider webhook bodies → [`ProviderEvent`]s. Parsing only (authentication is in
//! [`super::auth`], effects in the service's `lifecycle`). Unknown event types are ignored
//! (an empty list), a body that is not the documented shape is a [`ParseError`] (400).
//!
//! ## LivePerson (`POST /webhooks/liveperson/{integration_id}`)
//! - `ms.MessagingEventNotification`: each change whose `originatorMetadata.role` is
//!   `ASSIGNED_AGENT` (or `AGENT`/`MANAGER`) with a `ContentEvent` of `text/plain` is an
//!   agent message (CONSUMER echoes and other roles/events ignored). Dedup key
//!   `ms:<conversationId|dialogId>:<sequence>`. From the same roles, a `ContentEvent` of
//!   `hosted/file` (`message.relativePath`, `caption`, `fileType`) is an agent file (the
//!   service downloads it through `ms.GenerateURLForDownloadFile`), a `RichContentEvent`
//!   (`content`, else `message`) is structured content, and a `ChatStateEvent` is the
//!   agent typing (`COMPOSING`) or not (any other state).
//! - `cqm.ExConversationChangeNotification`, change `UPSERT`: `state`/`stage` `CLOSE` →
//!   the conversation ended, with `closeReason` mapped as: `AGENT` → `agent_closed`,
//!   `CONSUMER` → `user_closed`, anything else (`SYSTEM`, `MANAGER`, missing, unknown)
//!   → [`EndHint::ProviderClosed`] (`agent_closed` when an agent had joined, `error`
//!   while still waiting). Open with an `ASSIGNED_AGENT` participant → agent joined.
//!   Change `DELETE` → `error` (the provider lost it). `metaDataLastUpdateTs` orders the
//!   updates (older ones dropped); dedup key `cqm:<convId>:<ts>:<state>`.
//!
//! ## Zendesk (`POST /webhooks/zendesk/{integration_id}`)
//! - Event-subscribed `zen:event-type:ticket.status_changed` (ticket `detail.id`, status
//!   `detail.status` or `event.current`): `SOLVED`/`CLOSED` → `agent_closed`;
//!   `OPEN`/`PENDING`/`HOLD` with a `detail.assignee_id` → agent joined. Dedup by `id`.
//! - Event-subscribed `zen:event-type:ticket.comment_added`: the comment is
//!   `event.comment` (or `detail.comment`) `{body, is_public, author:{id, name, is_staff
//!   | role}}`; a public comment by staff (`is_staff: true` or role `agent`/`admin`) is
//!   an agent message, with its `attachments` (`file_name`, `content_url`, `content_type`,
//!   `size`) when it has any. Private notes and requester comments are ignored.
//! - Trigger-connected bodies (`{"ticket_id","status","assignee_id"?,"event_id"?}`):
//!   the same status rules; dedup by `event_id`, else `<ticket_id>:<status>`.
//!
//! ## ALTU SDK connector (`POST /webhooks/altu/{integration_id}`)
//! The envelope of `docs/connector-protocol.md` §2/§5: `{"event","event_id",
//! "conversation_id" (our handoff id),"platform_conversation_id","data"}`, all but `data`
//! required. Events: `AGENT_JOINED` (`data.agent {id,name}`), `AGENT_MESSAGE`
//! (`data.text`, `data.agent`, v1.2 `data.attachments [{name,content_type,size?,url}]`,
//! `text` optional with attachments), v1.2 `AGENT_TYPING` (`data.typing`), `AGENT_CLOSED` → `agent_closed` (`data.reason`, free
//! text, ignored), `USER_CLOSED` → `user_closed`, `ERROR` → `error`. For drafts of the
//! protocol, `text` / `agent` / `reason` are also read at the top level when `data` lacks
//! them. An unknown `event` is malformed (400: new events come only with a new protocol
//! version); unknown fields are ignored. Dedup by `event_id`.

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::auth::AuthError;
use crate::providers::attachments::{content_type_for, AgentContent, InAttachment};
use crate::providers::{Integration, Secret, SettingsValue};

/// How a provider says a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndHint {
    /// A definite status.
    Status(EndStatus),
    /// Closed by the platform (not the agent, not the user): `agent_closed` when an
    /// agent had joined, `error` while still waiting.
    ProviderClosed,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// An agent took the conversation.
    AgentJoined(AgentInfo),
    /// An agent wrote to the user.
    AgentMessage {
        /// The text.
        text: String,
        /// Who.
        agent: AgentInfo,
    },
    /// The provider conversation ended.
    Ended(EndHint),
    /// An agent message with files and/or structured content (`text` may be empty).
    AgentContent {
        /// The text (a file's caption), possibly empty.
        text: String,
        /// Who.
        agent: AgentInfo,
        /// Files and structured content.
        content: AgentContent,
    },
    /// The agent started or stopped typing (best-effort: never stored).
    AgentTyping {
        /// Typing now.
        typing: bool,
        /// Who.
        agent: AgentInfo,
    },
}

/// One event about one provider conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEvent {
    /// The provider's conversation (ticket) id.
    pub provider_conversation_id: String,
    /// What happened.
    pub kind: EventKind,
    /// Dedup key (unique per provider event).
    pub dedup_id: Option<String>,
    /// Ordering timestamp (LivePerson `metaDataLastUpdateTs`).
    pub provider_ts: Option<i64>,
}

/// A body that is not the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed webhook body: {0}")]
pub struct ParseError(pub String);

fn bad(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

fn json_body(body: &[u8]) -> Result<Value, ParseError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))
}

/// A string or a number, as a string (ids come both ways).
fn id_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn agent_from(v: Option<&Value>) -> AgentInfo {
    let Some(v) = v else {
        return AgentInfo::default();
    };
    AgentInfo {
        id: id_str(v.get("id")),
        name: v.get("name").and_then(Value::as_str).map(str::to_string),
    }
}

/// LivePerson notification body → events.
pub fn parse_liveperson(body: &[u8]) -> Result<Vec<ProviderEvent>, ParseError> {
    let v = json_body(body)?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing `type`"))?;
    let changes = v
        .get("body")
        .and_then(|b| b.get("changes"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing `body.changes` array"))?;
    let mut out = Vec::new();
    match kind {
        "ms.MessagingEventNotification" => {
            for c in changes {
                let role = c
                    .get("originatorMetadata")
                    .and_then(|m| m.get("role"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !matches!(role, "ASSIGNED_AGENT" | "AGENT" | "MANAGER") {
                    continue;
                }
                let Some(ev) = c.get("event") else { continue };
                let agent = || AgentInfo {
                    id: id_str(c.get("originatorId"))
                        .or_else(|| id_str(c.get("originatorMetadata").and_then(|m| m.get("id")))),
                    name: None,
                };
                let kind = match ev.get("type").and_then(Value::as_str) {
                    Some("ContentEvent") => {
                        let ct = ev
                            .get("contentType")
                            .and_then(Value::as_str)
                            .unwrap_or("text/plain");
                        match (ct, ev.get("message")) {
                            ("text/plain", Some(Value::String(text))) => EventKind::AgentMessage {
                                text: text.clone(),
                                agent: agent(),
                            },
                            ("hosted/file", Some(m @ Value::Object(_))) => {
                                let Some(path) = m.get("relativePath").and_then(Value::as_str)
                                else {
                                    continue;
                                };
                                let caption =
                                    m.get("caption").and_then(Value::as_str).unwrap_or("");
                                let base = path.rsplit('/').next().unwrap_or(path);
                                let name = base.to_string();
                                let content_type = match m.get("fileType").and_then(Value::as_str) {
                                    Some(t) => content_type_for(&format!("f.{t}")),
                                    None => content_type_for(&name),
                                };
                                EventKind::AgentContent {
                                    text: caption.to_string(),
                                    agent: agent(),
                                    content: AgentContent {
                                        attachments: vec![InAttachment {
                                            name,
                                            content_type: content_type.to_string(),
                                            size: None,
                                            url: String::new(),
                                            provider_path: Some(path.to_string()),
                                        }],
                                        rich_content: None,
                                    },
                                }
                            }
                            _ => continue,
                        }
                    }
                    // Agents and bots publish `content`; the schema says `message`.
                    Some("RichContentEvent") => {
                        let Some(rich) = ev.get("content").or_else(|| ev.get("message")) else {
                            continue;
                        };
                        EventKind::AgentContent {
                            text: String::new(),
                            agent: agent(),
                            content: AgentContent {
                                attachments: vec![],
                                rich_content: Some(rich.clone()),
                            },
                        }
                    }
                    Some("ChatStateEvent") => EventKind::AgentTyping {
                        typing: ev.get("chatState").and_then(Value::as_str) == Some("COMPOSING"),
                        agent: agent(),
                    },
                    _ => continue,
                };
                let conv = id_str(c.get("conversationId"))
                    .or_else(|| id_str(c.get("dialogId")))
                    .ok_or_else(|| bad("message change without `conversationId`/`dialogId`"))?;
                let seq = id_str(c.get("sequence"));
                out.push(ProviderEvent {
                    dedup_id: seq.map(|s| format!("ms:{conv}:{s}")),
                    provider_conversation_id: conv,
                    kind,
                    provider_ts: None,
                });
            }
        }
        "cqm.ExConversationChangeNotification" => {
            for c in changes {
                let ctype = c.get("type").and_then(Value::as_str).unwrap_or("");
                let Some(result) = c.get("result") else {
                    return Err(bad("conversation change without `result`"));
                };
                let conv = id_str(result.get("convId"))
                    .ok_or_else(|| bad("conversation change without `result.convId`"))?;
                let details = result.get("conversationDetails");
                let d = |k: &str| details.and_then(|x| x.get(k));
                let ts = d("metaDataLastUpdateTs").and_then(Value::as_i64);
                let state = d("state").and_then(Value::as_str).unwrap_or("");
                let stage = d("stage").and_then(Value::as_str).unwrap_or("");
                let event = match ctype {
                    "DELETE" => Some(EventKind::Ended(EndHint::Status(EndStatus::Error))),
                    "UPSERT" if state == "CLOSE" || stage == "CLOSE" => {
                        let reason = d("closeReason").and_then(Value::as_str).unwrap_or("");
                        Some(EventKind::Ended(match reason {
                            "AGENT" => EndHint::Status(EndStatus::AgentClosed),
                            "CONSUMER" => EndHint::Status(EndStatus::UserClosed),
                            _ => EndHint::ProviderClosed,
                        }))
                    }
                    "UPSERT" => d("participants")
                        .and_then(Value::as_array)
                        .and_then(|ps| {
                            ps.iter().find(|p| {
                                p.get("role").and_then(Value::as_str) == Some("ASSIGNED_AGENT")
                            })
                        })
                        .map(|p| {
                            EventKind::AgentJoined(AgentInfo {
                                id: id_str(p.get("id")),
                                name: None,
                            })
                        }),
                    _ => None,
                };
                if let Some(kind) = event {
                    out.push(ProviderEvent {
                        dedup_id: Some(format!(
                            "cqm:{conv}:{}:{ctype}:{state}",
                            ts.map(|t| t.to_string()).unwrap_or_default()
                        )),
                        provider_conversation_id: conv,
                        kind,
                        provider_ts: ts,
                    });
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

fn zendesk_status(
    ticket: String,
    status: &str,
    assignee: Option<String>,
    dedup: String,
) -> Option<ProviderEvent> {
    let kind = match status.to_ascii_lowercase().as_str() {
        "solved" | "closed" => EventKind::Ended(EndHint::Status(EndStatus::AgentClosed)),
        "open" | "pending" | "hold" if assignee.is_some() => EventKind::AgentJoined(AgentInfo {
            id: assignee,
            name: None,
        }),
        _ => return None,
    };
    Some(ProviderEvent {
        provider_conversation_id: ticket,
        kind,
        dedup_id: Some(dedup),
        provider_ts: None,
    })
}

/// Zendesk webhook body (event-subscribed or trigger template) → events.
pub fn parse_zendesk(body: &[u8]) -> Result<Vec<ProviderEvent>, ParseError> {
    let v = json_body(body)?;
    if !v.is_object() {
        return Err(bad("expected a JSON object"));
    }
    let assignee_of = |x: Option<&Value>| id_str(x.and_then(|d| d.get("assignee_id")));
    match v.get("type").and_then(Value::as_str) {
        Some("zen:event-type:ticket.status_changed") => {
            let detail = v.get("detail").ok_or_else(|| bad("missing `detail`"))?;
            let ticket = id_str(detail.get("id")).ok_or_else(|| bad("missing `detail.id`"))?;
            let status = detail
                .get("status")
                .and_then(Value::as_str)
                .or_else(|| {
                    v.get("event")
                        .and_then(|e| e.get("current"))
                        .and_then(Value::as_str)
                })
                .ok_or_else(|| bad("missing `detail.status`"))?;
            let dedup = id_str(v.get("id")).unwrap_or_else(|| format!("{ticket}:{status}"));
            Ok(
                zendesk_status(ticket.clone(), status, assignee_of(Some(detail)), dedup)
                    .into_iter()
                    .collect(),
            )
        }
        Some("zen:event-type:ticket.comment_added") => {
            let detail = v.get("detail").ok_or_else(|| bad("missing `detail`"))?;
            let ticket = id_str(detail.get("id"))
                .or_else(|| id_str(detail.get("ticket_id")))
                .ok_or_else(|| bad("missing `detail.id`"))?;
            let comment = v
                .get("event")
                .and_then(|e| e.get("comment"))
                .or_else(|| detail.get("comment"))
                .ok_or_else(|| bad("missing `event.comment`"))?;
            let text = comment
                .get("body")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("missing `comment.body`"))?;
            let public = comment
                .get("is_public")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let author = comment.get("author");
            let staff = author
                .and_then(|a| a.get("is_staff"))
                .and_then(Value::as_bool)
                == Some(true)
                || matches!(
                    author.and_then(|a| a.get("role")).and_then(Value::as_str),
                    Some("agent" | "admin")
                );
            if !public || !staff {
                return Ok(vec![]);
            }
            let dedup = id_str(v.get("id"))
                .or_else(|| id_str(comment.get("id")).map(|c| format!("comment:{c}")))
                .ok_or_else(|| bad("missing event `id`"))?;
            let attachments = zendesk_attachments(comment.get("attachments"));
            let kind = if attachments.is_empty() {
                EventKind::AgentMessage {
                    text: text.to_string(),
                    agent: agent_from(author),
                }
            } else {
                EventKind::AgentContent {
                    text: text.to_string(),
                    agent: agent_from(author),
                    content: AgentContent {
                        attachments,
                        rich_content: None,
                    },
                }
            };
            Ok(vec![ProviderEvent {
                provider_conversation_id: ticket,
                kind,
                dedup_id: Some(dedup),
                provider_ts: None,
            }])
        }
        Some(_) => Ok(vec![]),
        None => {
            let ticket =
                id_str(v.get("ticket_id")).ok_or_else(|| bad("missing `ticket_id` (or `type`)"))?;
            let status = v
                .get("status")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("missing `status`"))?;
            let dedup = id_str(v.get("event_id"))
                .unwrap_or_else(|| format!("{ticket}:{}", status.to_ascii_lowercase()));
            Ok(
                zendesk_status(ticket.clone(), status, assignee_of(Some(&v)), dedup)
                    .into_iter()
                    .collect(),
            )
        }
    }
}

/// A Zendesk comment's `attachments` (`file_name`, `content_url`, `content_type`, `size`):
/// the builder downloads them from `content_url`. Entries without a URL are left out.
fn zendesk_attachments(v: Option<&Value>) -> Vec<InAttachment> {
    let Some(Value::Array(items)) = v else {
        return vec![];
    };
    items
        .iter()
        .filter_map(|a| {
            let url = a.get("content_url").and_then(Value::as_str)?;
            let name = a
                .get("file_name")
                .and_then(Value::as_str)
                .unwrap_or("file")
                .to_string();
            Some(InAttachment {
                content_type: a
                    .get("content_type")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| content_type_for(&name).to_string()),
                size: a.get("size").and_then(Value::as_u64),
                url: url.to_string(),
                name,
                provider_path: None,
            })
        })
        .collect()
}

/// ALTU v1.2 `AGENT_MESSAGE.data.attachments`: `[{name, content_type, size?, url}]`.
fn altu_attachments(v: Option<&Value>) -> Result<Vec<InAttachment>, ParseError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("`data.attachments` must be an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let s = |k: &str| a.get(k).and_then(Value::as_str).filter(|x| !x.is_empty());
            let url =
                s("url").ok_or_else(|| bad(format!("`data.attachments[{i}].url` is required")))?;
            let name = s("name")
                .ok_or_else(|| bad(format!("`data.attachments[{i}].name` is required")))?;
            Ok(InAttachment {
                name: name.to_string(),
                content_type: s("content_type")
                    .map(str::to_string)
                    .unwrap_or_else(|| content_type_for(name).to_string()),
                size: a.get("size").and_then(Value::as_u64),
                url: url.to_string(),
                provider_path: None,
            })
        })
        .collect()
}

/// One ALTU connector event: the envelope's `conversation_id` (our handoff id, which the
/// token must be bound to) and what it says about the platform conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct AltuEvent {
    /// The envelope's `conversation_id` (transbordo's handoff id).
    pub conversation_id: String,
    /// The event; `provider_conversation_id` is the envelope's `platform_conversation_id`.
    pub event: ProviderEvent,
}

/// ALTU SDK connector event body → the event (protocol §5).
pub fn parse_altu(body: &[u8]) -> Result<AltuEvent, ParseError> {
    let v = json_body(body)?;
    if !v.is_object() {
        return Err(bad("expected a JSON object"));
    }
    let event = v
        .get("event")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing `event`"))?;
    let event_id = id_str(v.get("event_id")).ok_or_else(|| bad("missing `event_id`"))?;
    let conv = id_str(v.get("conversation_id")).ok_or_else(|| bad("missing `conversation_id`"))?;
    let platform = id_str(v.get("platform_conversation_id"))
        .ok_or_else(|| bad("missing `platform_conversation_id`"))?;
    let data = match v.get("data") {
        None | Some(Value::Null) => None,
        Some(d @ Value::Object(_)) => Some(d),
        Some(_) => return Err(bad("`data` must be an object")),
    };
    // `data.<k>`, else the draft's top-level `<k>`.
    let field = |k: &str| data.and_then(|d| d.get(k)).or_else(|| v.get(k));
    let agent = agent_from(field("agent"));
    let kind = match event {
        "AGENT_JOINED" => EventKind::AgentJoined(agent),
        "AGENT_MESSAGE" => {
            let attachments = altu_attachments(field("attachments"))?;
            let text = field("text").and_then(Value::as_str);
            match (text, attachments.is_empty()) {
                (Some(t), true) => EventKind::AgentMessage {
                    text: t.to_string(),
                    agent,
                },
                (None, true) => return Err(bad("AGENT_MESSAGE without `data.text`")),
                (t, false) => EventKind::AgentContent {
                    text: t.unwrap_or_default().to_string(),
                    agent,
                    content: AgentContent {
                        attachments,
                        rich_content: None,
                    },
                },
            }
        }
        "AGENT_TYPING" => EventKind::AgentTyping {
            typing: field("typing")
                .and_then(Value::as_bool)
                .ok_or_else(|| bad("AGENT_TYPING without a boolean `data.typing`"))?,
            agent,
        },
        "AGENT_CLOSED" => EventKind::Ended(EndHint::Status(EndStatus::AgentClosed)),
        "USER_CLOSED" => EventKind::Ended(EndHint::Status(EndStatus::UserClosed)),
        "ERROR" => EventKind::Ended(EndHint::Status(EndStatus::Error)),
        other => return Err(bad(format!("unknown event `{other}`"))),
    };
    Ok(AltuEvent {
        conversation_id: conv,
        event: ProviderEvent {
            provider_conversation_id: platform,
            kind,
            dedup_id: Some(event_id),
            provider_ts: None,
        },
    })
}

// ---- receiving: one trait per provider, one route for all -----------------------------

/// One webhook as it came to `POST /webhooks/{segment}/{integration_id}`, for the
/// integration it names (already known to be of the receiver's provider).
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The integration.
    pub integration: &'a Integration,
    /// The request path (`/webhooks/altu/7`): tokens may be bound to it.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body (within `[webhooks] max_body_bytes`).
    pub body: &'a [u8],
    /// Now, Unix ms.
    pub now_ms: i64,
    /// The service's `[webhooks]` settings (replay window, clock skew).
    pub config: &'a WebhookConfig,
}

impl<'a> WebhookRequest<'a> {
    /// A header as text (absent when missing or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The secret `pick` reads from the integration's settings (of type `T`), if set and
    /// not empty; [`AuthError::NoSecret`] otherwise (then the webhook is refused).
    pub fn secret<T: SettingsValue>(
        &self,
        pick: fn(&T) -> Option<&Secret>,
    ) -> Result<&'a str, AuthError> {
        self.integration
            .settings
            .get::<T>()
            .and_then(pick)
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::NoSecret)
    }
}

/// Why a webhook is refused before anything changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `401 unauthorized`: signature or token refused.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// `400 malformed_event`: not the documented shape.
    #[error(transparent)]
    Malformed(#[from] ParseError),
}

/// A token id that may be used once: the service refuses (`401`) a second use within
/// `scope`, once everything else checked out (so a malformed body can be fixed and
/// resent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleUse {
    /// Where ids are unique (`altu-jti:<integration>`).
    pub scope: String,
    /// The id (a JWT `jti`).
    pub id: String,
    /// The sha256 (hex) of the request body: the same request sent again is a retry,
    /// not a replay ([`SingleUse::of`]).
    pub digest: String,
    /// The refusal message on a second use.
    pub why: &'static str,
}

impl SingleUse {
    /// A single-use `id` in `scope`, taken by a request with body `body`.
    pub fn of(scope: String, id: String, body: &[u8], why: &'static str) -> SingleUse {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        SingleUse {
            scope,
            id,
            digest,
            why,
        }
    }
}

/// How the service answers an authenticated webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// `200 {"status":"ok","events":[…]}`, one outcome per event
    /// (`unknown_conversation` among them).
    Status,
    /// The connector's `200 {"ok":true,"events":[…]}`; an event for no known live chat is
    /// `404 unknown_conversation` (`docs/connector-protocol.md` §5).
    Connector,
}

/// An authenticated, parsed webhook and what the service still checks before applying it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Its events, in order.
    pub events: Vec<ProviderEvent>,
    /// A token that must not have been used before.
    pub single_use: Option<SingleUse>,
    /// The events must be about the live chat with this id (our handoff id) and that
    /// provider conversation, else `404 unknown_conversation`.
    pub conversation: Option<(String, String)>,
    /// The answer's shape.
    pub ack: Ack,
    /// Conversations the webhook announces with their consumer (LivePerson reports every
    /// conversation of the app): the service records the ones no live chat tracks.
    pub sightings: Vec<ConversationSighting>,
}

/// A conversation a webhook names, with its consumer ([`liveperson_sightings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSighting {
    /// The provider's conversation id.
    pub provider_conversation_id: String,
    /// The CONSUMER participant's id (LivePerson's consumer id, `lp_consumer_id`).
    pub consumer_id: String,
    /// Still open (not `CLOSE`, not `DELETE`).
    pub open: bool,
}

/// The conversations a LivePerson `cqm.ExConversationChangeNotification` announces, with
/// their CONSUMER participant; empty for other notifications (and for a body that is not
/// the documented shape: [`parse_liveperson`] refuses those).
pub fn liveperson_sightings(body: &[u8]) -> Vec<ConversationSighting> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    if v.get("type").and_then(Value::as_str) != Some("cqm.ExConversationChangeNotification") {
        return Vec::new();
    }
    let Some(changes) = v.pointer("/body/changes").and_then(Value::as_array) else {
        return Vec::new();
    };
    changes
        .iter()
        .filter_map(|c| {
            let result = c.get("result")?;
            let conv = id_str(result.get("convId"))?;
            let details = result.get("conversationDetails")?;
            let consumer = details
                .get("participants")
                .and_then(Value::as_array)?
                .iter()
                .find(|p| p.get("role").and_then(Value::as_str) == Some("CONSUMER"))
                .and_then(|p| id_str(p.get("id")))?;
            let closed = c.get("type").and_then(Value::as_str) == Some("DELETE")
                || details.get("state").and_then(Value::as_str) == Some("CLOSE")
                || details.get("stage").and_then(Value::as_str) == Some("CLOSE");
            Some(ConversationSighting {
                provider_conversation_id: conv,
                consumer_id: consumer,
                open: !closed,
            })
        })
        .collect()
}

impl Verified {
    /// Events answered with [`Ack::Status`], without further checks.
    pub fn events(events: Vec<ProviderEvent>) -> Self {
        Verified {
            events,
            single_use: None,
            conversation: None,
            ack: Ack::Status,
            sightings: Vec::new(),
        }
    }
}

/// How a provider's webhooks are received: its URL segment and its check of signature,
/// tokens and body. Given by [`crate::providers::Provider::webhooks`]; the service has
/// one route for all (dedupe, ordering and effects are the lifecycle's).
pub trait WebhookReceiver: Send + Sync {
    /// The `{segment}` of `POST /webhooks/{segment}/{integration_id}` (configured on the
    /// provider's side, so never changed), also the prefix of the events' source.
    fn segment(&self) -> &'static str;

    /// Authenticates the webhook and parses its events; refuses it otherwise. Nothing may
    /// change here.
    fn verify(&self, req: &WebhookRequest<'_>) -> Result<Verified, Refusal>;
}

/// The provider whose webhooks come to `/webhooks/{segment}/…`, with its receiver.
pub fn receiver(
    segment: &str,
) -> Option<(crate::providers::ProviderKind, &'static dyn WebhookReceiver)> {
    crate::providers::all().into_iter().find_map(|k| {
        k.provider()
            .webhooks()
            .filter(|r| r.segment() == segment)
            .map(|r| (k, r))
    })
}

// ---- plain types the events and the checks carry (re-exported by the service) ----

/// How a live chat ended: the `input.live_chat.status` of the re-entry (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// The agent (or the provider on the agent's side) closed it.
    AgentClosed,
    /// The user closed it.
    UserClosed,
    /// No agent joined within `wait_timeout_s`.
    Timeout,
    /// The user was silent for `user_inactivity_timeout_s` while with the agent.
    UserInactivityTimeout,
    /// Anything unexpected after the handoff started.
    Error,
}

impl EndStatus {
    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndStatus::AgentClosed => "agent_closed",
            EndStatus::UserClosed => "user_closed",
            EndStatus::Timeout => "timeout",
            EndStatus::UserInactivityTimeout => "user_inactivity_timeout",
            EndStatus::Error => "error",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<EndStatus> {
        Some(match s {
            "agent_closed" => EndStatus::AgentClosed,
            "user_closed" => EndStatus::UserClosed,
            "timeout" => EndStatus::Timeout,
            "user_inactivity_timeout" => EndStatus::UserInactivityTimeout,
            "error" => EndStatus::Error,
            _ => return None,
        })
    }
}

/// Who the agent is, when the provider says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentInfo {
    /// Provider's agent id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Webhook authentication knobs.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Zendesk signature timestamps older/newer than this are refused.
    pub zendesk_replay_window_s: u64,
    /// Largest webhook body (bytes).
    pub max_body_bytes: usize,
    /// Webhook requests served at once by the service (more wait, then get `503 busy`).
    pub max_in_flight: usize,
    /// Clock skew accepted on connector JWT `iat`/`exp`.
    pub jwt_clock_skew_s: u64,
    /// The top-level `public_url`: where the providers reach this service (through any
    /// proxy), `scheme://host[:port][/prefix]`, normalized (lower-case scheme and host,
    /// no default port, no trailing `/` after a prefix). When set, a connector token's
    /// `aud` must be exactly this URL followed by the webhook's request path (see
    /// [`super::auth::Audience`]); when not, only `aud`'s path is compared.
    pub public_url: Option<reqwest::Url>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            zendesk_replay_window_s: 300,
            jwt_clock_skew_s: 30,
            max_body_bytes: 256 << 10,
            max_in_flight: 256,
            public_url: None,
        }
    }
}
