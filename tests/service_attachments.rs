//! Attachments and typing on the relay, end to end over real HTTP: `transbordo serve`
//! (the real binary, a child process), the `transbordo sandbox` fakes (LivePerson with its
//! file storage, Zendesk uploads, the ALTU connector v1.2) and a builder receiver here.
//!
//! Per provider: the bytes that reach the fake equal the bytes the builder sent (SHA-256,
//! inline and fetched from a `url`), the builder receives the agent's file and downloads
//! it through the URL it got, typing goes both ways (or answers `relayed: false`), every
//! refusal (type, size, a guarded URL, malformed base64) is snapshotted, and a refusal or
//! a failed upload leaves nothing announced to the agent.

mod service_common;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use service_common::{get, post, Receiver, API_TOKEN, BUILDER_SECRET};
use sha2::{Digest, Sha256};
use transbordo::sandbox::{
    ConversationView, Fault, FaultRule, JoinRequest, Provider, Sandbox, SandboxControl,
    SandboxOptions, SayFile, WebhookPatch,
};

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

const LP: u32 = 7;
const LP_LINKS: u32 = 8;
const ZD: u32 = 1;
const ALTU: u32 = 3;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Deterministic bytes that are not text.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u64 * 131 + seed as u64 * 7) % 251) as u8)
        .collect()
}

fn integrations(sandbox: &str) -> String {
    format!(
        r#"
[[integration]]
id = 7
provider = "liveperson"
account_id = "12345678"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
csds_url = "{sandbox}"
wait_timeout_s = 60

[[integration]]
id = 8
provider = "liveperson"
account_id = "12345678"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
csds_url = "{sandbox}"
attachments_as_links = true
wait_timeout_s = 60

[[integration]]
id = 1
provider = "zendesk"
base_url = "{sandbox}"
email = "bot@example.com"
api_token = "sandbox-token"
webhook_secret = "sandbox-webhook-secret"
wait_timeout_s = 0

[[integration]]
id = 3
provider = "altu_sdk"
webhook_url = "{sandbox}/altu/events"
access_token = "sandbox-access-token"
access_key = "sandbox-access-key"
wait_timeout_s = 60
"#
    )
}

struct Proc(Child, PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- serve log ---\n{}",
                std::fs::read_to_string(&self.1).unwrap_or_default()
            );
        }
    }
}

