//! Business hours and the fallback chain (issue 19): `start_live_chat` outside a
//! `[[schedule]]` sends nothing and says when the team opens again; `fallback` tries the
//! next integration on `unavailable`/`rate_limited`/`timeout`/closed and stops on
//! `rejected`/`auth`/`config`. Dry runs with a fixed clock, and real runs through the
//! three providers of the sandbox with faults injected. Configuration and flow problems
//! are reported with their positions.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use transbordo::interp::{Engine, RunOptions, Store};
use transbordo::providers::schedule::parse_instant;
use transbordo::providers::{Integrations, ProviderClient, RetryPolicy};
use transbordo::sandbox::{Fault, FaultRule, Provider, Sandbox, SandboxOptions};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_transbordo");

/// The three sandbox integrations (`base` is the sandbox's URL), LivePerson and Zendesk
/// on the issue's schedule, ALTU always open.
fn integrations_toml(base: &str) -> String {
    format!(
        r#"[[schedule]]
name = "atendimento"
timezone = "America/Sao_Paulo"
mon = ["09:00-18:00"]
tue = ["09:00-18:00"]
wed = ["09:00-12:00", "13:00-18:00"]
thu = ["09:00-18:00"]
fri = ["09:00-18:00"]
holidays = ["2026-12-25"]

[[schedule]]
name = "plantao"
timezone = "Europe/Lisbon"
sat = ["00:00-24:00"]
sun = ["00:00-24:00"]

[[integration]]
id = 7
provider = "liveperson"
account_id = "12345678"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
csds_url = "{base}"
schedule = "atendimento"

[[integration]]
id = 1
provider = "zendesk"
base_url = "{base}"
email = "bot@example.com"
api_token = "sandbox-token"
schedule = "plantao"

[[integration]]
id = 3
provider = "altu_sdk"
webhook_url = "{base}/altu/events"
access_token = "sandbox-access-token"
access_key = "sandbox-access-key"
"#
    )
}

fn engine(base: &str) -> Engine {
    let ints = Integrations::from_toml_str(&integrations_toml(base), "integrations.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let policy = RetryPolicy {
        max_retries: 1,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        total_budget: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_millis(1500),
    };
    let client = ProviderClient::new(policy).unwrap_or_else(|e| panic!("{e}"));
    Engine::new()
        .with_integrations(ints)
        .with_provider_client(client)
}

