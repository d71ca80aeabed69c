//! Plans (`plan_start`) for every seed example and the parameter rules, as snapshots.

use serde_json::{json, Map, Value};
use transbordo::providers::request::REDACTED;
use transbordo::providers::{altu, liveperson, zendesk};
use transbordo::providers::{
    check_params, plan_start, CallBody, HandoffCx, IntegrationId, Integrations, ParamShape,
    ProviderKind, Severity,
};

const SECRETS: &[&str] = &[
    "lp-secret-XYZ",
    "zd-token-XYZ",
    "altu-key-XYZ",
    "altu-token-XYZ",
];

fn integrations() -> Integrations {
    Integrations::from_toml_str(
        r#"
[[integration]]
id = 7
provider = "liveperson"
account_id = "12345678"
client_id = "lp-client"
client_secret = "lp-secret-XYZ"
wait_timeout_s = 300

[[integration]]
id = 8
provider = "liveperson"
account_id = 87654321
client_id = "lp-client"
client_secret = "lp-secret-XYZ"
csds_url = "http://127.0.0.1:9999/"

[[integration]]
id = "1"
provider = "zendesk"
base_url = "https://acme.zendesk.com"
email = "bot@acme.com"
api_token = "zd-token-XYZ"

[[integration]]
id = 3
provider = "altu_sdk"
webhook_url = "https://agents.example.com/transbordo"
access_token = "altu-token-XYZ"
access_key = "altu-key-XYZ"
wait_timeout_s = 120
user_inactivity_timeout_s = 600
"#,
        "test.toml",
    )
    .expect("test integrations load")
}

fn settings() -> insta::internals::SettingsBindDropGuard {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    s.bind_to_scope()
}

fn cx(contact: Value) -> HandoffCx {
    HandoffCx {
        handoff_id: "hf-0001".into(),
        conversation_id: "conv-builder-1".into(),
        contact,
    }
}

fn run(fixture: &Value) -> Value {
    let ints = integrations();
    let integ = ints
        .get_json(&fixture["integration_id"])
        .expect("fixture names a configured integration");
    let params: Map<String, Value> = fixture["params"].as_object().cloned().unwrap_or_default();
    match plan_start(integ, &params, &cx(fixture["contact"].clone())) {
        Ok(plan) => plan.to_json(),
        Err(e) => json!({ "error": e.to_error_object() }),
    }
}

fn assert_no_secrets(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "secret {s} leaked into {text}");
    }
}

#[test]
fn plans_for_fixtures() {
    let _g = settings();
    insta::glob!("fixtures/providers/plan/*.json", |path| {
        let src = std::fs::read_to_string(path).expect("fixture readable");
        let fixture: Value = serde_json::from_str(&src).expect("fixture is JSON");
        let out = run(&fixture);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(
            name.starts_with("err_"),
            out.get("error").is_some(),
            "fixture {name}: error expectation mismatch: {out}"
        );
        if let Some(e) = out.get("error") {
            assert_eq!(e["kind"], "config", "{name}");
        }
        assert_no_secrets(&out.to_string());
        insta::assert_json_snapshot!(out);
    });
}

fn lp_extra_info(n_json_chars: usize) -> (Value, Vec<String>) {
    let ints = integrations();
    let integ = ints.get(&IntegrationId::new("7")).expect("lp");
    // A JSON string of n characters has n-2 characters of content.
    let text = "x".repeat(n_json_chars - 2);
    let mut params = Map::new();
    params.insert("extra_info".into(), json!(text));
    let plan = plan_start(integ, &params, &cx(json!({}))).expect("plan");
    let conv = plan
        .calls
        .iter()
        .find(|c| c.step == "conversation")
        .expect("conversation call");
    let CallBody::Json(body) = &conv.body else {
        panic!("json body")
    };
    (body[0]["body"]["description"].clone(), plan.warnings)
}

#[test]
fn liveperson_extra_info_256_rule() {
    let (d, w) = lp_extra_info(255);
    assert_eq!(d.as_str().map(|s| s.chars().count()), Some(255));
    assert!(w.is_empty());
    let (d, w) = lp_extra_info(256);
    assert_eq!(d.as_str().map(|s| s.chars().count()), Some(256));
    assert_eq!(d, json!(format!("\"{}\"", "x".repeat(254))));
    assert!(w.is_empty());
    let (d, w) = lp_extra_info(257);
    assert_eq!(d, json!(""));
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("257") && w[0].contains("256"), "{w:?}");
}

fn altu_data(key: &str, n_json_chars: usize) -> (Value, Vec<String>) {
    let ints = integrations();
    let integ = ints.get(&IntegrationId::new("3")).expect("altu");
    // An array holding one string of n-4 characters is n characters of JSON: ["…"].
    let v = json!([("y".repeat(n_json_chars - 4))]);
    assert_eq!(v.to_string().chars().count(), n_json_chars);
    let mut params = Map::new();
    params.insert(key.into(), v);
    let plan = plan_start(integ, &params, &cx(json!({}))).expect("plan");
    let CallBody::Json(body) = &plan.calls[0].body else {
        panic!("json body")
    };
    (body["data"][key].clone(), plan.warnings)
}

