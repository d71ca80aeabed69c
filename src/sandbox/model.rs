//! Public types shared by the sandbox server, its control client and the CLI.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which fake a conversation, fault or webhook belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// The LivePerson Connector API fake.
    Liveperson,
    /// The Zendesk Support API fake.
    Zendesk,
    /// The agent platform reached through the ALTU SDK connector.
    Altu,
}

impl Provider {
    /// The wire name (`liveperson`, `zendesk`, `altu`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Liveperson => "liveperson",
            Provider::Zendesk => "zendesk",
            Provider::Altu => "altu",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a conversation stands, seen from the agent's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Queued, no agent has joined yet.
    Waiting,
    /// An agent has joined.
    WithAgent,
    /// Closed (see the close reason).
    Closed,
}

/// Who closed a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The agent closed it (LivePerson `AGENT`, Zendesk `solved`, ALTU `AGENT_CLOSED`).
    Agent,
    /// The user (consumer) closed it (LivePerson `CONSUMER`, ALTU `USER_CLOSED`).
    User,
    /// The platform closed it (LivePerson `SYSTEM`).
    System,
}

/// The agent playing a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    /// Provider-style agent id (LivePerson `account.n`, Zendesk user id, ALTU `agent-n`).
    pub id: String,
    /// Display name.
    pub name: String,
}

/// One line of a conversation's transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// `consumer`, `agent`, `bot`, `system`, or `transcript` (a message of the bot
    /// conversation before the handoff, as the ALTU connector delivers it).
    pub role: String,
    /// The message text.
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A conversation (LivePerson conversation, Zendesk ticket, ALTU conversation) as the
/// control API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationView {
    /// The provider holding the conversation.
    pub provider: Provider,
    /// The provider-side id: LivePerson `conversationId`, Zendesk ticket id, ALTU platform id.
    pub id: String,
    /// The caller's id for it, where the protocol carries one (ALTU `conversation_id`,
    /// Zendesk `external_id`).
    pub external_id: Option<String>,
    /// Waiting, with an agent, or closed.
    pub status: ConversationStatus,
    /// Who closed it, once closed.
    pub close_reason: Option<CloseReason>,
    /// The agent who joined, if any.
    pub agent: Option<AgentView>,
    /// The consumer / requester / contact id on the provider side.
    pub consumer_id: Option<String>,
    /// The skill requested at open time, if any.
    pub skill_id: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// Last change, ms since the epoch.
    pub updated_at_ms: u64,
    /// Messages in order.
    pub transcript: Vec<TranscriptEntry>,
    /// Provider-specific data (LivePerson request fields, the Zendesk ticket; ALTU: the
    /// `OPEN_CONVERSATION` `data` as received plus `user`, `skill_id`, `start_message` and
    /// `extra_info` / `contact_info` parsed back from their JSON text).
    pub details: Value,
    /// Files shared in the conversation, both ways, in order (the sandbox keeps their
    /// bytes; `sha256` lets a test compare them with what was sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileView>,
    /// Who is typing now, once either side said (LivePerson, ALTU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typing: Option<TypingView>,
}

/// A file shared in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// `consumer` (the user's, through transbordo) or `agent`.
    pub role: String,
    /// File name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Where the provider keeps it (LivePerson `relativePath`, a Zendesk `content_url`,
    /// an ALTU attachment `url`).
    pub location: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The typing state of a conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingView {
    /// The user is typing (as transbordo relayed it).
    pub consumer: bool,
    /// The agent is typing (as the control API set it).
    pub agent: bool,
}

/// A file the agent sends through the control API (`say` with `file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SayFile {
    /// File name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// The bytes, standard base64.
    pub data_base64: String,
}

/// Body of the typing action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingRequest {
    /// Whether the agent is typing.
    pub typing: bool,
}

/// What happened to a webhook notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// No target was configured: only recorded.
    Recorded,
    /// Created, not yet attempted.
    Pending,
    /// The target answered with a success status.
    Delivered,
    /// The last attempt failed; it sits in the outbox until redelivered.
    Failed,
}

/// A webhook notification the sandbox produced (delivered or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationView {
    /// Sequence number, unique in this sandbox.
    pub id: u64,
    /// The provider whose webhook format this is.
    pub provider: Provider,
    /// The provider-side conversation id.
    pub conversation_id: String,
    /// A short name: `lp.conversation_change`, `lp.message`, `zendesk.status_changed`,
    /// `zendesk.comment_added`, `altu.agent_joined`, `altu.agent_message`, `altu.agent_closed`,
    /// `altu.user_closed`.
    pub kind: String,
    /// The target URL at the last attempt (`None`: no target configured).
    pub target: Option<String>,
    /// Delivery state.
    pub state: DeliveryState,
    /// How many HTTP attempts were made.
    pub attempts: u32,
    /// HTTP status of the last attempt.
    pub last_status: Option<u16>,
    /// Transport error of the last attempt.
    pub last_error: Option<String>,
    /// The JSON body (exactly the bytes that are signed, parsed).
    pub body: Value,
    /// Headers sent on the last attempt (signature included).
    pub headers: BTreeMap<String, String>,
}