/// A file server for `url` attachments (the builder's storage).
async fn file_server(files: Vec<(&'static str, Vec<u8>)>) -> String {
    use axum::routing::get;
    let mut app = axum::Router::new();
    for (path, data) in files {
        app = app.route(path, get(move || async move { data.clone() }));
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

struct World {
    _dir: tempfile::TempDir,
    _sandbox: Sandbox,
    sb: SandboxControl,
    rx: Receiver,
    base: String,
    _proc: Proc,
}

impl World {
    async fn start() -> World {
        let sandbox = Sandbox::start(SandboxOptions::ephemeral()).await.unwrap();
        let sb = sandbox.control();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("integrations.toml"),
            integrations(&sandbox.base_url()),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("flows")).unwrap();
        let (rx_url, rx) = Receiver::default().start().await;
        let port = free_port();
        let cfg = format!(
            r#"listen = "127.0.0.1:{port}"
database = "state/transbordo.db"
integrations = "integrations.toml"
flows_dir = "flows"

[builder]
callback_url = "{rx_url}"
signing_secret = "{BUILDER_SECRET}"

[delivery]
initial_backoff_ms = 50
max_backoff_ms = 200
timeout_ms = 3000

[api]
tokens = ["{API_TOKEN}"]

[http_request]
allow = ["127.0.0.1"]
"#
        );
        let cfg_path = dir.path().join("service.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        for (p, path) in [
            (Provider::Liveperson, "liveperson/7"),
            (Provider::Zendesk, "zendesk/1"),
            (Provider::Altu, "altu/3"),
        ] {
            let patch = WebhookPatch {
                url: Some(Some(format!("http://127.0.0.1:{port}/webhooks/{path}"))),
                ..WebhookPatch::default()
            };
            sb.set_webhook(p, &patch).await.unwrap();
        }
        let log = dir.path().join("serve.log");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let w = World {
            _dir: dir,
            _sandbox: sandbox,
            sb,
            rx,
            base,
            _proc: Proc(child, log),
        };
        eventually("the service answers", || {
            let url = format!("{}/healthz", w.base);
            async move {
                let r = reqwest::get(url).await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        w
    }

    /// Opens a live chat and lets an agent join; returns the provider conversation id.
    async fn chat_with_agent(&self, conv: &str, integration: u32) -> String {
        let params = if integration == ZD {
            json!({"integration_id": integration, "subject": format!("Atendimento {conv}")})
        } else {
            json!({"integration_id": integration})
        };
        let contact = json!({"name": "Ana Souza", "email": format!("{conv}@example.com")});
        let (s, v) = post(
            &self.base,
            &format!("/v1/conversations/{conv}/run"),
            json!({"flow": [{"name": "start_live_chat", "parameters": params}],
                   "context": {"contact": contact}}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let pid = v["live_chat"]["provider_conversation_id"]
            .as_str()
            .expect("a live chat")
            .to_string();
        self.sb.join(&pid, &JoinRequest::default()).await.unwrap();
        // The sandbox sends LivePerson webhooks to integration 7's route only.
        if integration != LP_LINKS {
            self.wait_event(conv, "agent_joined").await;
        }
        pid
    }

    async fn wait_event(&self, conv: &str, kind: &str) -> Value {
        eventually(&format!("{kind} for {conv}"), || {
            let found = self
                .rx
                .for_conv(conv)
                .into_iter()
                .rev()
                .find(|e| e["type"] == kind);
            async move { found }
        })
        .await
    }

    async fn send(&self, conv: &str, body: Value) -> (u16, Value) {
        post(
            &self.base,
            &format!("/v1/conversations/{conv}/messages"),
            body,
        )
        .await
    }

    async fn typing(&self, conv: &str, typing: bool) -> (u16, Value) {
        post(
            &self.base,
            &format!("/v1/conversations/{conv}/typing"),
            json!({ "typing": typing }),
        )
        .await
    }

    async fn pconv(&self, id: &str) -> ConversationView {
        self.sb.conversation(id).await.unwrap()
    }

    /// The agent's file, downloaded through the URL the builder got.
    async fn download(&self, url: &str) -> (u16, String, Vec<u8>) {
        let r = reqwest::get(url).await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, ct, r.bytes().await.unwrap().to_vec())
    }
}

fn agent_file(name: &str, ct: &str, data: &[u8]) -> SayFile {
    SayFile {
        name: name.into(),
        content_type: ct.into(),
        data_base64: b64(data),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_files_both_ways_and_typing() {
    let w = World::start().await;
    let photo = bytes(200_000, 1);
    let scan = bytes(50_000, 2);
    let files = file_server(vec![("/scan.jpg", scan.clone())]).await;
    let pid = w.chat_with_agent("lp-files", LP).await;

    // Inline photo with text: stored, then announced, then the text.
    let (s, v) = w
        .send(
            "lp-files",
            json!({"text": "my receipt", "attachments": [
                {"name": "receipt.png", "content_type": "image/png", "data_base64": b64(&photo)}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // From a URL, streamed through the guard.
    let (s, v) = w
        .send(
            "lp-files",
            json!({"attachments": [{"name": "scan.jpg", "content_type": "image/jpeg",
                                    "url": format!("{files}/scan.jpg")}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = w.pconv(&pid).await;
    let got: Vec<(&str, &str, &str)> = c
        .files
        .iter()
        .map(|f| (f.role.as_str(), f.name.as_str(), f.sha256.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("consumer", "receipt.png", sha(&photo).as_str()),
            ("consumer", "scan.jpg", sha(&scan).as_str())
        ]
    );
    assert!(c.transcript.iter().any(|t| t.text == "my receipt"));

    // Typing, user → agent.
    assert_eq!(
        w.typing("lp-files", true).await,
        (202, json!({"relayed": true}))
    );
    assert_eq!(w.pconv(&pid).await.typing.map(|t| t.consumer), Some(true));
    assert_eq!(
        w.typing("lp-files", false).await,
        (202, json!({"relayed": true}))
    );
    assert_eq!(w.pconv(&pid).await.typing.map(|t| t.consumer), Some(false));

    // Typing, agent → builder (best-effort event).
    w.sb.typing(&pid, true).await.unwrap();
    let ev = w.wait_event("lp-files", "agent_typing").await;
    assert_eq!(ev["typing"], true, "{ev}");

    // The agent's file: a signed, expiring /files URL served by the service.
    let form = bytes(30_000, 3);
    w.sb.say_file(
        &pid,
        "Fill this in",
        agent_file("form.png", "image/png", &form),
    )
    .await
    .unwrap();
    let ev = w.wait_event("lp-files", "agent_message").await;
    assert_eq!(ev["text"], "Fill this in", "{ev}");
    let a = &ev["attachments"][0];
    assert_eq!(a["content_type"], "image/png", "{ev}");
    let url = a["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("{}/files/", w.base)), "{url}");
    let (st, ct, body) = w.download(url).await;
    assert_eq!((st, ct.as_str()), (200, "image/png"));
    assert_eq!(sha(&body), sha(&form));
    // A forged token is nobody's file.
    let (st, _, _) = w.download(&format!("{url}x")).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_refusals_send_nothing() {
    let w = World::start().await;
    let pid = w.chat_with_agent("lp-refuse", LP).await;
    let big = bytes(3 * 1024 * 1024 + 1, 4);
    let cases = [
        (
            "type",
            json!({"attachments": [{"name": "contract.pdf", "content_type": "application/pdf",
                                    "data_base64": b64(b"%PDF-1.4")}]}),
        ),
        (
            "size",
            json!({"attachments": [{"name": "huge.png", "content_type": "image/png",
                                    "data_base64": b64(&big)}]}),
        ),
        (
            "declared_size",
            json!({"attachments": [{"name": "huge.png", "content_type": "image/png",
                                    "url": "https://files.example.com/huge.png", "size": 5_000_000}]}),
        ),
        (
            "malformed_base64",
            json!({"text": "see", "attachments": [{"name": "a.png", "content_type": "image/png",
                                    "data_base64": "not base64!!"}]}),
        ),
        (
            "guarded_url",
            json!({"attachments": [{"name": "a.png", "content_type": "image/png",
                                    "url": "http://169.254.169.254/latest/meta-data/a.png"}]}),
        ),
        (
            "both_sources",
            json!({"attachments": [{"name": "a.png", "content_type": "image/png",
                                    "data_base64": "AAAA", "url": "https://x.example/a.png"}]}),
        ),
        ("empty", json!({"attachments": []})),
    ];
    let mut out = serde_json::Map::new();
    for (name, body) in cases {
        let (s, v) = w.send("lp-refuse", body).await;
        out.insert(name.into(), json!({"status": s, "body": v}));
    }
    settings().bind(|| insta::assert_json_snapshot!("liveperson_refusals", out));
    // Nothing reached the agent, and the chat goes on.
    let c = w.pconv(&pid).await;
    assert!(c.files.is_empty(), "{:?}", c.files);
    assert!(!c.transcript.iter().any(|t| t.text == "see"));
    let (_, v) = get(&w.base, "/v1/conversations/lp-refuse/live_chat").await;
    assert_eq!(v["live_chat"]["state"], "with_agent", "{v}");

    // A failed upload is not announced: the storage refuses the PUT.
    w.sb.add_fault(&FaultRule {
        provider: Provider::Liveperson,
        endpoint: "storage".into(),
        fault: Fault {
            status: Some(403),
            ..Fault::default()
        },
        times: 1,
    })
    .await
    .unwrap();
    let (s, v) = w
        .send(
            "lp-refuse",
            json!({"text": "after the photo", "attachments": [{"name": "a.png",
                   "content_type": "image/png", "data_base64": b64(&bytes(100, 5))}]}),
        )
        .await;
    assert_eq!(s, 502, "{v}");
    let c = w.pconv(&pid).await;
    assert!(c.files.is_empty(), "{:?}", c.files);
    assert!(!c.transcript.iter().any(|t| t.text == "after the photo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_links_where_the_integration_allows_them() {
    let w = World::start().await;
    let pid = w.chat_with_agent("lp-links", LP_LINKS).await;
    let (s, v) = w
        .send(
            "lp-links",
            json!({"attachments": [{"name": "contract.pdf", "content_type": "application/pdf",
                                    "url": "https://files.example.com/contract.pdf"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = w.pconv(&pid).await;
    assert!(
        c.transcript
            .iter()
            .any(|t| t.text == "contract.pdf: https://files.example.com/contract.pdf"),
        "{:?}",
        c.transcript
    );
    // Inline bytes of a type LivePerson cannot host have no link to send.
    let (s, v) = w
        .send(
            "lp-links",
            json!({"attachments": [{"name": "contract.pdf", "content_type": "application/pdf",
                                    "data_base64": b64(b"%PDF")}]}),
        )
        .await;
    assert_eq!(s, 415, "{v}");
    assert_eq!(v["error"]["code"], "unsupported_attachment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_uploads_and_agent_attachments() {
    let w = World::start().await;
    let pid = w.chat_with_agent("zd-files", ZD).await;
    let photo = bytes(120_000, 6);
    let pdf = bytes(9_000, 7);
    let (s, v) = w
        .send(
            "zd-files",
            json!({"text": "both pages", "attachments": [
                {"name": "page1.jpg", "content_type": "image/jpeg", "data_base64": b64(&photo)},
                {"name": "terms.pdf", "content_type": "application/pdf", "data_base64": b64(&pdf)}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = w.pconv(&pid).await;
    let got: Vec<(&str, &str)> = c
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.sha256.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("page1.jpg", sha(&photo).as_str()),
            ("terms.pdf", sha(&pdf).as_str())
        ]
    );
    assert!(c.transcript.iter().any(|t| t.text == "both pages"));
    // No typing indicator on a ticket.
    assert_eq!(
        w.typing("zd-files", true).await,
        (202, json!({"relayed": false}))
    );
    // Over 50 MB, declared: refused before anything is fetched.
    let (s, v) = w
        .send(
            "zd-files",
            json!({"attachments": [{"name": "video.mp4", "content_type": "video/mp4",
                   "url": "https://files.example.com/video.mp4", "size": 60_000_000}]}),
        )
        .await;
    settings().bind(|| {
        insta::assert_json_snapshot!("zendesk_size_refusal", json!({"status": s, "body": v}))
    });
    // The agent's file reaches the builder with Zendesk's content_url.
    let form = bytes(20_000, 8);
    w.sb.say_file(&pid, "", agent_file("form.pdf", "application/pdf", &form))
        .await
        .unwrap();
    let ev = w.wait_event("zd-files", "agent_message").await;
    let a = &ev["attachments"][0];
    assert_eq!(
        (a["name"].as_str(), a["size"].as_u64()),
        (Some("form.pdf"), Some(20_000))
    );
    let (st, _, body) = w.download(a["url"].as_str().unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(sha(&body), sha(&form));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altu_v1_2_attachments_and_typing() {
    let w = World::start().await;
    let pid = w.chat_with_agent("altu-files", ALTU).await;
    let doc = bytes(70_000, 9);
    let (s, v) = w
        .send(
            "altu-files",
            json!({"attachments": [{"name": "id.pdf", "content_type": "application/pdf",
                                    "data_base64": b64(&doc)}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let c = w.pconv(&pid).await;
    assert_eq!(c.files.len(), 1);
    assert_eq!(c.files[0].sha256, sha(&doc));
    assert_eq!(
        w.typing("altu-files", true).await,
        (202, json!({"relayed": true}))
    );
    assert_eq!(w.pconv(&pid).await.typing.map(|t| t.consumer), Some(true));

    w.sb.typing(&pid, true).await.unwrap();
    let ev = w.wait_event("altu-files", "agent_typing").await;
    assert_eq!(ev["typing"], true);
    let reply = bytes(10_000, 10);
    w.sb.say_file(
        &pid,
        "signed",
        agent_file("signed.pdf", "application/pdf", &reply),
    )
    .await
    .unwrap();
    let ev = w.wait_event("altu-files", "agent_message").await;
    assert_eq!(ev["text"], "signed");
    let (st, _, body) = w
        .download(ev["attachments"][0]["url"].as_str().unwrap())
        .await;
    assert_eq!(st, 200);
    assert_eq!(sha(&body), sha(&reply));
}
