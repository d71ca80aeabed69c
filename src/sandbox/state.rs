//! The sandbox's shared state: one mutex, never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::model::{
    AltuConfig, ConversationStatus, ConversationView, DeliveryState, FaultRule, LivePersonConfig,
    NotificationView, Provider, SandboxOptions, TranscriptEntry, WebhookTargets, ZendeskConfig,
};
use super::util::now_ms;

/// Immutable configuration of a running sandbox.
pub(crate) struct Config {
    pub liveperson: LivePersonConfig,
    pub zendesk: ZendeskConfig,
    pub altu: AltuConfig,
}

/// Everything the handlers share.
pub(crate) struct AppState {
    pub cfg: Config,
    /// `http://host:port`.
    pub base_url: String,
    /// `host:port` (what CSDS answers).
    pub host_port: String,
    /// Client used for webhook deliveries.
    pub http: reqwest::Client,
    inner: Mutex<Inner>,
}

/// A LivePerson AppJWT the fake Sentinel issued.
pub(crate) struct LpToken {
    pub client_id: String,
    pub account: String,
    pub exp: u64,
}

/// A LivePerson consumer (one per `ext_consumer_id`).
pub(crate) struct LpConsumer {
    pub jws: String,
}

/// LivePerson state.
pub(crate) struct LpState {
    pub token_ttl_s: u64,
    pub second_conversation: super::model::SecondConversation,
    /// The Messaging Interactions search leaves out conversations younger than this.
    pub search_lag_ms: u64,
    pub tokens: HashMap<String, LpToken>,
    /// `ext_consumer_id` → consumer.
    pub consumers: HashMap<String, LpConsumer>,
    /// ConsumerJWS → `lp_consumer_id`.
    pub by_jws: HashMap<String, String>,
    pub next_agent: u64,
}

/// A stored Zendesk idempotent answer.
pub(crate) struct Idem {
    pub request: Value,
    pub status: u16,
    pub location: String,
    pub body: Value,
    pub at_s: u64,
}

/// Zendesk state.
pub(crate) struct ZdState {
    pub users: BTreeMap<u64, Value>,
    pub next_user: u64,
    pub next_ticket: u64,
    pub next_comment: u64,
    pub idem: HashMap<String, Idem>,
    /// (minute, requests in it).
    pub rate_window: (u64, u32),
    /// The ticket list's own limit (`Zendesk-RateLimit-tickets-index`): (minute, requests).
    pub index_window: (u64, u32),
}

/// ALTU state.
pub(crate) struct AltuState {
    /// `event_id` → (status, body) of the first answer.
    pub events: HashMap<String, (u16, Value)>,
    /// Our `conversation_id` → platform id.
    pub by_ext: HashMap<String, String>,
    /// Accepted JWT `jti` → until when (unix s) it is remembered (replay refusal).
    pub jtis: HashMap<String, u64>,
    pub next_agent: u64,
}

/// A conversation and the provider-side bits the view does not show.
pub(crate) struct Conv {
    pub view: ConversationView,
    /// LivePerson message sequence.
    pub seq: u64,
    /// LivePerson: the app that opened it (its secret signs the webhooks).
    pub lp_client_id: Option<String>,
    /// Zendesk ticket comments.
    pub comments: Vec<Value>,
}

impl Conv {
    pub(crate) fn new(provider: Provider, id: String, details: Value) -> Conv {
        let now = now_ms();
        Conv {
            view: ConversationView {
                provider,
                id,
                external_id: None,
                status: ConversationStatus::Waiting,
                close_reason: None,
                agent: None,
                consumer_id: None,
                skill_id: None,
                created_at_ms: now,
                updated_at_ms: now,
                transcript: Vec::new(),
                details,
                files: Vec::new(),
                typing: None,
            },
            seq: 0,
            lp_client_id: None,
            comments: Vec::new(),
        }
    }

    pub(crate) fn say(&mut self, role: &str, text: &str) {
        let now = now_ms();
        self.view.transcript.push(TranscriptEntry {
            role: role.into(),
            text: text.into(),
            at_ms: now,
        });
        self.view.updated_at_ms = now;
    }

    /// Records a shared file in the view (its bytes are in [`Inner::files`]).
    pub(crate) fn add_file(&mut self, role: &str, f: &StoredFile, location: &str) {
        use sha2::{Digest, Sha256};
        let now = now_ms();
        let sha = Sha256::digest(&f.bytes);
        self.view.files.push(super::model::FileView {
            role: role.into(),
            name: f.name.clone(),
            content_type: f.content_type.clone(),
            size: f.bytes.len() as u64,
            sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
            location: location.into(),
            at_ms: now,
        });
        self.say(role, &format!("[file {}]", f.name));
    }

