//! A typed client of the control API, shared by the CLI and the tests.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{
    ActionResult, CloseReason, CloseRequest, ConversationStatus, ConversationView, FaultRule,
    JoinRequest, NotificationView, Provider, SandboxInfo, SayRequest, TokenSettings, WebhookPatch,
    WebhookSettings, WebhookTargets,
};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The sandbox could not be reached or the transfer failed.
    #[error("cannot reach the sandbox: {0}")]
    Http(#[from] reqwest::Error),
    /// The sandbox answered with an error status.
    #[error("the sandbox answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Raw body (usually `{"error": …}`).
        body: String,
    },
    /// The answer was not the expected JSON.
    #[error("unexpected answer from the sandbox: {0}")]
    Decode(String),
}

/// Client of a running sandbox's `/_sandbox` API.
#[derive(Debug, Clone)]
pub struct SandboxControl {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Conversations {
    conversations: Vec<ConversationView>,
}

#[derive(Deserialize)]
struct Notifications {
    notifications: Vec<NotificationView>,
}

#[derive(Deserialize)]
struct Faults {
    faults: Vec<FaultRule>,
}

/// Percent-encodes a path segment.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl SandboxControl {
    /// A client for the sandbox at `base_url` (e.g. `http://127.0.0.1:8910`).
    pub fn new(base_url: impl Into<String>) -> SandboxControl {
        let base = base_url.into().trim_end_matches('/').to_string();
        SandboxControl {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// The sandbox's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ControlError> {
        let mut req = self
            .http
            .request(method, format!("{}/_sandbox{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(ControlError::Status {
                status: status.as_u16(),
                body: text,
            });
        }
        serde_json::from_str(&text).map_err(|e| ControlError::Decode(format!("{e}: {text}")))
    }

    /// Where everything is (`GET /_sandbox`).
    pub async fn info(&self) -> Result<SandboxInfo, ControlError> {
        self.call(Method::GET, "", None::<&()>).await
    }

    /// Conversations of all providers, optionally filtered.
    pub async fn conversations(
        &self,
        provider: Option<Provider>,
        status: Option<ConversationStatus>,
    ) -> Result<Vec<ConversationView>, ControlError> {
        let mut q = Vec::new();
        if let Some(p) = provider {
            q.push(format!("provider={p}"));
        }
        if let Some(s) = status {
            let s = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            q.push(format!("status={s}"));
        }
        let path = if q.is_empty() {
            "/conversations".to_string()
        } else {
            format!("/conversations?{}", q.join("&"))
        };
        let c: Conversations = self.call(Method::GET, &path, None::<&()>).await?;
        Ok(c.conversations)
    }

    /// One conversation by its provider-side id.
    pub async fn conversation(&self, id: &str) -> Result<ConversationView, ControlError> {
        self.call(
            Method::GET,
            &format!("/conversations/{}", seg(id)),
            None::<&()>,
        )
        .await
    }

    /// An agent joins.
    pub async fn join(&self, id: &str, req: &JoinRequest) -> Result<ActionResult, ControlError> {
        self.call(
            Method::POST,
            &format!("/conversations/{}/join", seg(id)),
            Some(req),
        )
        .await
    }

    /// The agent says `text`.
    pub async fn say(&self, id: &str, text: &str) -> Result<ActionResult, ControlError> {
        let body = SayRequest {
            text: text.to_string(),
            file: None,
        };
        self.call(
            Method::POST,
            &format!("/conversations/{}/say", seg(id)),
            Some(&body),
        )
        .await
    }

    /// The agent sends a file (`text`, possibly empty, is its caption / message).
    pub async fn say_file(
        &self,
        id: &str,
        text: &str,
        file: super::model::SayFile,
    ) -> Result<ActionResult, ControlError> {
        let body = SayRequest {
            text: text.to_string(),
            file: Some(file),
        };
        self.call(
            Method::POST,
            &format!("/conversations/{}/say", seg(id)),
            Some(&body),
        )
        .await
    }

    /// The agent starts or stops typing.
    pub async fn typing(&self, id: &str, typing: bool) -> Result<ActionResult, ControlError> {
        let body = super::model::TypingRequest { typing };
        self.call(
            Method::POST,
            &format!("/conversations/{}/typing", seg(id)),
            Some(&body),
        )
        .await
    }