#[test]
fn altu_1024_rule_for_extra_and_contact_info() {
    for key in ["extra_info", "contact_info"] {
        for n in [1023, 1024] {
            let (d, w) = altu_data(key, n);
            assert_eq!(d.as_str().map(|s| s.chars().count()), Some(n), "{key} {n}");
            assert!(w.is_empty(), "{key} {n}: {w:?}");
        }
        let (d, w) = altu_data(key, 1025);
        assert_eq!(d, json!(""), "{key}");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains(key) && w[0].contains("1024"), "{w:?}");
    }
}

#[test]
fn plans_never_carry_secrets() {
    let ints = integrations();
    for integ in ints.iter() {
        let mut params = Map::new();
        params.insert("subject".into(), json!("s"));
        let plan = plan_start(integ, &params, &cx(json!({"email": "a@b.c"}))).expect("plan");
        let text = format!("{:?} {}", plan, plan.to_json());
        assert_no_secrets(&text);
        assert!(format!("{integ:?}").contains(REDACTED));
        assert_no_secrets(&format!("{integ:?}"));
    }
}

#[test]
fn lp_app_jwt_form_is_redacted_and_discovered_domains_are_placeholders() {
    let ints = integrations();
    let plan = plan_start(
        ints.get(&IntegrationId::new("7")).expect("lp"),
        &Map::new(),
        &cx(json!({})),
    )
    .expect("plan");
    let steps: Vec<_> = plan.calls.iter().map(|c| c.step).collect();
    assert_eq!(steps, ["csds", "app_jwt", "consumer_jws", "conversation"]);
    assert_eq!(
        plan.calls[1].url,
        "https://{sentinel}/sentinel/api/account/12345678/app/token?v=1.0&grant_type=client_credentials"
    );
    assert_eq!(
        plan.calls[1].body,
        CallBody::Form(vec![
            ("client_id".into(), REDACTED.into()),
            ("client_secret".into(), REDACTED.into())
        ])
    );
    // No contact: the consumer id falls back to the builder's conversation id.
    assert_eq!(
        plan.calls[2].to_json()["body"],
        json!({"ext_consumer_id": "conv-builder-1"})
    );
}

#[test]
fn zendesk_ticket_carries_idempotency_key_and_external_id() {
    let ints = integrations();
    let mut params = Map::new();
    params.insert("subject".into(), json!("Oi"));
    let plan = plan_start(
        ints.get(&IntegrationId::new("1")).expect("zd"),
        &params,
        &cx(json!({})),
    )
    .expect("plan");
    let t = plan.calls.last().expect("ticket");
    assert_eq!(t.header("Idempotency-Key"), Some("hf-0001"));
    assert_eq!(t.to_json()["body"]["ticket"]["external_id"], "hf-0001");
    assert_eq!(t.to_json()["body"]["ticket"]["comment"]["body"], "Oi");
}

fn problems(kind: ProviderKind, params: &[(&str, ParamShape)]) -> Value {
    let p = check_params(kind, params);
    json!(p
        .iter()
        .map(|p| json!({
            "param": p.param,
            "severity": match p.severity { Severity::Error => "error", Severity::Warning => "warning" },
            "message": p.message,
        }))
        .collect::<Vec<_>>())
}

#[test]
fn static_checks() {
    let _g = settings();
    use ParamShape::{Static, Templated};
    let lp = problems(
        liveperson::KIND,
        &[
            ("integration_id", Static(json!(7))),
            ("skil_id", Static(json!("1"))),
            ("contact_info", Static(json!({}))),
            ("agent", Static(json!(["a"]))),
            ("extra_info", Static(json!("z".repeat(300)))),
            ("start_message", Templated),
            ("before_action_messages", Static(json!(["ok", 1]))),
        ],
    );
    insta::assert_json_snapshot!("check_liveperson", lp);
    let zd = problems(
        zendesk::KIND,
        &[
            ("integration_id", Static(json!("1"))),
            ("tags", Static(json!("vip"))),
            ("custom_fields", Templated),
            ("extra_info", Static(json!({"a": 1}))),
            ("skill_id", Static(json!("1"))),
            ("asignee_id", Static(json!(1))),
        ],
    );
    insta::assert_json_snapshot!("check_zendesk_missing_subject", zd);
    let altu = problems(
        altu::KIND,
        &[
            ("integration_id", Static(json!(3))),
            ("skillId", Static(json!("x"))),
            ("contact_info", Static(json!("text"))),
            ("completely_unrelated", Static(json!(1))),
        ],
    );
    insta::assert_json_snapshot!("check_altu", altu);
    // A valid Zendesk seed parameter list has no problem at all.
    assert_eq!(
        problems(
            zendesk::KIND,
            &[
                ("assignee_id", Static(json!("9999999"))),
                ("tags", Templated),
                ("subject", Templated),
                ("custom_fields", Templated),
                ("integration_id", Static(json!("1"))),
                (
                    "before_action_messages",
                    Static(json!(["Aguarde um minuto..."]))
                ),
            ]
        ),
        json!([])
    );
}
