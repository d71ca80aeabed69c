//! The integrations file: loading, env secrets, ids, and positioned errors.

use serde_json::json;
use transbordo::providers::{
    IntegrationId, Integrations, LivePersonSettings, ProviderKind, Secret, ZendeskSettings,
};

fn err(src: &str) -> (String, Option<(usize, usize)>) {
    match Integrations::from_toml_str(src, "integrations.toml") {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => (e.to_string(), e.line_col),
    }
}

#[test]
fn loads_the_spec_example_with_env_secrets() {
    // Unique names so parallel tests do not interfere.
    std::env::set_var("TB_TEST_LP_SECRET", "lp-env-secret-1");
    std::env::set_var("TB_TEST_ZD_TOKEN", "zd-env-token-1");
    let ints = Integrations::from_toml_str(
        r#"
[[integration]]
id = 7
provider = "liveperson"
account_id = "12345678"
client_id = "abc"
client_secret = "${TB_TEST_LP_SECRET}"
wait_timeout_s = 300

[[integration]]
id = "1"
provider = "zendesk"
base_url = "https://acme.zendesk.com/"
email = "bot@acme.com"
api_token = "${TB_TEST_ZD_TOKEN}"

[[integration]]
id = 3
provider = "altu_sdk"
webhook_url = "https://agents.example.com/transbordo"
access_token = "tok"
access_key = "key"
user_inactivity_timeout_s = 600
"#,
        "integrations.toml",
    )
    .expect("loads");
    assert_eq!(ints.len(), 3);
    let lp = ints.get_json(&json!("7")).expect("7 as string");
    assert_eq!(
        lp.provider,
        ProviderKind::parse("liveperson").expect("built in")
    );
    assert_eq!(lp.wait_timeout_s, 300);
    assert_eq!(lp.user_inactivity_timeout_s, 0);
    let s = lp
        .settings
        .get::<LivePersonSettings>()
        .expect("liveperson settings");
    assert_eq!(s.client_secret.expose(), "lp-env-secret-1");
    assert_eq!(s.csds_url, "https://api.liveperson.net");
    let zd = ints.get_json(&json!(1)).expect("1 as number");
    let z = zd
        .settings
        .get::<ZendeskSettings>()
        .expect("zendesk settings");
    assert_eq!(
        z.base_url, "https://acme.zendesk.com",
        "trailing slash trimmed"
    );
    assert_eq!(z.api_token.expose(), "zd-env-token-1");
    let dbg = format!("{ints:?}");
    assert!(
        !dbg.contains("lp-env-secret-1")
            && !dbg.contains("zd-env-token-1")
            && !dbg.contains("\"key\"")
    );
    assert_eq!(
        ints.get_json(&json!(3))
            .map(|i| i.user_inactivity_timeout_s),
        Some(600)
    );
}

#[test]
fn integration_ids_normalise() {
    assert_eq!(
        IntegrationId::from_json(&json!(7)),
        Some(IntegrationId::new("7"))
    );
    assert_eq!(
        IntegrationId::from_json(&json!("7")),
        Some(IntegrationId::new("7"))
    );
    assert_eq!(
        IntegrationId::from_json(&json!(" 7 ")),
        Some(IntegrationId::new("7"))
    );
    assert_eq!(
        IntegrationId::from_json(&json!(7.0)),
        Some(IntegrationId::new("7"))
    );
    assert_eq!(IntegrationId::from_json(&json!(7.5)), None);
    assert_eq!(IntegrationId::from_json(&json!("")), None);
    assert_eq!(IntegrationId::from_json(&json!(null)), None);
    assert_eq!(IntegrationId::new("x").to_string(), "x");
}

#[test]
fn secret_never_prints() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s}"), "[redacted]");
    assert_eq!(format!("{s:?}"), "[redacted]");
    assert_eq!(s.expose(), "hunter2");
}

#[test]
fn missing_env_var_names_the_variable_not_a_value() {
    std::env::remove_var("TB_TEST_DEFINITELY_UNSET");
    let (msg, pos) = err(
        "[[integration]]\nid = 1\nprovider = \"zendesk\"\nbase_url = \"https://a.zendesk.com\"\nemail = \"a@b.c\"\napi_token = \"${TB_TEST_DEFINITELY_UNSET}\"\n",
    );
    assert_eq!(pos, Some((6, 13)));
    assert!(
        msg.contains("TB_TEST_DEFINITELY_UNSET") && msg.contains("api_token"),
        "{msg}"
    );
}