/// Which bytes the Zendesk webhook signature covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum SignatureOrder {
    /// `TIMESTAMP ‖ BODY`: the current Zendesk documentation (default).
    #[default]
    TimestampBody,
    /// `BODY ‖ TIMESTAMP`: the old documentation page, to show the receiver's choice matters.
    BodyTimestamp,
}

/// Where and how one provider's webhooks are delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    /// Target URL; `None` records notifications without sending them.
    pub url: Option<String>,
    /// More targets beside `url`, as behind a load balancer with no affinity: delivery
    /// attempts go to `url` and these in turn (round-robin), so a receiver run as several
    /// replicas gets its share on each (the load generator's multi-replica rows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<String>,
    /// Deliver every notification twice.
    #[serde(default)]
    pub duplicate: bool,
    /// After delivering a notification, deliver the previous one of the same conversation
    /// again (an older event arriving after a newer one).
    #[serde(default)]
    pub out_of_order: bool,
    /// Zendesk only: which order the signature covers.
    #[serde(default)]
    pub signature_order: SignatureOrder,
}

/// A partial update of [`WebhookSettings`] (absent fields stay as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPatch {
    /// New target; `Some(None)` (JSON `null`) removes it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub url: Option<Option<String>>,
    /// New further targets (`[]` removes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Vec<String>>,
    /// New duplicate switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// New out-of-order switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_order: Option<bool>,
    /// New Zendesk signature order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_order: Option<SignatureOrder>,
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// The webhook settings of all three providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTargets {
    /// LivePerson (`x-liveperson-signature`).
    pub liveperson: WebhookSettings,
    /// Zendesk (`X-Zendesk-Webhook-Signature`).
    pub zendesk: WebhookSettings,
    /// ALTU agent platform (JWT signed with `access_key`).
    pub altu: WebhookSettings,
}

impl WebhookTargets {
    /// The settings of one provider.
    pub fn get(&self, p: Provider) -> &WebhookSettings {
        match p {
            Provider::Liveperson => &self.liveperson,
            Provider::Zendesk => &self.zendesk,
            Provider::Altu => &self.altu,
        }
    }

    /// The settings of one provider, mutable.
    pub fn get_mut(&mut self, p: Provider) -> &mut WebhookSettings {
        match p {
            Provider::Liveperson => &mut self.liveperson,
            Provider::Zendesk => &mut self.zendesk,
            Provider::Altu => &mut self.altu,
        }
    }
}

/// One LivePerson app installation (OAuth client) the fake Sentinel accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePersonApp {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret` (also the webhook signing key).
    pub client_secret: String,
}

/// LivePerson fake configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePersonConfig {
    /// The account (brand) id.
    pub account_id: String,
    /// Accepted apps.
    pub apps: Vec<LivePersonApp>,
    /// AppJWT lifetime in seconds (LivePerson: 3600).
    pub token_ttl_s: u64,
    /// Echo the consumer's own messages as `ms.MessagingEventNotification` with role
    /// `CONSUMER`, as LivePerson does.
    pub consumer_echo: bool,
    /// How a second conversation request by a consumer with one open is answered.
    #[serde(default)]
    pub second_conversation: SecondConversation,
    /// The brand API keys the Messaging Interactions API accepts (OAuth 1.0a).
    #[serde(default)]
    pub interactions: LivePersonApiKeys,
    /// The Messaging Interactions API's indexing lag: its search leaves out conversations
    /// younger than this (ms; `0`: none).
    #[serde(default)]
    pub search_lag_ms: u64,
}

/// A LivePerson brand API key (OAuth 1.0a), as the Messaging Interactions API checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePersonApiKeys {
    /// App key (`oauth_consumer_key`).
    pub app_key: String,
    /// Secret.
    pub app_secret: String,
    /// Access token (`oauth_token`).
    pub access_token: String,
    /// Access token secret.
    pub access_token_secret: String,
}

impl Default for LivePersonApiKeys {
    fn default() -> Self {
        LivePersonApiKeys {
            app_key: "sandbox-app-key".into(),
            app_secret: "sandbox-app-secret".into(),
            access_token: "sandbox-access-token".into(),
            access_token_secret: "sandbox-access-token-secret".into(),
        }
    }
}

/// How the LivePerson fake answers `cm.ConsumerRequestConversation` from a consumer who
/// already has an open conversation. LivePerson documents no answer (research 2026-12
/// §1e); each plausible one is a switch, so the reconcile is tested under all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum SecondConversation {
    /// Opens a second conversation for the consumer.
    Grant,
    /// `400` with a non-`OK` code and no conversation id.
    RefuseUnnamed,
    /// `400` with a non-`OK` code naming the open conversation (`body.conversationId`).
    #[default]
    RefuseNamed,
}

