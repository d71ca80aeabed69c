//! `GET /metrics` tells the truth from the first scrape: every known series is there at
//! 0 before anything happens (so alerts read 0, not "no data"), and a handoff that
//! worked counts `outcome="started"` for every provider, driven for real against the
//! sandbox's fake providers.

mod process_support;
mod service_common;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use service_common::{post, Receiver, Recorder};
use transbordo::sandbox::{Sandbox, SandboxOptions};
use transbordo::service::provider::ProviderTransport;
use transbordo::service::{serve_with, ServiceConfig, ServiceState};
use transbordo::Engine;

const PROVIDERS: [&str; 3] = ["liveperson", "zendesk", "altu_sdk"];
const OPEN_STATES: [&str; 3] = ["waiting", "with_agent", "closing"];
const END_STATUSES: [&str; 5] = [
    "agent_closed",
    "user_closed",
    "timeout",
    "user_inactivity_timeout",
    "error",
];
const ERROR_KINDS: [&str; 9] = [
    "config",
    "auth",
    "rate_limited",
    "rejected",
    "unavailable",
    "timeout",
    "limit",
    "template",
    "forbidden",
];

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

async fn scrape(base: &str) -> String {
    let r = service_common::client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    r.text().await.expect("text")
}

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// The value of one series, `None` when it is not exposed.
fn value(text: &str, series: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_known_series_is_exposed_at_zero_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let (cb, _rx) = Receiver::default().start().await;
    let cfg = service_common::write_config(dir.path(), &cb, "");
    let svc = service_common::start(&cfg, Arc::new(Recorder::default())).await;
    let text = scrape(&svc.base).await;
    svc.stop().await;

    let all = samples(&text);
    let nonzero: Vec<&(String, f64)> = all.iter().filter(|(_, v)| *v != 0.0).collect();
    assert!(nonzero.is_empty(), "nothing happened yet: {nonzero:#?}");
    let has = |series: String| {
        assert_eq!(value(&text, &series), Some(0.0), "{series} missing\n{text}");
    };
    for p in PROVIDERS {
        for state in OPEN_STATES {
            has(format!(
                "transbordo_live_chats_open{{provider=\"{p}\",state=\"{state}\"}}"
            ));
        }
        for outcome in std::iter::once("started").chain(ERROR_KINDS) {
            has(format!(
                "transbordo_handoffs_total{{provider=\"{p}\",outcome=\"{outcome}\"}}"
            ));
        }
        for status in END_STATUSES {
            has(format!(
                "transbordo_live_chats_ended_total{{provider=\"{p}\",status=\"{status}\"}}"
            ));
            has(format!(
                "transbordo_live_chat_duration_seconds_count{{provider=\"{p}\",status=\"{status}\"}}"
            ));
        }
        has(format!(
            "transbordo_time_to_agent_seconds_count{{provider=\"{p}\"}}"
        ));
        for op in ["start", "send", "close"] {
            for outcome in std::iter::once("ok").chain(ERROR_KINDS) {
                has(format!("transbordo_provider_request_duration_seconds_count{{provider=\"{p}\",operation=\"{op}\",outcome=\"{outcome}\"}}"));
            }
        }
        for result in [
            "applied",
            "unauthorized",
            "malformed",
            "unknown_conversation",
        ] {
            has(format!(
                "transbordo_webhooks_total{{provider=\"{p}\",result=\"{result}\"}}"
            ));
        }
    }
    has("transbordo_outbox_pending".into());

    // Every family and label set (values, buckets and sums left out), so none can
    // disappear unnoticed.
    let mut list: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .map(str::to_string)
        .collect();
    list.extend(
        all.into_iter()
            .map(|(s, _)| s)
            .filter(|s| !s.contains("_bucket{") && !s.contains("_sum")),
    );
    let list: Vec<String> = list.into_iter().collect();
    settings().bind(|| insta::assert_snapshot!("series_at_start", list.join("\n")));
}

/// A service with the real provider clients, its integrations pointed at a sandbox;
/// starts one handoff on `integration` and returns the scrape that follows.
async fn scrape_after_one_handoff(integration: u32) -> String {
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    let (cb, _rx) = Receiver::default().start().await;
    let cfg = service_common::write_config(dir.path(), &cb, "");
    std::fs::write(
        dir.path().join("integrations.toml"),
        process_support::integrations_toml(&sandbox.base_url(), 0, 0, 0),
    )
    .unwrap();
    let config = ServiceConfig::from_file(&cfg).unwrap();
    let store = config.database.open().await.unwrap();
    // What `serve` builds: the real `start_live_chat` and provider transport.
    let engine = Engine::try_new()
        .and_then(|e| e.with_http_guard(config.http_guard.clone()))
        .expect("engine")
        .with_integrations((*config.integrations).clone());
    let transport = ProviderTransport::new(
        engine.services().providers.clone(),
        config.integrations.clone(),
    );
    let state = ServiceState::new(config, engine, store, Arc::new(transport));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(state, listener, async {
        let _ = stopped.await;
    }));

    let mut params =
        json!({"integration_id": integration, "start_message": "Cliente pediu atendimento"});
    if integration == 1 {
        params["subject"] = json!("Atendimento");
    }
    let (s, v) = post(
        &base,
        "/v1/conversations/c-metrics/run",
        json!({"flow": [{"name": "start_live_chat", "parameters": params, "result_variable": "r"}],
               "context": {"contact": {"name": "Ana Souza", "email": "ana@example.com"}}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["live_chat"]["state"], "waiting", "{v}");
    let text = scrape(&base).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    text
}

/// One successful handoff on `provider`: `started` once, no error outcome, the start
/// request timed as `ok`, one chat waiting.
fn assert_started_once(provider: &str, text: &str) {
    let v = |series: String| value(text, &series).unwrap_or_else(|| panic!("{series}\n{text}"));
    let handoffs = |outcome: &str| {
        v(format!(
            "transbordo_handoffs_total{{provider=\"{provider}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(handoffs("started"), 1.0, "{text}");
    for kind in ERROR_KINDS {
        assert_eq!(handoffs(kind), 0.0, "{kind}\n{text}");
    }
    assert_eq!(
        value(
            text,
            &format!("transbordo_handoffs_total{{provider=\"{provider}\",outcome=\"error\"}}")
        ),
        None,
        "{text}"
    );
    assert_eq!(
        v(format!("transbordo_provider_request_duration_seconds_count{{provider=\"{provider}\",operation=\"start\",outcome=\"ok\"}}")),
        1.0
    );
    assert_eq!(
        v(format!(
            "transbordo_live_chats_open{{provider=\"{provider}\",state=\"waiting\"}}"
        )),
        1.0
    );
    // The other providers saw nothing.
    for other in PROVIDERS.iter().filter(|p| **p != provider) {
        assert_eq!(
            v(format!(
                "transbordo_handoffs_total{{provider=\"{other}\",outcome=\"started\"}}"
            )),
            0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liveperson_handoff_counts_started() {
    assert_started_once("liveperson", &scrape_after_one_handoff(7).await);
}

/// Zendesk's result nests `status` under `response`: it used to count as `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zendesk_handoff_counts_started() {
    assert_started_once("zendesk", &scrape_after_one_handoff(1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altu_sdk_handoff_counts_started() {
    assert_started_once("altu_sdk", &scrape_after_one_handoff(3).await);
}
