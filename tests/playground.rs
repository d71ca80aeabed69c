//! The playground's HTTP API, against a real `Playground` (page server, in-process
//! sandbox and lifecycle service, all over loopback HTTP): check and dry run on the
//! editor's texts, real runs on all three providers played to their re-entry, and every
//! malformed request's error body (snapshotted).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use transbordo::playground::{Playground, PlaygroundError, PlaygroundOptions};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    // Ports are picked at random.
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    s
}

const CONTEXT: &str = include_str!("../examples/context.json");

/// A flow with a misspelt LivePerson parameter on line 6 (`skil_id`).
const MISSPELT: &str = r#"[
  {
    "name": "start_live_chat",
    "parameters": {
      "integration_id": 7,
      "skil_id": 1589664150,
      "start_message": "Cliente <? contact.name ?> pediu atendimento"
    },
    "result_variable": "lp"
  }
]"#;

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(pg: &Playground) -> Client {
        Client {
            base: pg.base_url(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("the playground answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, 200, "{path}: {v:#}");
        v
    }

    /// Runs a flow for real; returns the conversation id.
    async fn run(&self, flow: &str) -> (String, Value) {
        let v = self
            .ok("/api/run", json!({"flow": flow, "context": CONTEXT}))
            .await;
        let conv = v["conversation"].clone();
        let id = conv["conversation_id"]
            .as_str()
            .expect("conversation id")
            .to_string();
        (id, conv)
    }

    /// Polls the conversation list until `pred` holds for `id`.
    async fn until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (_, all) = self.get("/api/conversations").await;
            let conv = all["conversations"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["conversation_id"] == id))
                .cloned()
                .unwrap_or(Value::Null);
            if pred(&conv) {
                return conv;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}: {conv:#}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

async fn playground() -> (Playground, Client) {
    let pg = Playground::start(PlaygroundOptions::ephemeral())
        .await
        .expect("the playground starts");
    let c = Client::new(&pg);
    (pg, c)
}

fn transcript(conv: &Value) -> Vec<(String, String)> {
    conv["provider_conversation"]["transcript"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        t["role"].as_str().unwrap_or("").to_string(),
                        t["text"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_shows_a_misspelt_parameter_at_its_line_as_the_cli_does() {
    let (pg, c) = playground().await;
    let v = c
        .ok("/api/check", json!({"flow": MISSPELT, "context": CONTEXT}))
        .await;
    assert_eq!(v["errors"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(6), Some(18))
    );
    // The marked range is the parameter's value (UTF-16 offsets into the editor's text).
    let from = d["from"].as_u64().unwrap() as usize;
    let to = d["to"].as_u64().unwrap() as usize;
    assert_eq!(&MISSPELT[from..to], "1589664150");
    // The same message and help as `transbordo check --format json`.
    let engine = transbordo::Engine::new().with_integrations(
        transbordo::providers::Integrations::from_toml_str(
            include_str!("../examples/sandbox-integrations.toml"),
            "i.toml",
        )
        .unwrap(),
    );
    let sample: Value = serde_json::from_str(CONTEXT).unwrap();
    let cli = engine.check(MISSPELT, "flow.json", Some(&sample));
    assert_eq!(d["message"], json!(cli[0].message));
    assert_eq!(d["help"], json!(cli[0].help));
    settings().bind(|| insta::assert_snapshot!("check_misspelt", v["human"].as_str().unwrap()));
    settings().bind(|| insta::assert_json_snapshot!("check_misspelt_json", v));

    // Fixed: no problem, and the dry run shows the LivePerson request with its skillId.
    let fixed = MISSPELT.replace("skil_id", "skill_id");
    let v = c
        .ok("/api/check", json!({"flow": fixed, "context": CONTEXT}))
        .await;
    assert_eq!(
        (v["errors"].as_u64(), v["warnings"].as_u64()),
        (Some(0), Some(0))
    );
    let doc = c
        .ok("/api/render", json!({"flow": fixed, "context": CONTEXT}))
        .await;
    let requests = doc["requests"].as_array().unwrap();
    let conv = requests
        .iter()
        .find(|r| {
            r["url"]
                .as_str()
                .unwrap_or("")
                .contains("/messaging/consumer/conversation?")
        })
        .expect("the conversation request");
    let text = conv["body"].to_string();
    // Typed: the number stays a number.
    assert!(text.contains(r#""skillId":1589664150"#), "{text}");
    // Secrets never shown.
    let all = doc.to_string();
    assert!(!all.contains("sandbox-secret"), "{all}");
    assert!(all.contains("[redacted]"));
    assert_eq!(doc["trace"][0]["name"], "start_live_chat");
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn context_problems_are_shown_at_their_line() {
    let (pg, c) = playground().await;
    let flow = r#"[{"name": "send_message", "parameters": {"text": "oi <? $nome ?>"}}]"#;
    let bad = "{\n  \"contact\": {},\n  \"contxt\": {}\n}";
    let v = c
        .ok("/api/check", json!({"flow": flow, "context": bad}))
        .await;
    settings().bind(|| insta::assert_json_snapshot!("check_bad_context", v["context_error"]));
    let v = c
        .ok(
            "/api/check",
            json!({"flow": flow, "context": "{\"context\": "}),
        )
        .await;
    settings().bind(|| insta::assert_json_snapshot!("check_context_syntax", v["context_error"]));
    // A valid context: no problem, and the flow's own check is unaffected either way.
    let v = c
        .ok(
            "/api/check",
            json!({"flow": flow, "context": "{\"context\": {\"nome\": \"Ana\"}}"}),
        )
        .await;
    assert_eq!(v["context_error"], Value::Null, "{v:#}");
    assert_eq!(v["diagnostics"], json!([]), "{v:#}");
    // The sample context counts, as with `check --context`: without `nome`, a warning
    // marking `$nome` inside the string.
    let v = c
        .ok(
            "/api/check",
            json!({"flow": flow, "context": "{\"context\": {}}"}),
        )
        .await;
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "flow::unset_variable", "{v:#}");
    let (from, to) = (d["from"].as_u64().unwrap(), d["to"].as_u64().unwrap());
    assert_eq!(&flow[from as usize..to as usize], "$nome");
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn liveperson_run_join_write_close_as_agent_ends_agent_closed() {
    let (pg, c) = playground().await;
    let fixed = MISSPELT.replace("skil_id", "skill_id");
    let (id, conv) = c.run(&fixed).await;
    assert_eq!(conv["live_chat"]["provider"], "liveperson");
    assert_eq!(conv["live_chat"]["state"], "waiting");
    assert_eq!(conv["provider_conversation"]["skill_id"], "1589664150");
    assert_eq!(
        transcript(&conv),
        [(
            "consumer".to_string(),
            "Cliente Ana Souza pediu atendimento".to_string()
        )]
    );
    // Saying anything before a join is the sandbox's 409.
    let (status, err) = c
        .post(
            &format!("/api/conversations/{id}/agent_message"),
            json!({"text": "cedo demais"}),
        )
        .await;
    assert_eq!(status, 409);
    settings().bind(|| insta::assert_json_snapshot!("say_before_join", err));

    c.ok(&format!("/api/conversations/{id}/join"), json!({}))
        .await;
    c.ok(
        &format!("/api/conversations/{id}/agent_message"),
        json!({"text": "Olá, sou a Bia"}),
    )
    .await;
    c.ok(
        &format!("/api/conversations/{id}/user_message"),
        json!({"text": "oi, preciso de ajuda"}),
    )
    .await;
    let v = c
        .ok(
            &format!("/api/conversations/{id}/close"),
            json!({"by": "agent"}),
        )
        .await;
    assert_eq!(
        v["conversation"]["provider_conversation"]["status"],
        "closed"
    );
    let conv = c
        .until(&id, "agent_closed", |c| !c["reentry"].is_null())
        .await;
    assert_eq!(
        conv["reentry"],
        json!({"live_chat": {"status": "agent_closed"}})
    );
    assert_eq!(conv["live_chat"]["state"], "ended");
    let t = transcript(&conv);
    assert!(
        t.contains(&("agent".into(), "Olá, sou a Bia".into())),
        "{t:?}"
    );
    assert!(
        t.contains(&("consumer".into(), "oi, preciso de ajuda".into())),
        "{t:?}"
    );
    let types: Vec<&str> = conv["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["agent_joined", "agent_message", "live_chat_ended"]);

    // After the end: the user cannot write any more (the service's own answer).
    let (status, err) = c
        .post(
            &format!("/api/conversations/{id}/user_message"),
            json!({"text": "ainda aí?"}),
        )
        .await;
    assert_eq!(status, 409);
    settings().bind(|| insta::assert_json_snapshot!("user_message_after_end", err));
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zendesk_ticket_closed_by_the_user_ends_user_closed() {
    let (pg, c) = playground().await;
    let (id, conv) = c.run(include_str!("../examples/zendesk-ticket.json")).await;
    assert_eq!(conv["live_chat"]["provider"], "zendesk");
    assert_eq!(
        conv["run"]["messages"][0]["message"]["text"],
        "Aguarde um minuto..."
    );
    c.ok(&format!("/api/conversations/{id}/join"), json!({}))
        .await;
    c.ok(
        &format!("/api/conversations/{id}/agent_message"),
        json!({"text": "Vou verificar seu pedido"}),
    )
    .await;
    c.ok(
        &format!("/api/conversations/{id}/close"),
        json!({"by": "user"}),
    )
    .await;
    let conv = c
        .until(&id, "user_closed", |c| !c["reentry"].is_null())
        .await;
    assert_eq!(
        conv["reentry"],
        json!({"live_chat": {"status": "user_closed"}})
    );
    assert_eq!(conv["provider_conversation"]["status"], "closed");
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn altu_and_liveperson_side_by_side_each_to_its_own_end() {
    let (pg, c) = playground().await;
    let (altu, conv) = c.run(include_str!("../examples/altu-handoff.json")).await;
    assert_eq!(conv["live_chat"]["provider"], "altu_sdk");
    let (lp, _) = c.run(include_str!("../examples/node.json")).await;
    assert_ne!(altu, lp);
    c.ok(&format!("/api/conversations/{altu}/join"), json!({}))
        .await;
    c.ok(
        &format!("/api/conversations/{altu}/close"),
        json!({"by": "agent"}),
    )
    .await;
    let conv = c
        .until(&altu, "altu agent_closed", |c| !c["reentry"].is_null())
        .await;
    assert_eq!(
        conv["reentry"],
        json!({"live_chat": {"status": "agent_closed"}})
    );
    // The other conversation is untouched.
    let (_, all) = c.get("/api/conversations").await;
    let other = all["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conversation_id"] == lp.as_str())
        .cloned()
        .unwrap();
    assert_eq!(other["live_chat"]["state"], "waiting");
    assert_eq!(other["reentry"], Value::Null);
    assert!(
        other["live_chat"]["deadlines"]["wait_ms"].is_i64(),
        "{other:#}"
    );
    // The user gives up before any agent joins: user_closed, the provider side closed.
    c.ok(
        &format!("/api/conversations/{lp}/close"),
        json!({"by": "user"}),
    )
    .await;
    let other = c
        .until(&lp, "liveperson user_closed", |c| !c["reentry"].is_null())
        .await;
    assert_eq!(
        other["reentry"],
        json!({"live_chat": {"status": "user_closed"}})
    );
    assert_eq!(other["provider_conversation"]["status"], "closed");
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_a_clear_error() {
    let (pg, c) = playground().await;
    let mut out = Vec::new();
    let mut record = |what: &str, (status, body): (u16, Value)| {
        out.push(json!({"request": what, "status": status, "body": body}));
    };
    let url = |p: &str| format!("{}{p}", c.base);
    record(
        "check, text/plain body",
        c.send(c.http.post(url("/api/check")).body("{}")).await,
    );
    record(
        "check, body not JSON",
        c.send(
            c.http
                .post(url("/api/check"))
                .header("content-type", "application/json")
                .body("{flow"),
        )
        .await,
    );
    record("check, an array", c.post("/api/check", json!([])).await);
    record("check, no flow", c.post("/api/check", json!({})).await);
    record(
        "check, flow as parsed JSON",
        c.post("/api/check", json!({"flow": []})).await,
    );
    record(
        "render, strict not a boolean",
        c.post("/api/render", json!({"flow": "[]", "strict": "yes"}))
            .await,
    );
    record(
        "render, flow not loadable",
        c.post(
            "/api/render",
            json!({"flow": "[{\"name\": \"send_mesage\"}]"}),
        )
        .await,
    );
    record(
        "render, context not a context",
        c.post(
            "/api/render",
            json!({"flow": "[]", "context": "{\"contexto\": {}}"}),
        )
        .await,
    );
    record(
        "run, misspelt parameter",
        c.post("/api/run", json!({"flow": MISSPELT, "context": CONTEXT}))
            .await,
    );
    record(
        "join, unknown conversation",
        c.post("/api/conversations/pg-404/join", json!({})).await,
    );
    let (no_chat, _) = c
        .run(r#"[{"name": "send_message", "parameters": {"text": "só o bot"}}]"#)
        .await;
    record(
        "join, conversation without a live chat",
        c.post(&format!("/api/conversations/{no_chat}/join"), json!({}))
            .await,
    );
    let (lp, _) = c.run(include_str!("../examples/node.json")).await;
    record(
        "agent message, empty text",
        c.post(
            &format!("/api/conversations/{lp}/agent_message"),
            json!({"text": " "}),
        )
        .await,
    );
    record(
        "close, by system",
        c.post(
            &format!("/api/conversations/{lp}/close"),
            json!({"by": "system"}),
        )
        .await,
    );
    record(
        "close, no by",
        c.post(&format!("/api/conversations/{lp}/close"), json!({}))
            .await,
    );
    record(
        "check, a body over the 2 MB limit",
        // Its own client: the server answers 413 without reading the rest and closes
        // the connection, which a pooled client could otherwise reuse for the next one.
        c.send(
            reqwest::Client::new()
                .post(url("/api/check"))
                .header("content-type", "application/json")
                .body(vec![b' '; 3 << 20]),
        )
        .await,
    );
    record("unknown route", c.get("/api/nothing").await);
    record(
        "a foreign Host header (DNS rebinding)",
        c.send(
            c.http
                .get(url("/api/info"))
                .header("host", "attacker.example:8930"),
        )
        .await,
    );
    record(
        "builder event without a signature",
        c.post(
            "/_builder/events",
            json!({"type": "live_chat_ended", "conversation_id": lp}),
        )
        .await,
    );
    settings().bind(|| insta::assert_json_snapshot!("error_bodies", out));
    // A forged end did not reach the conversation.
    let (_, all) = c.get("/api/conversations").await;
    assert!(all["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["reentry"].is_null()));
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_and_assets_are_embedded_and_self_contained() {
    let (pg, c) = playground().await;
    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let resp = c
            .http
            .get(format!("{}{path}", c.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], ct, "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        let body = resp.text().await.unwrap();
        // Nothing is loaded from the internet.
        for external in ["http://", "https://", "//cdn", "@import"] {
            assert!(!body.contains(external), "{path} mentions {external}");
        }
    }
    let (status, info) = c.get("/api/info").await;
    assert_eq!(status, 200);
    let providers: Vec<&str> = info["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["provider"].as_str())
        .collect();
    assert_eq!(providers, ["liveperson", "zendesk", "altu_sdk"]);
    let text = info.to_string();
    for secret in ["sandbox-secret", "sandbox-token", "sandbox-access-key"] {
        assert!(!text.contains(secret), "info shows {secret}");
    }
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_address_needs_the_explicit_opt_in() {
    let opts = PlaygroundOptions {
        bind: "0.0.0.0:0".parse().unwrap(),
        allow_non_loopback: false,
    };
    let err = match Playground::start(opts).await {
        Err(e) => e,
        Ok(_) => panic!("0.0.0.0 was accepted without --listen"),
    };
    assert!(matches!(err, PlaygroundError::NotLoopback(_)));
    settings().bind(|| insta::assert_snapshot!("non_loopback_refused", err.to_string()));
}

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");

#[test]
fn the_binary_serves_the_page_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(BIN)
        .args(["playground", "--port", "0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut first = String::new();
    BufReader::new(stderr)
        .read_line(&mut first)
        .expect("a line on stderr");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .map(|w| w.trim_end_matches('/').to_string());
    let Some(url) = url else {
        let _ = child.kill();
        panic!("no URL in {first:?}");
    };
    let page = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let resp = reqwest::get(format!("{url}/")).await.expect("page");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        })
    })
    .join()
    .expect("request thread");
    assert_eq!(page.0, 200);
    assert!(page.1.contains("<title>transbordo playground</title>"));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn port_and_listen_cannot_be_given_together() {
    let out = std::process::Command::new(BIN)
        .args(["playground", "--port", "1", "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    settings()
        .bind(|| insta::assert_snapshot!("port_and_listen", String::from_utf8_lossy(&out.stderr)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_strict_switch_reaches_the_dry_run() {
    let (pg, c) = playground().await;
    let flow = r#"[{"name": "send_message", "parameters": {"text": "Oi <? contact.apelido ?>"}}]"#;
    let lenient = c
        .ok("/api/render", json!({"flow": flow, "context": CONTEXT}))
        .await;
    assert_eq!(lenient["messages"][0]["message"]["text"], "Oi ");
    assert_eq!(lenient["trace"][0]["result"]["status"], "ok");
    let strict = c
        .ok(
            "/api/render",
            json!({"flow": flow, "context": CONTEXT, "strict": true}),
        )
        .await;
    assert_eq!(strict["messages"], json!([]), "{strict:#}");
    assert_eq!(
        strict["trace"][0]["result"]["status"], "error",
        "{strict:#}"
    );
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let opts = PlaygroundOptions {
        bind: taken.local_addr().expect("addr"),
        allow_non_loopback: false,
    };
    let err = match Playground::start(opts).await {
        Err(e) => e,
        Ok(_) => panic!("a taken port was accepted"),
    };
    assert!(matches!(err, PlaygroundError::Bind { .. }));
    settings().bind(|| insta::assert_snapshot!("busy_port", err.to_string()));
}

/// A loopback "internal admin" endpoint counting its requests.
async fn counting_admin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            "admin"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (addr, hits)
}

/// The playground's own lifecycle service is not a side door: without the token only
/// the playground holds, with a foreign `Host`, or with a cross-site `text/plain` body,
/// nothing runs there (the sandbox sees no conversation); the page's own runs still work.
#[tokio::test(flavor = "multi_thread")]
async fn the_inner_service_admits_only_the_playground() {
    let (pg, c) = playground().await;
    let svc = pg.service_url();
    assert!(svc.starts_with("http://127.0.0.1:"), "{svc}");
    assert_ne!(svc, pg.base_url());
    let flow = json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": 7}}]})
        .to_string();
    let run = format!("{svc}/v1/conversations/side-door/run");
    let mut out = Vec::new();
    for (what, ct, host, auth) in [
        ("JSON without the token", "application/json", None, None),
        ("text/plain (a cross-site post)", "text/plain", None, None),
        (
            "form-encoded (a cross-site form)",
            "application/x-www-form-urlencoded",
            None,
            None,
        ),
        (
            "a guessed token",
            "application/json",
            None,
            Some("Bearer 0123456789abcdef0123456789abcdef"),
        ),
        (
            "a foreign Host (DNS rebinding)",
            "application/json",
            Some("evil.example".to_string()),
            None,
        ),
    ] {
        let mut rb = c
            .http
            .post(&run)
            .header("content-type", ct)
            .body(flow.clone());
        if let Some(h) = &host {
            rb = rb.header("host", h);
        }
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let (status, body) = c.send(rb).await;
        assert!(status == 401 || status == 403, "{what}: {status} {body}");
        out.push(json!({"request": what, "status": status, "body": body}));
    }
    // Reading is refused the same way.
    let (status, body) = c
        .send(c.http.get(format!("{svc}/v1/conversations/pg-1/live_chat")))
        .await;
    assert_eq!(status, 401, "{body}");
    settings().bind(|| insta::assert_json_snapshot!("inner_service_refusals", out));
    // Nothing started on the sandbox.
    let sandbox = reqwest::get(format!("{}/_sandbox/conversations", pg.sandbox_url()))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(sandbox["conversations"], json!([]), "{sandbox}");
    // The page's own run goes through (and the witness above can see it).
    let (_, conv) = c.run(include_str!("../examples/node.json")).await;
    assert!(conv["provider_conversation"].is_object(), "{conv:#}");
    let sandbox = reqwest::get(format!("{}/_sandbox/conversations", pg.sandbox_url()))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(sandbox["conversations"].as_array().map(Vec::len), Some(1));
    pg.shutdown().await;
}

/// A flow run from the page may reach the sandbox, but not another loopback service
/// (an "internal admin" on this machine): `http_request` answers `forbidden` and the
/// admin endpoint is never hit.
#[tokio::test(flavor = "multi_thread")]
async fn http_request_from_the_page_reaches_the_sandbox_but_not_loopback() {
    let (admin, hits) = counting_admin().await;
    let (pg, c) = playground().await;
    let flow = json!([
        {"name": "http_request",
         "parameters": {"config": {"url": format!("http://{admin}/admin"), "timeout": 3000}},
         "result_variable": "admin"},
        {"name": "http_request",
         "parameters": {"config": {"url": format!("http://localhost:{}/admin", admin.port()), "timeout": 3000}},
         "result_variable": "admin_by_name"},
        {"name": "http_request",
         "parameters": {"config": {"url": format!("{}/_sandbox/conversations", pg.sandbox_url()), "timeout": 3000}},
         "result_variable": "sandbox"}
    ])
    .to_string();
    let (_, conv) = c.run(&flow).await;
    let ctx = &conv["run"]["context"];
    for key in ["admin", "admin_by_name"] {
        assert_eq!(ctx[key]["status"], "error", "{key}: {ctx:#}");
        assert_eq!(ctx[key]["error"]["kind"], "forbidden", "{key}: {ctx:#}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(ctx["sandbox"]["status"], "ok", "{ctx:#}");
    assert!(
        ctx["sandbox"]["body"]["conversations"].is_array(),
        "{ctx:#}"
    );
    let admin_error = ctx["admin"]["error"].clone();
    settings()
        .bind(|| insta::assert_json_snapshot!("http_request_loopback_forbidden", admin_error));
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_console_carries_files_and_typing_both_ways() {
    use base64::Engine as _;
    let (pg, c) = playground().await;
    let fixed = MISSPELT.replace("skil_id", "skill_id");
    let (id, _) = c.run(&fixed).await;
    c.ok(&format!("/api/conversations/{id}/join"), json!({}))
        .await;
    // The user sends a photo through the service; the provider side lists it.
    let photo: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
    let conv = c
        .ok(
            &format!("/api/conversations/{id}/user_message"),
            json!({"text": "the receipt", "attachments": [
                {"name": "receipt.png", "content_type": "image/png", "data_base64": b64}]}),
        )
        .await;
    let files = &conv["conversation"]["provider_conversation"]["files"];
    assert_eq!(files[0]["name"], "receipt.png", "{conv:#}");
    assert_eq!(files[0]["size"], 5000);
    // Typing both ways.
    let conv = c
        .ok(
            &format!("/api/conversations/{id}/typing"),
            json!({"who": "user", "typing": true}),
        )
        .await;
    assert_eq!(
        conv["conversation"]["provider_conversation"]["typing"]["consumer"],
        true
    );
    c.ok(
        &format!("/api/conversations/{id}/typing"),
        json!({"who": "agent", "typing": true}),
    )
    .await;
    c.until(&id, "agent_typing", |v| {
        v["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "agent_typing"))
    })
    .await;
    // The agent answers with an image; the page shows it through /api/attachment.
    let form: Vec<u8> = (0..3000u32).map(|i| (i % 13) as u8).collect();
    c.ok(
        &format!("/api/conversations/{id}/agent_message"),
        json!({"text": "fill this in", "attachments": [{"name": "form.png",
               "content_type": "image/png",
               "data_base64": base64::engine::general_purpose::STANDARD.encode(&form)}]}),
    )
    .await;
    let conv = c
        .until(&id, "the agent's file", |v| {
            v["events"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["type"] == "agent_message" && e["attachments"].is_array())
            })
        })
        .await;
    let ev = conv["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["attachments"].is_array())
        .unwrap()
        .clone();
    let url = ev["attachments"][0]["url"].as_str().unwrap().to_string();
    let resp = c
        .http
        .get(format!("{}/api/attachment", c.base))
        .query(&[("u", url.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), form);
    // Not a proxy to anywhere else.
    let (status, _) = c
        .get("/api/attachment?u=http%3A%2F%2F127.0.0.1%3A1%2Fx")
        .await;
    assert_eq!(status, 400);
    pg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clock_field_reaches_the_dry_run() {
    let (pg, c) = playground().await;
    let (status, html) = c.get("/").await;
    assert_eq!(status, 200);
    assert!(
        html.as_str().is_some_and(|h| h.contains("id=\"now\"")),
        "the page has a clock field"
    );
    let flow = r#"[{"name": "send_message", "parameters": {"text": "oi"}}]"#;
    // A clock the dry run accepts (empty: the system's), and one it refuses clearly.
    for now in [json!("2026-12-23T12:30:00-03:00"), json!(""), json!(null)] {
        c.ok(
            "/api/render",
            json!({"flow": flow, "context": CONTEXT, "now": now}),
        )
        .await;
    }
    let (s, e) = c
        .post(
            "/api/render",
            json!({"flow": flow, "context": CONTEXT, "now": "amanhã"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(e.to_string().contains("RFC 3339"), "{e}");
    pg.shutdown().await;
}