    /// Closes the conversation on behalf of the agent, the user or the system.
    pub async fn close(&self, id: &str, by: CloseReason) -> Result<ActionResult, ControlError> {
        let body = CloseRequest { by };
        self.call(
            Method::POST,
            &format!("/conversations/{}/close", seg(id)),
            Some(&body),
        )
        .await
    }

    /// Every notification produced so far, delivered or not.
    pub async fn notifications(&self) -> Result<Vec<NotificationView>, ControlError> {
        let n: Notifications = self
            .call(Method::GET, "/notifications", None::<&()>)
            .await?;
        Ok(n.notifications)
    }

    /// Notifications whose last delivery failed.
    pub async fn outbox(&self) -> Result<Vec<NotificationView>, ControlError> {
        let n: Notifications = self.call(Method::GET, "/outbox", None::<&()>).await?;
        Ok(n.notifications)
    }

    /// Delivers one notification again (failed or not).
    pub async fn redeliver(&self, id: u64) -> Result<NotificationView, ControlError> {
        let n: Notifications = self
            .call(
                Method::POST,
                &format!("/outbox/{id}/redeliver"),
                None::<&()>,
            )
            .await?;
        n.notifications
            .into_iter()
            .next()
            .ok_or_else(|| ControlError::Decode("empty answer".into()))
    }

    /// Delivers every failed notification again.
    pub async fn redeliver_all(&self) -> Result<Vec<NotificationView>, ControlError> {
        let n: Notifications = self
            .call(Method::POST, "/outbox/redeliver", None::<&()>)
            .await?;
        Ok(n.notifications)
    }

    /// Current webhook settings.
    pub async fn webhooks(&self) -> Result<WebhookTargets, ControlError> {
        self.call(Method::GET, "/webhooks", None::<&()>).await
    }

    /// Changes one provider's webhook settings.
    pub async fn set_webhook(
        &self,
        provider: Provider,
        patch: &WebhookPatch,
    ) -> Result<WebhookSettings, ControlError> {
        self.call(Method::PUT, &format!("/webhooks/{provider}"), Some(patch))
            .await
    }

    /// Adds a fault rule; returns the pending rules.
    pub async fn add_fault(&self, rule: &FaultRule) -> Result<Vec<FaultRule>, ControlError> {
        let f: Faults = self.call(Method::POST, "/faults", Some(rule)).await?;
        Ok(f.faults)
    }

    /// Pending fault rules.
    pub async fn faults(&self) -> Result<Vec<FaultRule>, ControlError> {
        let f: Faults = self.call(Method::GET, "/faults", None::<&()>).await?;
        Ok(f.faults)
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        let _: Value = self.call(Method::DELETE, "/faults", None::<&()>).await?;
        Ok(())
    }

    /// Changes the LivePerson AppJWT lifetime and/or expires issued tokens; answers
    /// `{"ttl_s": n, "expired": n}`.
    pub async fn liveperson_tokens(&self, settings: &TokenSettings) -> Result<Value, ControlError> {
        self.call(Method::POST, "/liveperson/tokens", Some(settings))
            .await
    }

    /// How the LivePerson fake answers a second conversation request by a consumer with
    /// one open (`PUT /_sandbox/liveperson/second_conversation`).
    pub async fn liveperson_second_conversation(
        &self,
        behaviour: crate::sandbox::SecondConversation,
    ) -> Result<Value, ControlError> {
        self.call(
            Method::PUT,
            "/liveperson/second_conversation",
            Some(&serde_json::json!({ "behaviour": behaviour })),
        )
        .await
    }

    /// The Messaging Interactions search's lag: conversations younger than `lag_ms` are
    /// left out (`PUT /_sandbox/liveperson/search_lag`).
    pub async fn liveperson_search_lag(&self, lag_ms: u64) -> Result<Value, ControlError> {
        self.call(
            Method::PUT,
            "/liveperson/search_lag",
            Some(&serde_json::json!({ "lag_ms": lag_ms })),
        )
        .await
    }
}
