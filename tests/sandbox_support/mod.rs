//! Shared helpers of the sandbox tests: a webhook receiver, LivePerson calls, redaction.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use transbordo::sandbox::{Provider, Sandbox, SandboxOptions, WebhookPatch};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Clone)]
struct RecvState {
    hits: Arc<Mutex<Vec<Hit>>>,
    status: Arc<AtomicU16>,
}

/// A webhook target on 127.0.0.1 that records what it receives.
pub struct Receiver {
    pub url: String,
    state: RecvState,
}

async fn record(State(st): State<RecvState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    st.hits.lock().unwrap().push(Hit {
        headers,
        body: body.to_vec(),
    });
    StatusCode::from_u16(st.status.load(Ordering::SeqCst)).unwrap()
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = RecvState {
            hits: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    /// What the receiver answers from now on.
    pub fn answer(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    /// Waits (at most 5 s) until `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Hit> {
        for _ in 0..500 {
            let h = self.hits();
            if h.len() >= n {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} webhook deliveries, got {}", self.hits().len());
    }
}

pub async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox starts")
}

/// Points one provider's webhooks at `url`.
pub async fn target(sb: &Sandbox, provider: Provider, url: &str) {
    sb.control()
        .set_webhook(
            provider,
            &WebhookPatch {
                url: Some(Some(url.to_string())),
                ..WebhookPatch::default()
            },
        )
        .await
        .unwrap();
}

pub fn insta_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

const VOLATILE_KEYS: &[&str] = &[
    "serverTimestamp",
    "creationTs",
    "startTs",
    "endTs",
    "metaDataLastUpdateTs",
    "time",
    "created_at",
    "updated_at",
    "ts",
    "at_ms",
    "created_at_ms",
    "updated_at_ms",
    "event_id",
];

/// Replaces timestamps, UUIDs, JWTs and the port with stable placeholders.
pub fn redact(v: &Value) -> Value {
    let uuid =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let port = regex::Regex::new(r"127\.0\.0\.1:\d+").unwrap();
    let jwt = regex::Regex::new(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$").unwrap();
    fn walk(v: &Value, key: Option<&str>, f: &dyn Fn(&str) -> String) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), walk(v, Some(k), f)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, key, f)).collect()),
            _ if key.is_some_and(|k| VOLATILE_KEYS.contains(&k)) && !v.is_null() => {
                json!("[volatile]")
            }
            Value::String(s) => json!(f(s)),
            other => other.clone(),
        }
    }
    walk(v, None, &|s: &str| {
        if jwt.is_match(s) && s.len() > 40 {
            return "[jwt]".to_string();
        }
        let s = uuid.replace_all(s, "[uuid]");
        port.replace_all(&s, "127.0.0.1:[port]").into_owned()
    })
}

/// Calls the LivePerson fake like a Connector API client.
pub struct Lp {
    pub http: reqwest::Client,
    pub base: String,
    pub account: String,
}

impl Lp {
    pub fn new(sb: &Sandbox) -> Lp {
        Lp {
            http: reqwest::Client::new(),
            base: sb.base_url(),
            account: "12345678".into(),
        }
    }

    pub async fn token(&self) -> String {
        let r = self
            .http
            .post(format!(
                "{}/sentinel/api/account/{}/app/token?v=1.0&grant_type=client_credentials",
                self.base, self.account
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("client_id=sandbox-client&client_secret=sandbox-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn consumer(&self, jwt: &str, ext: &str) -> String {
        let r = self
            .http
            .post(format!(
                "{}/api/account/{}/consumer?v=1.0",
                self.base, self.account
            ))
            .header("authorization", jwt)
            .json(&json!({"ext_consumer_id": ext}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    pub fn open_body(&self) -> Value {
        json!([
            {"kind":"req","id":"1,","type":"userprofile.SetUserProfile","body":{}},
            {"kind":"req","id":"2,","type":"cm.ConsumerRequestConversation",
             "body":{"brandId":self.account,"channelType":"MESSAGING","skillId":"-1","ttrDefName":"NORMAL"}}
        ])
    }

    pub async fn post(
        &self,
        path: &str,
        jwt: Option<&str>,
        jws: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}/api/account/{}{path}", self.base, self.account))
            .json(body);
        if let Some(j) = jwt {
            r = r.header("authorization", j);
        }
        if let Some(j) = jws {
            r = r.header("x-lp-on-behalf", j);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn open(&self, jwt: &str, jws: &str) -> (u16, Value) {
        self.post(
            "/messaging/consumer/conversation?v=3",
            Some(jwt),
            Some(jws),
            &self.open_body(),
        )
        .await
    }

    pub async fn send(&self, jwt: &str, jws: &str, body: &Value) -> (u16, Value) {
        self.post(
            "/messaging/consumer/conversation/send?v=3",
            Some(jwt),
            Some(jws),
            body,
        )
        .await
    }

    /// Token, consumer and an open conversation; returns (jwt, jws, conversationId).
    pub async fn start_conversation(&self, ext: &str) -> (String, String, String) {
        let jwt = self.token().await;
        let jws = self.consumer(&jwt, ext).await;
        let (s, v) = self.open(&jwt, &jws).await;
        assert_eq!(s, 200, "{v}");
        let id = v[1]["body"]["conversationId"].as_str().unwrap().to_string();
        (jwt, jws, id)
    }
}

pub fn text_message(conv: &str, text: &str) -> Value {
    json!({"kind":"req","id":"7","type":"ms.PublishEvent",
        "body":{"dialogId":conv,"event":{"type":"ContentEvent","contentType":"text/plain","message":text}}})
}

pub fn close_request(conv: &str) -> Value {
    json!({"kind":"req","id":1,"type":"cm.UpdateConversationField",
        "body":{"conversationId":conv,"conversationField":{"field":"ConversationStateField","conversationState":"CLOSE"}}})
}
