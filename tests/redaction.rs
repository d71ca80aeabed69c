//! The one redaction policy, end to end: a flow full of secrets (credential headers,
//! secret query and body keys, configured secret values in a URL, a message and an error)
//! goes through every output — `render` requests, `render --trace`, `run --trace`, the
//! service's run answer and timeline (read back through its API), the logs of a real
//! `transbordo serve` process — and none of the secrets comes out. Then `[timeline]
//! include_text = false`: no user text in the timeline at all.

mod process_support;
mod service_common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use process_support::{scaled, Replica, BIN};
use serde_json::{json, Value};
use service_common::{Receiver, API_TOKEN, BUILDER_SECRET};
use transbordo::sandbox::{Sandbox, SandboxOptions};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

/// Secrets the flow itself holds under credential headers and secret keys.
const FLOW_SECRETS: [&str; 10] = [
    "QUERY-KEY-1111",
    "PARAM-TOKEN-2222",
    "COOKIE-3333",
    "PROXY-4444",
    "APIKEY-5555",
    "XAPIKEY-6666",
    "BODY-PASS-7777",
    "BODY-SECRET-8888",
    "REFRESH-9999",
    "ERRTOKEN-1212",
];
/// What the CRM answers with: a cookie and a token in the body.
const ANSWER_SECRETS: [&str; 2] = ["SETCOOKIE-1313", "RESP-TOKEN-1414"];
/// The sandbox integrations' credentials (`examples/sandbox-integrations.toml`).
const INTEGRATION_SECRETS: [&str; 5] = [
    "sandbox-secret",
    "sandbox-token",
    "sandbox-webhook-secret",
    "sandbox-access-token",
    "sandbox-access-key",
];

/// The flow: an `http_request` with every kind of secret, a message quoting configured
/// secrets, a request whose URL is invalid (its error quotes it), a Zendesk handoff.
/// `service_secrets` are quoted in the message too (only the service knows them).
fn flow(crm: &str, service_secrets: &[&str]) -> Value {
    json!([
        {"name": "http_request", "result_variable": "crm", "parameters": {"config": {
            "url": format!("{crm}/crm/sandbox-token/orders?api_key=QUERY-KEY-1111&page=2"),
            "method": "post",
            "params": {"access_token": "PARAM-TOKEN-2222", "q": "ok"},
            "headers": {
                "Cookie": "session=COOKIE-3333",
                "Proxy-Authorization": "Basic PROXY-4444",
                "apikey": "APIKEY-5555",
                "X-Api-Key": "XAPIKEY-6666",
                "X-Channel": "whatsapp"
            },
            "data": {
                "password": "BODY-PASS-7777",
                "profile": {"client_secret": "BODY-SECRET-8888", "refresh_token": "REFRESH-9999"},
                "note": "signed with sandbox-webhook-secret"
            }
        }}},
        {"name": "send_message", "parameters": {"text": format!(
            "codes: sandbox-access-key sandbox-secret {}", service_secrets.join(" "))}},
        {"name": "http_request", "result_variable": "broken", "parameters": {"config": {
            "url": "http://exa mple.com/<? contact.name ?>?token=ERRTOKEN-1212&k=sandbox-access-token"}}},
        {"name": "start_live_chat", "parameters": {"integration_id": 1,
            "subject": "Pedido <? contact.name ?>", "start_message": "Cliente pediu atendimento"}}
    ])
}

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows `{s}`:\n{text}");
    }
}