    /// Sets one side's typing state.
    pub(crate) fn set_typing(&mut self, role: &str, typing: bool) {
        let t = self.view.typing.get_or_insert_with(Default::default);
        if role == "agent" {
            t.agent = typing;
        } else {
            t.consumer = typing;
        }
        self.view.updated_at_ms = now_ms();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.view.status == ConversationStatus::Closed
    }
}

/// A file's bytes, as the fake provider keeps them.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    /// LivePerson: the declared `fileSize` of the upload URL (the PUT must match it).
    pub declared: Option<u64>,
    /// Zendesk: when the upload token was made (unix s); it lives 60 minutes.
    pub at_s: u64,
}

/// A notification plus its exact bytes and signing data.
pub(crate) struct Note {
    pub view: NotificationView,
    pub raw: String,
    /// LivePerson: the client_id whose secret signs it.
    pub lp_client_id: Option<String>,
}

/// The mutable state.
pub(crate) struct Inner {
    pub webhooks: WebhookTargets,
    pub lp: LpState,
    pub zd: ZdState,
    pub altu: AltuState,
    pub convs: IndexMap<String, Conv>,
    pub faults: Vec<FaultRule>,
    pub notes: Vec<Note>,
    /// Stored files by location (LivePerson `relativePath`, `/sandbox-files/…` path).
    pub files: HashMap<String, StoredFile>,
    /// Zendesk upload token → the locations of its files (until a comment uses it).
    pub zd_uploads: HashMap<String, Vec<String>>,
}

impl Inner {
    /// Records a notification (state `pending`) and returns its id.
    pub(crate) fn push_note(
        &mut self,
        provider: Provider,
        conversation_id: &str,
        kind: &str,
        body: Value,
        lp_client_id: Option<String>,
    ) -> u64 {
        let id = self.notes.len() as u64 + 1;
        let raw = body.to_string();
        self.notes.push(Note {
            view: NotificationView {
                id,
                provider,
                conversation_id: conversation_id.into(),
                kind: kind.into(),
                target: None,
                state: DeliveryState::Pending,
                attempts: 0,
                last_status: None,
                last_error: None,
                body,
                headers: BTreeMap::new(),
            },
            raw,
            lp_client_id,
        });
        id
    }

    pub(crate) fn note(&self, id: u64) -> Option<&Note> {
        id.checked_sub(1).and_then(|i| self.notes.get(i as usize))
    }

    pub(crate) fn note_mut(&mut self, id: u64) -> Option<&mut Note> {
        id.checked_sub(1)
            .and_then(|i| self.notes.get_mut(i as usize))
    }
}

impl AppState {
    pub(crate) fn new(opts: &SandboxOptions, base_url: String, host_port: String) -> AppState {
        let http = reqwest::Client::builder()
            .timeout(opts.webhook_timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        AppState {
            cfg: Config {
                liveperson: opts.liveperson.clone(),
                zendesk: opts.zendesk.clone(),
                altu: opts.altu.clone(),
            },
            base_url,
            host_port,
            http,
            inner: Mutex::new(Inner {
                webhooks: opts.webhooks.clone(),
                lp: LpState {
                    token_ttl_s: opts.liveperson.token_ttl_s,
                    second_conversation: opts.liveperson.second_conversation,
                    search_lag_ms: opts.liveperson.search_lag_ms,
                    tokens: HashMap::new(),
                    consumers: HashMap::new(),
                    by_jws: HashMap::new(),
                    next_agent: 1,
                },
                zd: ZdState {
                    users: BTreeMap::new(),
                    next_user: 5001,
                    next_ticket: 1001,
                    next_comment: 70001,
                    idem: HashMap::new(),
                    rate_window: (0, 0),
                    index_window: (0, 0),
                },
                altu: AltuState {
                    events: HashMap::new(),
                    by_ext: HashMap::new(),
                    jtis: HashMap::new(),
                    next_agent: 1,
                },
                convs: IndexMap::new(),
                faults: Vec::new(),
                notes: Vec::new(),
                files: HashMap::new(),
                zd_uploads: HashMap::new(),
            }),
        }
    }

    /// Locks the state (a poisoned lock is taken over: handlers never leave it half-changed
    /// in a way that matters for a test fake).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
