//! A fourth provider needs one file and one registration line: the "echo" provider of
//! `tests/echo_provider/mod.rs` is registered at run time, and then the integrations
//! file, `check`, `render` (dry run), a real run against its fake API over loopback HTTP,
//! and the lifecycle service (its webhooks on `/webhooks/echo/{id}`, relayed messages,
//! close) work with no other code changed.

mod echo_provider;
mod service_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use transbordo::flow::Severity;
use transbordo::providers::{Integrations, LivePersonSettings, ProviderClient, RetryPolicy};
use transbordo::service::provider::ProviderTransport;
use transbordo::service::{serve_with, ServiceConfig, ServiceState};
use transbordo::{Engine, RunOptions, Store};

use echo_provider::EchoSettings;
use service_common::{send_raw, wait_for, write_config, Receiver};

const TOKEN: &str = "echo-token-never-printed";

/// The echo API: records every request `(path, authorization, body)`.
#[derive(Clone, Default)]
struct FakeEcho {
    calls: Arc<Mutex<Vec<(String, String, Value)>>>,
}

impl FakeEcho {
    async fn start(&self) -> String {
        async fn record(
            State(f): State<FakeEcho>,
            Path(rest): Path<String>,
            headers: HeaderMap,
            Json(body): Json<Value>,
        ) -> (StatusCode, Json<Value>) {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if auth != format!("Bearer {TOKEN}") {
                return (StatusCode::UNAUTHORIZED, Json(json!({"error": "token"})));
            }
            let mut calls = f.calls.lock().unwrap();
            calls.push((format!("/{rest}"), auth, body));
            let n = calls.len();
            (StatusCode::OK, Json(json!({"id": format!("echo-{n}")})))
        }
        let app = Router::new()
            .route("/{*rest}", post(record))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    fn calls(&self) -> Vec<(String, String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

fn integrations_toml(base_url: &str) -> String {
    format!(
        r#"
[[integration]]
id = 7
provider = "liveperson"
account_id = "123"
client_id = "cid"
client_secret = "lp-secret"

[[integration]]
id = 40
provider = "echo"
base_url = "{base_url}/"
token = "{TOKEN}"
wait_timeout_s = 0
"#
    )
}

fn flow(room: Value) -> String {
    json!([{"name": "start_live_chat", "result_variable": "chat",
            "parameters": {"integration_id": 40, "room": room,
                           "start_message": "<? contact.name ?> needs help"}}])
    .to_string()
}

#[test]
fn its_settings_table_is_read_and_checked_by_it() {
    echo_provider::register();
    let ints = Integrations::from_toml_str(&integrations_toml("http://127.0.0.1:9"), "i.toml")
        .expect("loads");
    let echo = ints.get_json(&json!(40)).expect("echo integration");
    assert_eq!(echo.provider.as_str(), "echo");
    let s = echo.settings.get::<EchoSettings>().expect("echo settings");
    assert_eq!(s.base_url, "http://127.0.0.1:9", "trailing slash trimmed");
    assert!(echo.settings.get::<LivePersonSettings>().is_none());
    assert!(
        !format!("{ints:?}").contains(TOKEN),
        "the token never prints"
    );

    let err = |src: &str| {
        Integrations::from_toml_str(src, "i.toml")
            .expect_err("refused")
            .to_string()
    };
    let base = "[[integration]]\nid = 1\nprovider = \"echo\"\nbase_url = \"http://x.example\"\n";
    assert_eq!(
        err(base),
        "i.toml:1:1: missing required field `token` for provider `echo`"
    );
    assert_eq!(
        err(&format!("{base}token = \"t\"\nclient_id = \"c\"\n")),
        "i.toml:6:13: `client_id` is not a setting of provider `echo` (expected: `base_url`, `token`)"
    );
    assert!(err(&format!("{base}tokn = \"t\"\n"))
        .ends_with("`webhook_url`, `access_token`, `access_key`, `token`"));
    assert!(err(&base.replace("echo", "ecko")).ends_with(
        "unknown provider `ecko`; expected one of `liveperson`, `zendesk`, `altu_sdk`, `echo`"
    ));
}

#[tokio::test]
async fn check_render_and_run_against_its_fake() {
    echo_provider::register();
    let fake = FakeEcho::default();
    let base_url = fake.start().await;
    let ints = Integrations::from_toml_str(&integrations_toml(&base_url), "i.toml").unwrap();
    let engine = Engine::new()
        .with_integrations(ints)
        .with_provider_client(ProviderClient::new(RetryPolicy::default()).unwrap());

    // check: its parameter rules apply at load time.
    let diags = engine.check(&flow(json!("support")), "flow.json", None);
    assert!(diags.is_empty(), "{diags:#?}");
    let diags = engine.check(&flow(json!(5)), "flow.json", None);
    let errors: Vec<_> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.message.clone())
        .collect();
    assert!(
        errors
            .iter()
            .any(|m| m.contains("`room` must be a non-empty string")),
        "{diags:#?}"
    );
    let no_room = json!([{"name": "start_live_chat", "parameters": {"integration_id": 40}}]);
    let diags = engine.check(&no_room.to_string(), "flow.json", None);
    assert!(
        diags.iter().any(|d| d.message.contains("room")),
        "a required parameter: {diags:#?}"
    );

    // render: the dry run shows its request, token redacted, and sends nothing.
    let store = Store::from_json(&json!({"contact": {"name": "Ana"}})).unwrap();
    let loaded = engine.load(&flow(json!("support")), "flow.json").unwrap();
    let dry = engine
        .run(
            &loaded,
            store.clone(),
            &RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await;
    let doc = dry.render_json();
    let text = doc.to_string();
    assert!(!text.contains(TOKEN), "{text}");
    let req = &doc["requests"][0];
    assert_eq!(req["provider"], "echo", "{doc:#}");
    assert_eq!(req["url"], format!("{base_url}/conversations"));
    assert_eq!(req["headers"]["Authorization"], "[redacted]");
    assert_eq!(req["body"]["room"], "support");
    assert_eq!(req["body"]["start_message"], "Ana needs help");
    assert!(fake.calls().is_empty(), "a dry run sends nothing");

    // run: a real handoff over loopback HTTP.
    let outcome = engine.run(&loaded, store, &RunOptions::default()).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "/conversations");
    assert_eq!(calls[0].2["room"], "support");
    assert_eq!(calls[0].2["start_message"], "Ana needs help");
    let handoff = outcome.handoff.expect("handed off");
    assert_eq!(handoff.provider.as_str(), "echo");
    assert_eq!(handoff.provider_conversation_id, "echo-1");
    assert_eq!(outcome.context["chat"]["body"]["id"], "echo-1");
    // Stored handoffs keep the provider's name.
    let stored = serde_json::to_value(&handoff).unwrap();
    assert_eq!(stored["provider"], "echo");
    let back: transbordo::providers::Handoff = serde_json::from_value(stored).unwrap();
    assert_eq!(back, handoff);
}

#[tokio::test]
async fn the_service_receives_its_webhooks_and_relays_to_it() {
    echo_provider::register();
    let fake = FakeEcho::default();
    let base_url = fake.start().await;
    let (callback, builder) = Receiver::default().start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = write_config(dir.path(), &callback, "");
    std::fs::write(
        dir.path().join("integrations.toml"),
        integrations_toml(&base_url),
    )
    .unwrap();
    let config = ServiceConfig::from_file(&cfg_path).unwrap();
    let store = config.database.open().await.unwrap();
    let client = ProviderClient::new(RetryPolicy::default()).unwrap();
    let engine = Engine::new()
        .with_integrations((*config.integrations).clone())
        .with_provider_client(client.clone());
    let transport = ProviderTransport::new(client, config.integrations.clone());
    let state = ServiceState::new(config, engine, store, Arc::new(transport));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(state, listener, async {
        let _ = stopped.await;
    }));

    let (s, v) = service_common::post(
        &base,
        "/v1/conversations/c-echo/run",
        json!({"flow": serde_json::from_str::<Value>(&flow(json!("support"))).unwrap(),
               "context": {"contact": {"name": "Ana"}}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["state"], "waiting", "{v}");

    let hook = |body: Value, token: &str| {
        let base = base.clone();
        let token = token.to_string();
        async move {
            send_raw(
                &base,
                "/webhooks/echo/40",
                &[("x-echo-token", token)],
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    let msg = json!({"event": "agent_message", "id": "e1", "conversation_id": "echo-1",
                     "text": "hello from echo"});
    let (s, v) = hook(msg.clone(), "wrong").await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (401, json!("unauthorized")),
        "{v}"
    );
    let (s, v) = hook(json!({"event": "nope"}), TOKEN).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = hook(msg.clone(), TOKEN).await;
    assert_eq!(
        (s, &v),
        (200, &json!({"status": "ok", "events": ["applied"]}))
    );
    let (s, v) = hook(msg, TOKEN).await;
    assert_eq!(
        (s, &v),
        (200, &json!({"status": "ok", "events": ["duplicate"]}))
    );
    assert!(
        wait_for(Duration::from_secs(5), || builder
            .for_conv("c-echo")
            .iter()
            .any(
                |e| e["type"] == "agent_message" && e["text"] == "hello from echo"
            ))
        .await,
        "{:?}",
        builder.events()
    );

    // The user's side goes to its API, then the user closes.
    let (s, v) = service_common::post(
        &base,
        "/v1/conversations/c-echo/messages",
        json!({"text": "thanks"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = service_common::post(&base, "/v1/conversations/c-echo/close", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let paths: Vec<(String, Value)> = fake.calls().into_iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(
        paths,
        [
            ("/conversations".to_string(), paths[0].1.clone()),
            (
                "/conversations/echo-1/messages".to_string(),
                json!({"text": "thanks"})
            ),
            (
                "/conversations/echo-1/close".to_string(),
                json!({"reason": "user_closed"})
            ),
        ]
    );
    assert!(
        wait_for(Duration::from_secs(5), || builder.ended("c-echo")
            == ["user_closed"])
        .await,
        "{:?}",
        builder.events()
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