#[test]
fn positioned_errors() {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    let _g = s.bind_to_scope();
    let base = "[[integration]]\nid = 3\nprovider = \"altu_sdk\"\nwebhook_url = \"https://x.example\"\naccess_token = \"t\"\naccess_key = \"k\"\n";
    let cases = [
        ("unknown key", format!("{base}acess_key = \"k\"\n")),
        ("wrong type", base.replace("id = 3", "id = true")),
        (
            "timeout wrong type",
            format!("{base}wait_timeout_s = \"300\"\n"),
        ),
        ("missing field", base.replace("access_key = \"k\"\n", "")),
        (
            "duplicate id",
            format!("{base}{}", base.replace("id = 3", "id = \"3\"")),
        ),
        ("unknown provider", base.replace("altu_sdk", "altu")),
        ("foreign field", format!("{base}account_id = \"1\"\n")),
        ("bad url", base.replace("https://x.example", "x.example")),
        ("toml syntax", "[[integration]\nid = 1\n".to_string()),
    ];
    let mut out = String::new();
    for (name, src) in &cases {
        let (msg, pos) = err(src);
        assert!(pos.is_some(), "{name}: no position in {msg}");
        out.push_str(&format!("{name}: {msg}\n"));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn diagnostic_has_source_and_label() {
    use miette::Diagnostic;
    let e = Integrations::from_toml_str("[[integration]]\nid = 1\nprovider = \"nope\"\n", "f.toml")
        .expect_err("unknown provider");
    assert!(e.source_code().is_some());
    let labels: Vec<_> = e
        .labels()
        .map(|l| l.collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(labels.len(), 1);
    assert_eq!(
        labels[0].offset(),
        "[[integration]]\nid = 1\nprovider = ".len()
    );
}

/// The Messaging Interactions API keys of a LivePerson integration: all four or none
/// (an error at the first given key names the missing ones), `${ENV}` expanded, every
/// one registered as a secret; `interactions_lag_s` bounded.
#[test]
fn liveperson_interactions_keys() {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    let _g = s.bind_to_scope();
    let base = "[[integration]]\nid = 7\nprovider = \"liveperson\"\naccount_id = \"1\"\nclient_id = \"c\"\nclient_secret = \"s\"\n";
    let all = "interactions_app_key = \"ak-1\"\ninteractions_app_secret = \"as-2\"\ninteractions_access_token = \"at-3\"\ninteractions_access_token_secret = \"ats-4\"\n";
    let cases = [
        (
            "app key only",
            format!("{base}interactions_app_key = \"k\"\n"),
        ),
        (
            "three of four",
            format!(
                "{base}{}",
                all.replace("interactions_access_token = \"at-3\"\n", "")
            ),
        ),
        (
            "empty secret",
            format!("{base}{}", all.replace("\"as-2\"", "\"\"")),
        ),
        (
            "unset variable",
            format!(
                "{base}{}",
                all.replace("\"ats-4\"", "\"${TRANSBORDO_TEST_UNSET_LP_TOKEN_SECRET}\"")
            ),
        ),
        (
            "lag too long",
            format!("{base}{all}interactions_lag_s = 7200\n"),
        ),
        (
            "lag wrong type",
            format!("{base}{all}interactions_lag_s = \"60\"\n"),
        ),
    ];
    let mut out = String::new();
    for (name, src) in &cases {
        let (msg, pos) = err(src);
        assert!(pos.is_some(), "{name}: no position in {msg}");
        out.push_str(&format!("{name}: {msg}\n"));
    }
    insta::assert_snapshot!(out);
    let ints = Integrations::from_toml_str(&format!("{base}{all}"), "i.toml").expect("loads");
    let secrets = ints.secret_values();
    for v in ["ak-1", "as-2", "at-3", "ats-4", "s"] {
        assert!(
            secrets.iter().any(|x| x == v),
            "{v} not a secret: {secrets:?}"
        );
    }
    let lp = ints.get_json(&json!("7")).expect("lp");
    let set = lp
        .settings
        .get::<LivePersonSettings>()
        .expect("lp settings");
    assert!(set.interactions.is_some());
    assert_eq!(set.interactions_lag_s, 60);
    let none = Integrations::from_toml_str(base, "i.toml").expect("loads");
    let set = none.get_json(&json!("7")).expect("lp");
    assert!(set
        .settings
        .get::<LivePersonSettings>()
        .expect("lp")
        .interactions
        .is_none());
}
