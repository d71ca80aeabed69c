//! The config's `public_url` and the `aud` of ALTU connector tokens (protocol §3: "the
//! URL the request is sent to"): with `public_url` the whole URL is compared (scheme,
//! host, port, path), without it only the path, as before. Refusals are snapshotted as
//! the webhook caller sees them.

mod service_common;

use std::sync::Arc;

use serde_json::{json, Value};
use service_common::*;
use transbordo::service::auth::{self, Audience, AuthError};
use transbordo::service::ServiceConfig;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

/// The config with `public_url = <value>` (TOML source, quoted by the caller), or its error.
fn config_with(public_url: &str) -> Result<ServiceConfig, String> {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("i.toml"), INTEGRATIONS).unwrap();
    let src = format!(
        "integrations = \"i.toml\"\npublic_url = {public_url}\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n"
    );
    ServiceConfig::from_toml_str(&src, "svc.toml", d.path()).map_err(|e| e.to_string())
}

fn public_url(v: &str) -> String {
    let c = config_with(&format!("\"{v}\"")).unwrap_or_else(|e| panic!("{v}: {e}"));
    c.webhooks.public_url.expect("public_url set").to_string()
}

#[test]
fn public_url_is_checked_and_normalized() {
    // Scheme and host lower-cased, the default port and a trailing `/` dropped.
    assert_eq!(
        public_url("HTTPS://Bots.Example.COM:443/"),
        "https://bots.example.com/"
    );
    assert_eq!(
        public_url("https://example.com/transbordo/"),
        "https://example.com/transbordo"
    );
    assert_eq!(
        public_url("http://127.0.0.1:8920"),
        "http://127.0.0.1:8920/"
    );
    std::env::set_var(
        "TRANSBORDO_TEST_PUBLIC_URL",
        "https://from-env.example.com:8443",
    );
    assert_eq!(
        public_url("${TRANSBORDO_TEST_PUBLIC_URL}"),
        "https://from-env.example.com:8443/"
    );
    // Absent: none (the path-only comparison).
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("i.toml"), INTEGRATIONS).unwrap();
    let c = ServiceConfig::from_toml_str(
        "integrations = \"i.toml\"\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n",
        "svc.toml",
        d.path(),
    )
    .unwrap();
    assert!(c.webhooks.public_url.is_none());

    let errors: Vec<String> = [
        "\"bots.example.com\"",
        "\"/webhooks\"",
        "\"ftp://bots.example.com\"",
        "\"https://\"",
        "\"https://bots.example.com/?tenant=1\"",
        "\"https://bots.example.com/#top\"",
        "\"https://user:hunter2@bots.example.com\"",
        "\"${TRANSBORDO_TEST_UNSET_PUBLIC_URL}\"",
        "8920",
    ]
    .iter()
    .map(|v| {
        config_with(v)
            .map(|_| format!("accepted: {v}"))
            .unwrap_or_else(|e| e)
    })
    .collect();
    // Never the password.
    assert!(!errors.iter().any(|e| e.contains("hunter2")), "{errors:#?}");
    settings().bind(|| insta::assert_snapshot!("config_errors", errors.join("\n")));
}

fn url(s: &str) -> reqwest::Url {
    reqwest::Url::parse(s).unwrap()
}