fn store() -> Store {
    Store::from_json(&json!({"contact": {"name": "Ana Souza"}, "context": {}}))
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Runs `params` as one `start_live_chat` at `now` (dry or real); the render document.
async fn run(engine: &Engine, params: Value, now: &str, dry_run: bool) -> Value {
    let flow = json!([{"name": "start_live_chat", "parameters": params, "result_variable": "r"}]);
    let flow = engine
        .load(&flow.to_string(), "flow.json")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let opts = RunOptions {
        dry_run,
        now: Some(parse_instant(now).unwrap_or_else(|e| panic!("{e}"))),
        ..RunOptions::default()
    };
    let outcome = engine.run(&flow, store(), &opts).await;
    if dry_run {
        outcome.render_json()
    } else {
        outcome.run_json()
    }
}

fn lp_params() -> Value {
    json!({"integration_id": 7, "start_message": "Cliente pediu atendimento"})
}

#[tokio::test]
async fn outside_hours_nothing_is_sent_and_the_next_opening_is_given() {
    let e = engine("http://127.0.0.1:9");
    // Wednesday's lunch break.
    let doc = run(&e, lp_params(), "2026-12-23T12:30:00-03:00", true).await;
    assert_eq!(doc["requests"], json!([]), "nothing sent: {doc}");
    let r = &doc["context"]["r"];
    assert_eq!(r["status"], "error");
    assert_eq!(
        r["error"],
        json!({
            "kind": "unavailable",
            "reason": "outside_business_hours",
            "next_open_at": "2026-12-23T13:00:00-03:00",
            "message": "integration `7` is outside its business hours (schedule `atendimento`); it opens at 2026-12-23T13:00:00-03:00"
        })
    );
    // Christmas Eve after hours: Christmas and the weekend are skipped.
    let doc = run(&e, lp_params(), "2026-12-24T21:00:00Z", true).await;
    assert_eq!(
        doc["context"]["r"]["error"]["next_open_at"],
        "2026-12-28T09:00:00-03:00"
    );
    // Open: the seed's dry-run result, exactly, and the requests it would send.
    let doc = run(&e, lp_params(), "2026-12-23T13:00:00-03:00", true).await;
    let r = &doc["context"]["r"];
    assert_eq!(r["status"], "ok", "{r}");
    assert!(r.get("via").is_none(), "no `via` without `fallback`: {r}");
    assert!(!doc["requests"].as_array().is_none_or(Vec::is_empty));

    // Zendesk nests its errors under `response`; Lisbon on a Friday evening in
    // December is +00:00, and the weekend schedule opens at Saturday's midnight.
    let doc = run(
        &e,
        json!({"integration_id": 1, "subject": "Pedido"}),
        "2026-12-25T20:59:00-03:00",
        true,
    )
    .await;
    let r = &doc["context"]["r"];
    assert_eq!(r["response"]["status"], "error", "{r}");
    assert_eq!(r["response"]["error"]["reason"], "outside_business_hours");
    assert_eq!(
        r["response"]["error"]["next_open_at"],
        "2026-12-26T00:00:00+00:00"
    );
    assert_eq!(doc["requests"], json!([]));
}

#[tokio::test]
async fn the_dry_run_shows_the_fallback_it_would_take() {
    let e = engine("http://127.0.0.1:9");
    let params = json!({"integration_id": 7, "fallback": [1, 3], "subject": "Pedido", "start_message": "oi"});
    // Saturday: LivePerson closed, Zendesk's weekend team open.
    let doc = run(&e, params.clone(), "2026-12-26T10:00:00-03:00", true).await;
    let r = &doc["context"]["r"];
    assert_eq!(r["response"]["status"], "ok", "{r}");
    assert_eq!(
        r["via"],
        json!({"integration_id": "1", "provider": "zendesk",
               "tried": [{"integration_id": "7", "reason": "outside_business_hours"}]})
    );
    let providers: Vec<&str> = doc["requests"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["provider"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !providers.is_empty() && providers.iter().all(|p| *p == "zendesk"),
        "{providers:?}"
    );
    // A weekday morning: the first integration takes it; `via` says so with no tries.
    let doc = run(&e, params.clone(), "2026-12-28T10:00:00-03:00", true).await;
    assert_eq!(
        doc["context"]["r"]["via"],
        json!({"integration_id": "7", "provider": "liveperson", "tried": []})
    );
    // Tuesday night: both closed; ALTU (no schedule) takes it.
    let doc = run(&e, params, "2026-12-29T23:00:00-03:00", true).await;
    assert_eq!(
        doc["context"]["r"]["via"]["tried"],
        json!([{"integration_id": "7", "reason": "outside_business_hours"},
               {"integration_id": "1", "reason": "outside_business_hours"}])
    );
    assert_eq!(doc["context"]["r"]["status"], "ok");
    // The last of the chain closed too: its error, with `via`.
    let doc = run(
        &e,
        json!({"integration_id": 7, "fallback": [1], "subject": "x"}),
        "2026-12-29T23:00:00-03:00",
        true,
    )
    .await;
    let r = &doc["context"]["r"];
    assert_eq!(r["response"]["error"]["reason"], "outside_business_hours");
    assert_eq!(r["via"]["integration_id"], "1");
    assert_eq!(doc["requests"], json!([]));
}

async fn fault(sb: &Sandbox, provider: Provider, endpoint: &str, status: u16, times: u32) {
    let rule = FaultRule {
        provider,
        endpoint: endpoint.into(),
        fault: Fault {
            status: Some(status),
            ..Fault::default()
        },
        times,
    };
    sb.control()
        .add_fault(&rule)
        .await
        .unwrap_or_else(|e| panic!("fault: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_through_the_three_providers_with_faults() {
    let sb = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e = engine(&sb.base_url());
    // Saturday noon: LivePerson closed, Zendesk open.
    let params = json!({"integration_id": 1, "fallback": [7, 3], "subject": "Pedido", "start_message": "oi"});
    let saturday = "2026-12-26T12:00:00-03:00";
    let monday = "2026-12-28T12:00:00-03:00";

    // Zendesk rate-limited past its retries, LivePerson closed: ALTU takes it.
    fault(&sb, Provider::Zendesk, "*", 429, 20).await;
    let doc = run(&e, params.clone(), saturday, false).await;
    let r = &doc["context"]["r"];
    assert_eq!(r["status"], "ok", "{r}");
    assert!(r["body"]["conversationId"].is_string(), "ALTU's shape: {r}");
    assert_eq!(
        r["via"],
        json!({"integration_id": "3", "provider": "altu_sdk", "tried": [
            {"integration_id": "1", "reason": "rate_limited"},
            {"integration_id": "7", "reason": "outside_business_hours"}]})
    );
    assert_eq!(doc["handoff"]["provider"], "altu_sdk");
    sb.control()
        .clear_faults()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Monday: Zendesk's weekend team is closed, LivePerson answers 503 until retries
    // run out (`unavailable`), ALTU takes it.
    fault(&sb, Provider::Liveperson, "*", 503, 20).await;
    let doc = run(&e, params.clone(), monday, false).await;
    let r = &doc["context"]["r"];
    assert_eq!(
        r["via"]["tried"],
        json!([{"integration_id": "1", "reason": "outside_business_hours"},
               {"integration_id": "7", "reason": "unavailable"}]),
        "{r}"
    );
    assert_eq!(r["via"]["provider"], "altu_sdk");
    sb.control()
        .clear_faults()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // LivePerson healthy on Monday: it takes it, with its own result shape.
    let doc = run(&e, params.clone(), monday, false).await;
    let r = &doc["context"]["r"];
    assert_eq!(r["status"], "ok", "{r}");
    assert!(r["body"]["body"]["conversationId"].is_string(), "{r}");
    assert_eq!(r["via"]["provider"], "liveperson");
    assert_eq!(doc["handoff"]["provider"], "liveperson");

    // `auth` would fail anywhere: the chain stops at Zendesk, ALTU is not tried.
    let before = sb
        .control()
        .conversations(None, None)
        .await
        .map(|c| c.len());
    fault(&sb, Provider::Zendesk, "*", 401, 20).await;
    let doc = run(&e, params.clone(), saturday, false).await;
    let r = &doc["context"]["r"];
    assert_eq!(r["response"]["error"]["kind"], "auth", "{r}");
    assert_eq!(
        r["via"],
        json!({"integration_id": "1", "provider": "zendesk", "tried": []})
    );
    assert_eq!(doc["handoff"], Value::Null);
    let after = sb
        .control()
        .conversations(None, None)
        .await
        .map(|c| c.len());
    assert_eq!(before.ok(), after.ok(), "nothing opened after the stop");
    sb.control()
        .clear_faults()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Without `fallback`, a failure keeps the seed's shape: no `via`.
    fault(&sb, Provider::Zendesk, "*", 429, 20).await;
    let doc = run(
        &e,
        json!({"integration_id": 1, "subject": "Pedido"}),
        saturday,
        false,
    )
    .await;
    let r = &doc["context"]["r"];
    assert_eq!(r["response"]["error"]["kind"], "rate_limited", "{r}");
    assert_eq!(r.as_object().map(|o| o.len()), Some(1), "{r}");
    sb.shutdown().await;
}

fn snapshot_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

#[test]
fn schedule_problems_in_the_integrations_file_have_positions() {
    let _g = snapshot_settings().bind_to_scope();
    let base = integrations_toml("https://x.example");
    let cases = [
        (
            "unknown schedule",
            base.replace("schedule = \"plantao\"", "schedule = \"plantão\""),
        ),
        (
            "bad time zone",
            base.replace("America/Sao_Paulo", "America/Sao Paulo"),
        ),
        (
            "interval ends before it starts",
            base.replace("wed = [\"09:00-12:00\"", "wed = [\"12:00-09:00\""),
        ),
        (
            "overlapping intervals",
            base.replace("\"13:00-18:00\"", "\"11:30-18:00\""),
        ),
        (
            "not an interval",
            base.replace("mon = [\"09:00-18:00\"]", "mon = [\"9h-18h\"]"),
        ),
        ("bad holiday", base.replace("2026-12-25", "2026-13-25")),
        (
            "duplicate schedule",
            base.replace("name = \"plantao\"", "name = \"atendimento\""),
        ),
        ("unknown key", base.replace("holidays =", "feriados =")),
    ];
    let mut out = String::new();
    for (name, src) in &cases {
        match Integrations::from_toml_str(src, "integrations.toml") {
            Ok(_) => panic!("{name}: expected an error"),
            Err(e) => {
                assert!(e.line_col.is_some(), "{name}: no position: {e}");
                out.push_str(&format!("{name}: {e}\n"));
            }
        }
    }
    insta::assert_snapshot!(out);
}

#[test]
fn check_reports_fallback_ids_that_are_not_configured() {
    let _g = snapshot_settings().bind_to_scope();
    let e = engine("https://x.example");
    let src = "[\n  {\"name\": \"start_live_chat\", \"parameters\": {\n    \"integration_id\": 7,\n    \"fallback\": [1, 9, \"1\"]\n  }}\n]\n";
    let diags = e.check(src, "flow.json", None);
    let shown: Vec<String> = diags
        .iter()
        .map(|d| {
            format!(
                "{:?} {}:{}:{} {} {}",
                d.severity, d.file, d.line, d.column, d.pointer, d.message
            )
        })
        .collect();
    insta::assert_snapshot!(shown.join("\n"));
    assert!(
        shown.iter().any(|l| l.contains("flow.json:4:21")),
        "{shown:?}"
    );
    let bad = e.check(
        "[{\"name\": \"start_live_chat\", \"parameters\": {\"integration_id\": 7, \"fallback\": 1}}]",
        "f.json",
        None,
    );
    assert!(
        bad.iter().any(|d| d.pointer == "/0/parameters/fallback"),
        "{bad:?}"
    );
}

#[test]
fn render_now_and_flow_tests_fix_the_clock() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ints = dir.path().join("integrations.toml");
    std::fs::write(&ints, integrations_toml("https://x.example")).unwrap_or_else(|e| panic!("{e}"));
    let flow = dir.path().join("flow.json");
    std::fs::write(
        &flow,
        json!([{"name": "start_live_chat", "parameters": {"integration_id": 7}, "result_variable": "r"}])
            .to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let render = |now: &str| -> Value {
        let out = Command::new(BIN)
            .args(["render", "--now", now, "--integrations"])
            .arg(&ints)
            .arg(&flow)
            .current_dir(ROOT)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
    };
    let doc = render("2026-12-23T12:30:00-03:00");
    assert_eq!(
        doc["context"]["r"]["error"]["next_open_at"],
        "2026-12-23T13:00:00-03:00"
    );
    let doc = render("2026-12-23T16:00:00Z");
    assert_eq!(doc["context"]["r"]["status"], "ok");
    let bad = Command::new(BIN)
        .args(["render", "--now", "tomorrow"])
        .arg(&flow)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    // A flow test file fixes it with "now", per file and per case.
    let test = dir.path().join("hours.test.json");
    std::fs::write(
        &test,
        json!({
            "flow": "flow.json", "integrations": "integrations.toml",
            "now": "2026-12-23T12:30:00-03:00",
            "cases": [
                {"name": "lunch", "expect": {"context": {"r": {"error": {"next_open_at": "2026-12-23T13:00:00-03:00"}}}}},
                {"name": "afternoon", "now": "2026-12-23T14:00:00-03:00", "expect": {"context": {"r": {"status": "ok"}}}},
                {"name": "wrong on purpose", "expect": {"context": {"r": {"status": "ok"}}}}
            ]
        })
        .to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["test", "--format", "json"])
        .arg(&test)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let statuses: Vec<(String, String)> = report["files"][0]["cases"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        statuses,
        [
            ("lunch".to_string(), "passed".to_string()),
            ("afternoon".into(), "passed".into()),
            ("wrong on purpose".into(), "failed".into())
        ],
        "{report}"
    );
}