impl Default for LivePersonConfig {
    fn default() -> Self {
        LivePersonConfig {
            account_id: "12345678".into(),
            apps: vec![LivePersonApp {
                client_id: "sandbox-client".into(),
                client_secret: "sandbox-secret".into(),
            }],
            token_ttl_s: 3600,
            consumer_echo: true,
            second_conversation: SecondConversation::default(),
            interactions: LivePersonApiKeys::default(),
            search_lag_ms: 0,
        }
    }
}

/// Zendesk fake configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZendeskConfig {
    /// Numeric account id carried by webhook envelopes.
    pub account_id: u64,
    /// API user email (`{email}/token:{api_token}`).
    pub email: String,
    /// API token.
    pub api_token: String,
    /// Accepted OAuth bearer tokens.
    pub bearer_tokens: Vec<String>,
    /// Webhook signing secret.
    pub webhook_secret: String,
    /// Value of `X-Rate-Limit` (requests per minute).
    pub rate_limit: u32,
}

impl Default for ZendeskConfig {
    fn default() -> Self {
        ZendeskConfig {
            account_id: 9_000_001,
            email: "bot@example.com".into(),
            api_token: "sandbox-token".into(),
            bearer_tokens: vec!["sandbox-oauth-token".into()],
            webhook_secret: "sandbox-webhook-secret".into(),
            rate_limit: 700,
        }
    }
}

/// ALTU agent platform fake configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltuConfig {
    /// The integration's `access_token`: the JWT claim `sub` in both directions.
    pub access_token: String,
    /// HS256 key of the JWTs in both directions.
    pub access_key: String,
}

impl Default for AltuConfig {
    fn default() -> Self {
        AltuConfig {
            access_token: "sandbox-access-token".into(),
            access_key: "sandbox-access-key".into(),
        }
    }
}

/// Everything the sandbox needs to start.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Address to bind (`127.0.0.1:8910` by default; port 0 picks a free one).
    pub bind: SocketAddr,
    /// LivePerson account and apps.
    pub liveperson: LivePersonConfig,
    /// Zendesk credentials.
    pub zendesk: ZendeskConfig,
    /// ALTU credentials.
    pub altu: AltuConfig,
    /// Initial webhook targets and switches.
    pub webhooks: WebhookTargets,
    /// How long a webhook target may take to answer (LivePerson: 10 s).
    pub webhook_timeout: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8910)),
            liveperson: LivePersonConfig::default(),
            zendesk: ZendeskConfig::default(),
            altu: AltuConfig::default(),
            webhooks: WebhookTargets::default(),
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

impl SandboxOptions {
    /// Defaults bound to `127.0.0.1:0` (a free port), for tests.
    pub fn ephemeral() -> Self {
        SandboxOptions {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..SandboxOptions::default()
        }
    }
}

/// A fault to inject into provider requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Answer with this status and the provider's own error body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Body sent with `status` instead of the provider's default error body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Wait this long before handling the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Handle the request, then cut the response body in half (invalid JSON).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub malformed: bool,
    /// Expire every issued LivePerson AppJWT before handling the request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expire_tokens: bool,
}

fn one() -> u32 {
    1
}

/// A fault rule: applies to the next `times` requests matching provider and endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Provider whose requests are hit.
    pub provider: Provider,
    /// `csds`, `token`, `consumer`, `conversation`, `send`, `storage` (LivePerson's file
    /// storage), `users`, `tickets`, `uploads` (Zendesk), `events` (ALTU), or `*`.
    pub endpoint: String,
    /// What happens.
    pub fault: Fault,
    /// How many matching requests it applies to (default 1).
    #[serde(default = "one")]
    pub times: u32,
}

/// Body of the join action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Agent id; the sandbox makes one up if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Agent display name (default `Sandbox Agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
}

/// Body of the say action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SayRequest {
    /// The agent's message (may be empty when `file` is given: the file's caption).
    #[serde(default)]
    pub text: String,
    /// A file the agent sends with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<SayFile>,
}

/// Body of the close action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    /// Who closes.
    pub by: CloseReason,
}

/// Answer of the join, say and close actions: the conversation after the change and the
/// notifications it produced, after their delivery attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The conversation now.
    pub conversation: ConversationView,
    /// Notifications produced by the action.
    pub notifications: Vec<NotificationView>,
}

/// Body of the LivePerson token switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSettings {
    /// New AppJWT lifetime for tokens issued from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// Expire every AppJWT issued so far.
    #[serde(default)]
    pub expire_now: bool,
}

/// What `GET /_sandbox` answers: where everything is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// LivePerson CSDS base (use as `csds_url`).
    pub liveperson_csds_url: String,
    /// LivePerson account id.
    pub liveperson_account_id: String,
    /// Zendesk base (use as `base_url`).
    pub zendesk_base_url: String,
    /// ALTU events endpoint (use as `webhook_url`).
    pub altu_events_url: String,
    /// Control API base.
    pub control_url: String,
    /// Current webhook settings.
    pub webhooks: WebhookTargets,
}