/// `transbordo <args>`: exit code, stdout, stderr.
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("TRANSBORDO_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run transbordo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn crm() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("set-cookie", "sid=SETCOOKIE-1313; HttpOnly")
                .set_body_json(json!({"access_token": "RESP-TOKEN-1414", "order": "ok"})),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox");
    let crm = crm().await;
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations.toml");
    std::fs::write(
        &integrations,
        process_support::integrations_toml(&sandbox.base_url(), 0, 0, 0),
    )
    .unwrap();
    let context = dir.path().join("context.json");
    std::fs::write(&context, r#"{"contact": {"name": "Ana"}}"#).unwrap();
    let flow_path = dir.path().join("flow.json");
    std::fs::write(&flow_path, flow(&crm.uri(), &[]).to_string()).unwrap();
    let all: Vec<&str> = FLOW_SECRETS
        .iter()
        .chain(&ANSWER_SECRETS)
        .chain(&INTEGRATION_SECRETS)
        .copied()
        .collect();
    let f = flow_path.to_str().unwrap();
    let i = integrations.to_str().unwrap();
    let c = context.to_str().unwrap();

    // `render`: the requests it would send, and the trace.
    let (code, out, err) = cli(&["render", f, "--integrations", i, "--context", c]);
    assert_eq!(code, 0, "{err}");
    assert_clean("render", &out, &all);
    assert_clean("render's stderr", &err, &all);
    let doc: Value = serde_json::from_str(&out).unwrap();
    // The two servers' ports change every run.
    let filters = [
        (regex::escape(&crm.uri()), "[crm]".to_string()),
        (regex::escape(&sandbox.base_url()), "[sandbox]".to_string()),
    ];
    settings().bind(|| {
        let filters: Vec<(&str, &str)> = filters
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        insta::with_settings!({filters => filters}, {
            insta::assert_json_snapshot!("render_document", doc);
        });
    });
    let (code, out, err) = cli(&["render", f, "--integrations", i, "--context", c, "--trace"]);
    assert_eq!(code, 0, "{err}");
    assert_clean("render --trace", &out, &all);
    let doc: Value = serde_json::from_str(&out).unwrap();
    // The policy hid them; it did not drop them.
    let params = &doc["trace"][0]["parameters"]["config"];
    assert_eq!(params["headers"]["Cookie"], "[redacted]", "{params}");
    assert_eq!(params["headers"]["X-Channel"], "whatsapp", "{params}");
    assert_eq!(params["params"]["q"], "ok", "{params}");
    assert_eq!(params["data"]["profile"]["refresh_token"], "[redacted]");
    assert!(
        params["url"]
            .as_str()
            .unwrap()
            .ends_with("/crm/[redacted]/orders?api_key=[redacted]&page=2"),
        "{params}"
    );

    // `run --trace`: sent for real (the CRM answers with secrets of its own, the
    // sandbox opens the ticket), with logs on.
    let (code, out, err) = cli(&[
        "-vv",
        "run",
        f,
        "--integrations",
        i,
        "--context",
        c,
        "--trace",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_clean("run --trace", &out, &all);
    assert_clean("run's logs", &err, &all);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["context"]["crm"]["body"]["order"], "ok", "{doc}");
    assert_eq!(
        doc["context"]["crm"]["headers"]["set-cookie"], "[redacted]",
        "{doc}"
    );
    assert_eq!(doc["handoff"]["provider"], "zendesk", "{doc}");
    // The error message still says what is wrong, without the secrets.
    let broken = doc["context"]["broken"]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(
        broken.contains("not a valid URL") && broken.contains("token=[redacted]"),
        "{broken}"
    );
    assert_eq!(crm.received_requests().await.unwrap_or_default().len(), 1);

    // The service: a real `transbordo serve`, its answer, its timeline, its logs.
    let (rx_url, _rx) = Receiver::default().start().await;
    let cfg = process_support::write_config(
        dir.path(),
        "state/transbordo.db",
        &rx_url,
        BUILDER_SECRET,
        "TRANSBORDO_REDACTION_TOKEN",
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[http_request]\nallow = [\"127.0.0.0/8\"]\n");
    std::fs::write(&cfg, text).unwrap();
    let mut replica = Replica::new(&cfg, dir.path(), "TRANSBORDO_REDACTION_TOKEN", API_TOKEN);
    replica.spawn().await;
    let service_secrets = [API_TOKEN, BUILDER_SECRET];
    let all_service: Vec<&str> = all.iter().chain(&service_secrets).copied().collect();
    let http = reqwest::Client::builder()
        .timeout(scaled(Duration::from_secs(30)))
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = http
            .request(method, format!("{}{path}", replica.base()))
            .bearer_auth(API_TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.expect("service answers");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or_default())
        }
    };
    let (s, answer) = call(
        reqwest::Method::POST,
        "/v1/conversations/r1/run",
        Some(json!({"flow": flow(&crm.uri(), &service_secrets),
                    "context": {"contact": {"name": "Ana"}}})),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["live_chat"]["state"], "waiting", "{answer}");
    assert_clean("the run's answer", &answer.to_string(), &all_service);
    let (s, timeline) = call(reqwest::Method::GET, "/v1/conversations/r1/timeline", None).await;
    assert_eq!(s, 200, "{timeline}");
    let entries = timeline["handoffs"][0]["entries"].to_string();
    assert!(entries.contains("provider_call"), "{timeline}");
    assert_clean("the timeline", &timeline.to_string(), &all_service);
    let (s, _) = call(
        reqwest::Method::POST,
        "/v1/conversations/r1/close",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    replica.kill();
    let logs = replica.logs();
    assert!(logs.contains("provider request"), "{logs}");
    assert_clean("the service's logs", &logs, &all_service);
    sandbox.shutdown().await;
}

/// With `[timeline] include_text = false` (the default) no user text reaches the
/// timeline: not the contact, the input, the context, `start_message` or a transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_less_timeline_holds_no_user_text() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = Receiver::default().start().await;
    let cfg = service_common::write_config(dir.path(), &url, "[timeline]\ninclude_text = false\n");
    let svc = service_common::start(&cfg, Arc::new(service_common::Recorder::default())).await;
    let user_text = [
        "Ana Privada Souza",
        "ana.privada@example.com",
        "quero cancelar o pedido 4471",
        "pedido atrasado desde segunda",
        "Cliente pediu atendimento urgente",
        "meu cartao foi clonado",
        "Olá, sou o robô",
    ];
    let body = json!({
        "flow": [
            {"name": "set_variables", "parameters": {"context": {"motivo": "<? input.text ?>"}}},
            {"name": "start_live_chat", "parameters": {
                "integration_id": 8,
                "contact": {"name": "<? contact.name ?>", "email": "<? contact.email ?>"},
                "subject": "<? context.resumo ?>",
                "reason": "<? context.motivo ?>",
                "start_message": "Cliente pediu atendimento urgente",
                "transcript": [
                    {"role": "user", "text": "meu cartao foi clonado"},
                    {"role": "bot", "text": "Olá, sou o robô"}
                ],
                "retries": 2,
                "vip": true
            }}
        ],
        "context": {
            "contact": {"name": "Ana Privada Souza", "email": "ana.privada@example.com"},
            "input": {"text": "quero cancelar o pedido 4471"},
            "context": {"resumo": "pedido atrasado desde segunda"}
        }
    });
    let (s, v) = service_common::post(&svc.base, "/v1/conversations/nt1/run", body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["state"], "waiting", "{v}");
    let (s, timeline) = service_common::get(&svc.base, "/v1/conversations/nt1/timeline").await;
    assert_eq!(s, 200, "{timeline}");
    let text = timeline.to_string();
    for t in user_text {
        assert!(!text.contains(t), "the timeline shows `{t}`:\n{timeline:#}");
    }
    let run = timeline["handoffs"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "run")
        .cloned()
        .expect("a run entry");
    // Shapes and lengths stay: what was sent can still be told apart.
    let params = &run["actions"][1]["parameters"];
    assert_eq!(params["retries"], 2, "{run}");
    assert_eq!(
        params["contact"]["name"]["redacted_text"]["length"], 17,
        "{run}"
    );
    // An entry written before this policy (a cookie and user text kept as they were)
    // is read back with the policy applied.
    svc.state
        .store()
        .timeline_append(vec![transbordo::service::store::TimelineEntry {
            live_chat_id: run_handoff(&timeline),
            conversation_id: "nt1".into(),
            at: 1,
            kind: "run".into(),
            data: json!({"flow": "old.json", "actions": [{"index": 0, "name": "http_request",
                "parameters": {"config": {"headers": {"Cookie": "sid=OLD-COOKIE-55"},
                    "data": {"note": "Ana Privada Souza"}}}}]}),
        }])
        .await
        .unwrap();
    let (s, again) = service_common::get(&svc.base, "/v1/conversations/nt1/timeline").await;
    assert_eq!(s, 200, "{again}");
    let text = again.to_string();
    for t in user_text.iter().chain(&["OLD-COOKIE-55"]) {
        assert!(!text.contains(t), "the timeline shows `{t}`:\n{again:#}");
    }
    assert_eq!(
        again["handoffs"][0]["entries"][0]["actions"][0]["parameters"]["config"]["headers"]
            ["Cookie"],
        "[redacted]",
        "{again:#}"
    );
    settings().bind(|| {
        insta::assert_json_snapshot!("text_less_run_entry", run, {
            ".at_ms" => "[at]",
            ".actions[].duration_ms" => "[ms]",
        });
    });
    svc.stop().await;
}

fn run_handoff(timeline: &Value) -> String {
    timeline["handoffs"][0]["handoff_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