#[test]
fn aud_against_the_full_url_compares_scheme_host_port_and_path() {
    let base = url("https://bots.example.com/tb");
    let want = auth::receiver_url(&base, "/webhooks/altu/3");
    assert_eq!(want.as_str(), "https://bots.example.com/tb/webhooks/altu/3");
    let root = auth::receiver_url(&url("https://bots.example.com/"), "/webhooks/altu/3");
    assert_eq!(root.as_str(), "https://bots.example.com/webhooks/altu/3");
    let check = |aud: Option<&str>| auth::check_audience(aud, Audience::Url(&want));
    for same in [
        "https://bots.example.com/tb/webhooks/altu/3",
        // Letter case of scheme and host, and the explicit default port, do not matter.
        "HTTPS://BOTS.example.com/tb/webhooks/altu/3",
        "https://bots.example.com:443/tb/webhooks/altu/3",
    ] {
        assert_eq!(check(Some(same)), Ok(()), "{same}");
    }
    let refused = Err(AuthError::Audience(
        "https://bots.example.com/tb/webhooks/altu/3".into(),
    ));
    for other in [
        "https://evil.example.com/tb/webhooks/altu/3",
        "http://bots.example.com/tb/webhooks/altu/3",
        "https://bots.example.com:8443/tb/webhooks/altu/3",
        // A trailing `/` names another URL (the route has none).
        "https://bots.example.com/tb/webhooks/altu/3/",
        "https://bots.example.com/webhooks/altu/3",
        "https://bots.example.com/tb/webhooks/altu/4",
        "https://bots.example.com/tb/webhooks/ALTU/3",
        "https://bots.example.com/tb/webhooks/altu/3?x=1",
        "https://bots.example.com/tb/webhooks/altu/3#f",
        "https://u@bots.example.com/tb/webhooks/altu/3",
        "/tb/webhooks/altu/3",
        "",
    ] {
        assert_eq!(check(Some(other)), refused, "{other}");
    }
    assert_eq!(check(None), refused);
    // Port 80 is http's default, not https's.
    let plain = url("http://bots.example.com:80/webhooks/altu/3");
    assert_eq!(
        auth::check_audience(
            Some("http://bots.example.com/webhooks/altu/3"),
            Audience::Url(&plain)
        ),
        Ok(())
    );
    // …and 80 is not https's.
    assert!(check(Some("https://bots.example.com:80/tb/webhooks/altu/3")).is_err());

    // Without `public_url`, only the path: any host, port, query, and a trailing `/`.
    let path = |aud: &str| auth::check_audience(Some(aud), Audience::Path("/webhooks/altu/3"));
    for same in [
        "https://evil.example.com/webhooks/altu/3",
        "http://127.0.0.1:1/webhooks/altu/3/?x=1",
        "/webhooks/altu/3",
    ] {
        assert_eq!(path(same), Ok(()), "{same}");
    }
    assert_eq!(
        path("https://bots.example.com/webhooks/altu/4"),
        Err(AuthError::Claim("aud"))
    );
}

/// A service whose config starts with `top` (top-level keys), with one ALTU chat
/// waiting; returns it and the chat's handoff id.
async fn altu_world(top: &str) -> (tempfile::TempDir, Running, String) {
    let dir = tempfile::tempdir().unwrap();
    let (cb, _rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &cb, "");
    let src = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{top}\n{src}")).unwrap();
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    start_chat(&svc.base, "c-al", 3).await;
    let (_, lc) = get(&svc.base, "/v1/conversations/c-al/live_chat").await;
    let hid = lc["live_chat"]["handoff_id"].as_str().unwrap().to_string();
    (dir, svc, hid)
}

fn joined(handoff_id: &str, event_id: &str) -> Value {
    altu_event(
        "AGENT_JOINED",
        event_id,
        handoff_id,
        "pc-c-al",
        json!({"agent": {"id": "a-1", "name": "Ana"}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_host_is_refused_when_public_url_is_set() {
    let (_d, svc, hid) = altu_world("public_url = \"https://transbordo.example.com/\"").await;
    let ev = joined(&hid, "e1");
    // The right path on another host, scheme or port: 401, and nothing changes.
    let mut refusals = Vec::new();
    for (jti, aud) in [
        ("h", "https://evil.example.com/webhooks/altu/3"),
        ("s", "http://transbordo.example.com/webhooks/altu/3"),
        ("p", "https://transbordo.example.com:8443/webhooks/altu/3"),
    ] {
        let tok = altu_token_with(ALTU_KEY, jti, &hid, json!({ "aud": aud }));
        let (s, body) = altu_webhook(&svc.base, 3, &ev, &tok).await;
        assert_eq!(s, 401, "{aud}: {body}");
        refusals.push(json!({"aud": aud, "status": s, "body": body}));
    }
    settings().bind(|| insta::assert_json_snapshot!("other_host_refused", refusals));
    let (_, lc) = get(&svc.base, "/v1/conversations/c-al/live_chat").await;
    assert_eq!(lc["live_chat"]["state"], "waiting", "{lc}");

    // The receiver's own URL (here with the default port written out) is accepted.
    let tok = altu_token_with(
        ALTU_KEY,
        "ok",
        &hid,
        json!({"aud": "https://TRANSBORDO.example.com:443/webhooks/altu/3"}),
    );
    assert_eq!(
        altu_webhook(&svc.base, 3, &ev, &tok).await,
        (200, json!({"ok": true, "events": ["applied"]}))
    );
    let (_, lc) = get(&svc.base, "/v1/conversations/c-al/live_chat").await;
    assert_eq!(lc["live_chat"]["state"], "with_agent", "{lc}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_public_url_only_the_path_of_aud_is_compared() {
    let (_d, svc, hid) = altu_world("").await;
    // Documented behaviour without `public_url`: the host is not checked.
    let tok = altu_token_with(
        ALTU_KEY,
        "h",
        &hid,
        json!({"aud": "https://evil.example.com/webhooks/altu/3"}),
    );
    assert_eq!(
        altu_webhook(&svc.base, 3, &joined(&hid, "e1"), &tok).await,
        (200, json!({"ok": true, "events": ["applied"]}))
    );
    svc.stop().await;
}
