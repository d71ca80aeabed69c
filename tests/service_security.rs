//! The service's request safety, over real HTTP: bearer tokens on `/v1/…` (and nothing
//! changes without one), open probes, the loopback-only rule for an open API, the
//! `http_request` destination guard (after DNS resolution, on redirects), body size
//! limits and the per-conversation message rate limit. Error bodies are snapshotted.

mod service_common;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::get as route_get;
use serde_json::{json, Value};
use service_common::*;
use transbordo::service::ServiceConfig;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

fn snap(name: &str, v: &Value) {
    settings().bind(|| insta::assert_json_snapshot!(name, v));
}

async fn world(extra: &str) -> (tempfile::TempDir, Receiver, Arc<Recorder>, Running) {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &url, extra);
    let rec = Arc::new(Recorder::default());
    let svc = start(&cfg, rec.clone()).await;
    (dir, rx, rec, svc)
}

/// A request with the given `Authorization` header value (or none).
async fn call(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut rb = match method {
        "GET" => client().get(url),
        _ => client().post(url),
    };
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (s, r.json().await.unwrap_or(Value::Null), www)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_needs_a_valid_token_and_nothing_changes_without_one() {
    let (_d, rx, rec, svc) = world("").await;
    let b = &svc.base;
    start_chat(b, "c1", 8).await;
    let run_body =
        json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": 8}}]});
    let routes: [(&str, String, Option<Value>); 4] = [
        (
            "POST",
            format!("{b}/v1/conversations/c2/run"),
            Some(run_body),
        ),
        (
            "POST",
            format!("{b}/v1/conversations/c1/messages"),
            Some(json!({"text": "hi"})),
        ),
        ("POST", format!("{b}/v1/conversations/c1/close"), None),
        ("GET", format!("{b}/v1/conversations/c1/live_chat"), None),
    ];
    let wrong_token = format!("Bearer {API_TOKEN}x");
    let basic = format!("Basic {API_TOKEN}");
    let refusals: [(&str, Option<&str>); 4] = [
        ("missing", None),
        ("wrong", Some(wrong_token.as_str())),
        ("basic", Some(basic.as_str())),
        ("empty", Some("Bearer ")),
    ];
    for (method, url, body) in &routes {
        for (case, auth) in &refusals {
            let (s, v, www) = call(method, url, *auth, body.clone()).await;
            assert_eq!(s, 401, "{method} {url} {case}: {v}");
            assert_eq!(www.as_deref(), Some("Bearer"));
            if url.ends_with("/run") {
                snap(&format!("unauthorized_{case}"), &v);
            }
        }
    }
    // Nothing happened: no run, no relay, no close, no event.
    assert_eq!(rec.calls().len(), 0, "{:?}", rec.calls());
    let (s, _) = get(b, "/v1/conversations/c2/live_chat").await;
    assert_eq!(s, 404);
    let (_, v) = get(b, "/v1/conversations/c1/live_chat").await;
    assert_eq!(v["live_chat"]["state"], "waiting");
    assert!(rx.events().is_empty());
    // The rotated token works too; the scheme is case-insensitive.
    let (s, v, _) = call(
        "GET",
        &format!("{b}/v1/conversations/c1/live_chat"),
        Some(&format!("bearer {API_TOKEN_2}")),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Probes need no token; webhooks keep their own signatures instead.
    let (s, v, _) = call("GET", &format!("{b}/healthz"), None, None).await;
    assert_eq!((s, v), (200, json!({"status": "ok"})));
    let (s, v, _) = call("GET", &format!("{b}/readyz"), None, None).await;
    assert_eq!((s, v), (200, json!({"status": "ready", "store": "ok"})));
    let (s, _) = lp_webhook(b, 8, &lp_change("pc-c1", 1, "OPEN", None, true)).await;
    assert_eq!(s, 200);
    // Unknown routes and methods answer JSON errors.
    let (s, v, _) = call("GET", &format!("{b}/v1/nope"), None, None).await;
    assert_eq!(s, 404);
    snap("not_found", &v);
    let (s, v, _) = call(
        "GET",
        &format!("{b}/v1/conversations/c1/run"),
        Some(&format!("Bearer {API_TOKEN}")),
        None,
    )
    .await;
    assert_eq!(s, 405);
    snap("method_not_allowed", &v);
    svc.stop().await;
}

fn config_error(listen: &str, api: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("i.toml"), INTEGRATIONS).unwrap();
    let src = format!(
        "listen = \"{listen}\"\nintegrations = \"i.toml\"\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n{api}"
    );
    match ServiceConfig::from_toml_str(&src, "svc.toml", d.path()) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_open_api_is_only_allowed_on_loopback() {
    assert_eq!(config_error("127.0.0.1:8920", ""), "ok");
    assert_eq!(config_error("[::1]:8920", ""), "ok");
    std::env::set_var("TRANSBORDO_TEST_API_TOKEN", "from-the-environment-123");
    let with_token = "[api]\ntokens = [\"${TRANSBORDO_TEST_API_TOKEN}\"]\n";
    assert_eq!(config_error("0.0.0.0:8920", with_token), "ok");
    let errors = [
        config_error("0.0.0.0:8920", ""),
        config_error("10.0.0.5:8920", "[api]\ntokens = []\n"),
        config_error("127.0.0.1:8920", "[api]\ntokens = [\"short\"]\n"),
        config_error(
            "127.0.0.1:8920",
            "[api]\ntokens = [\"${TRANSBORDO_TEST_UNSET_TOKEN}\"]\n",
        ),
        config_error("127.0.0.1:8920", "[api]\nmax_body_bytes = 10\n"),
        config_error(
            "127.0.0.1:8920",
            "[http_request]\nallow = [\"api.example.com\", \"10.0.0.0/99\"]\n",
        ),
        config_error("127.0.0.1:8920", "[timeline]\nretention_days = 0\n"),
    ];
    settings().bind(|| insta::assert_snapshot!("config_errors", errors.join("\n")));
    // The token's value never shows in the config's Debug output.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("i.toml"), INTEGRATIONS).unwrap();
    let c = ServiceConfig::from_toml_str(
        &format!("integrations = \"i.toml\"\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n{with_token}"),
        "svc.toml",
        d.path(),
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("from-the-environment-123"));
}

/// A local server: `/ok` answers JSON, `/redirect` sends to `target`.
async fn target_server(redirect_to: String) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route(
            "/ok",
            route_get(|| async { axum::Json(json!({"reached": true})) }),
        )
        .route(
            "/redirect",
            route_get(move || {
                let to = redirect_to.clone();
                async move { Redirect::temporary(&to) }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

/// Runs an `http_request` to `url` in conversation `conv`; returns its result.
async fn http_result(base: &str, conv: &str, url: &str) -> Value {
    let (s, v) = post(
        base,
        &format!("/v1/conversations/{conv}/run"),
        json!({"flow": [{"name": "http_request", "parameters": {"config": {"url": url, "timeout": 3000}},
                         "result_variable": "r"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["context"]["r"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_refuses_non_public_addresses_unless_allowed() {
    let probe = target_server(String::new()).await;
    let port = probe.port();
    let (_d, _rx, _rec, svc) = world("").await;
    let b = &svc.base;
    let mut refused = Vec::new();
    for (i, url) in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:9/ok".to_string(),
        "http://10.0.0.1:9/".to_string(),
        "http://[::ffff:127.0.0.1]:9/".to_string(),
        // 127.0.0.1 written as one number: the URL parser normalizes it first.
        format!("http://2130706433:{port}/ok"),
        "http://0.0.0.0:9/".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let r = http_result(b, &format!("g{i}"), url).await;
        assert_eq!(r["status"], "error", "{url}: {r}");
        assert_eq!(r["error"]["kind"], "forbidden", "{url}: {r}");
        refused.push(json!({"url": url.replace(&port.to_string(), "PORT"), "error": r["error"]}));
    }
    snap("http_request_forbidden", &json!(refused));
    svc.stop().await;

    // Allowed by name: the name is trusted whatever it resolves to, but a redirect to a
    // literal loopback address is still checked.
    let redirector = target_server(format!("http://127.0.0.1:{port}/ok")).await;
    let (_d, _rx, _rec, svc) = world("[http_request]\nallow = [\"localhost\"]\n").await;
    let r = http_result(&svc.base, "n1", &format!("http://localhost:{port}/ok")).await;
    assert_eq!(r["body"], json!({"reached": true}), "{r}");
    let r = http_result(
        &svc.base,
        "n2",
        &format!("http://localhost:{}/redirect", redirector.port()),
    )
    .await;
    assert_eq!(r["error"]["kind"], "forbidden", "{r}");
    let r = http_result(&svc.base, "n3", &format!("http://127.0.0.1:{port}/ok")).await;
    assert_eq!(r["error"]["kind"], "forbidden", "{r}");
    svc.stop().await;

    // Allowed by network.
    let (_d, _rx, _rec, svc) = world("[http_request]\nallow = [\"127.0.0.0/8\"]\n").await;
    for (i, url) in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        format!("http://127.0.0.1:{}/redirect", redirector.port()),
    ]
    .iter()
    .enumerate()
    {
        let r = http_result(&svc.base, &format!("a{i}"), url).await;
        assert_eq!(r["body"], json!({"reached": true}), "{url}: {r}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limits_get_413() {
    let (_d, rx, rec, svc) = world(
        "max_run_body_bytes = 4096\nmax_body_bytes = 2048\nmax_message_body_bytes = 2048\n[webhooks]\nmax_body_bytes = 2048\n",
    )
    .await;
    let b = &svc.base;
    start_chat(b, "c1", 8).await;
    let big = "x".repeat(5000);
    let (s, v) = post(
        b,
        "/v1/conversations/c2/run",
        json!({"flow": [{"name": "send_message", "parameters": {"text": big}}]}),
    )
    .await;
    assert_eq!(s, 413, "{v}");
    snap("payload_too_large_run", &v);
    // Under the run limit but over the general one: fine for run only.
    let mid = "y".repeat(3000);
    let (s, v) = post(
        b,
        "/v1/conversations/c3/run",
        json!({"flow": [{"name": "send_message", "parameters": {"text": mid}}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(b, "/v1/conversations/c1/messages", json!({ "text": mid })).await;
    assert_eq!(s, 413, "{v}");
    snap("payload_too_large_message", &v);
    let mut body = lp_message("pc-c1", 1, "ASSIGNED_AGENT", "hello");
    body["padding"] = json!(mid);
    let (s, v) = lp_webhook(b, 8, &body).await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert_eq!(rec.calls().len(), 0);
    assert!(rx.events().is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_rate_limited_per_conversation() {
    let (_d, _rx, rec, svc) = world("messages_per_minute = 60\nmessages_burst = 3\n").await;
    let b = &svc.base;
    start_chat(b, "c1", 8).await;
    start_chat(b, "c2", 8).await;
    for i in 0..3 {
        let (s, v) = post(
            b,
            "/v1/conversations/c1/messages",
            json!({"text": format!("m{i}")}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let r = client()
        .post(format!("{b}/v1/conversations/c1/messages"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"text": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    snap("rate_limited", &v);
    // Not relayed; another conversation is not affected.
    assert_eq!(rec.count("send"), 3);
    let (s, _) = post(b, "/v1/conversations/c2/messages", json!({"text": "hi"})).await;
    assert_eq!(s, 200);
    // A second later one more goes through.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, v) = post(b, "/v1/conversations/c1/messages", json!({"text": "later"})).await;
    assert_eq!(s, 200, "{v}");
    svc.stop().await;
}

/// A loopback "internal admin" endpoint that counts every request it gets: what a
/// cross-site attack would make a flow's `http_request` hit.
async fn counting_admin() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"admin": true}))
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (addr, hits)
}

/// A POST with exactly these headers (no `Content-Type` unless given) and body.
async fn raw_post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut rb = client().post(url).body(body.to_string());
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The flow an attacking page would post: reach the loopback admin endpoint.
fn attack_body(admin: std::net::SocketAddr) -> String {
    json!({"flow": [{"name": "http_request",
                     "parameters": {"config": {"url": format!("http://{admin}/admin"), "timeout": 3000}},
                     "result_variable": "r"}]})
    .to_string()
}

/// Every way a page on another site can post without a CORS preflight: refused with
/// `415`, by a service with tokens (given the right token) and by one without; nothing
/// runs. JSON with `charset=utf-8` still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_posts_take_only_json_whatever_the_tokens() {
    let (admin, hits) = counting_admin().await;
    let allow = "[http_request]\nallow = [\"127.0.0.1\"]\n";
    let bearer = format!("Bearer {API_TOKEN}");
    // The same service with its tokens, then with none (open on loopback).
    for open in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (url, rx) = Receiver::default().start().await;
        let cfg = write_config(dir.path(), &url, allow);
        if open {
            let text = std::fs::read_to_string(&cfg).unwrap();
            let line = format!("tokens = [\"{API_TOKEN}\", \"{API_TOKEN_2}\"]");
            assert!(text.contains(&line));
            std::fs::write(&cfg, text.replace(&line, "")).unwrap();
        }
        let rec = Arc::new(Recorder::default());
        let svc = start(&cfg, rec.clone()).await;
        let b = &svc.base;
        let auth: Vec<(&str, &str)> = if open {
            vec![]
        } else {
            vec![("authorization", bearer.as_str())]
        };
        let with = |ct: Option<&'static str>| {
            let mut h = auth.clone();
            if let Some(ct) = ct {
                h.push(("content-type", ct));
            }
            h
        };
        let body = attack_body(admin);
        let mut refusals = Vec::new();
        for (case, ct) in [
            ("text_plain", Some("text/plain")),
            ("text_plain_charset", Some("text/plain;charset=UTF-8")),
            ("form", Some("application/x-www-form-urlencoded")),
            ("multipart", Some("multipart/form-data; boundary=x")),
            ("missing", None),
            ("json_latin1", Some("application/json; charset=latin1")),
        ] {
            let (s, v) = raw_post(
                &format!("{b}/v1/conversations/x-{case}/run"),
                &with(ct),
                &body,
            )
            .await;
            assert_eq!(s, 415, "open={open} {case}: {v}");
            assert_eq!(v["error"]["code"], "unsupported_media_type", "{v}");
            refusals.push(json!({"content_type": ct, "error": v["error"]}));
        }
        // The other POST routes too, even `close`, which reads no body: a bodiless
        // cross-site POST carries no Content-Type at all.
        start_chat_open(b, &auth, "c1").await;
        for path in [
            "/v1/conversations/c1/messages",
            "/v1/conversations/c1/close",
        ] {
            let (s, v) = raw_post(
                &format!("{b}{path}"),
                &with(Some("text/plain")),
                "{\"text\":\"hi\"}",
            )
            .await;
            assert_eq!(s, 415, "open={open} {path}: {v}");
            let (s, v) = raw_post(&format!("{b}{path}"), &with(None), "").await;
            assert_eq!(s, 415, "open={open} {path}: {v}");
        }
        if !open {
            snap("unsupported_media_type", &json!(refusals));
        } else {
            // The same answers without tokens.
            let again: Vec<Value> = refusals.iter().map(|r| r["error"].clone()).collect();
            assert!(again.iter().all(|e| e["code"] == "unsupported_media_type"));
        }
        // Nothing ran: the admin endpoint was never reached, no live chat started, no
        // message relayed, nothing closed, no event.
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(rec.calls().len(), 0, "{:?}", rec.calls());
        let (s, v) = raw_get(&format!("{b}/v1/conversations/c1/live_chat"), &auth, None).await;
        assert_eq!(
            (s, v["live_chat"]["state"].as_str()),
            (200, Some("waiting")),
            "{v}"
        );
        // JSON, with or without the charset, is what runs (the test can fail).
        let (s, v) = raw_post(
            &format!("{b}/v1/conversations/ok-1/run"),
            &with(Some("application/json; charset=utf-8")),
            &body,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["context"]["r"]["body"], json!({"admin": true}), "{v}");
        assert_eq!(hits.swap(0, std::sync::atomic::Ordering::SeqCst), 1);
        assert!(rx.events().is_empty());
        svc.stop().await;
    }
}

/// `start_chat` with these auth headers (none for an open service).
async fn start_chat_open(base: &str, auth: &[(&str, &str)], conv: &str) {
    let mut h = auth.to_vec();
    h.push(("content-type", "application/json"));
    let (s, v) = raw_post(
        &format!("{base}/v1/conversations/{conv}/run"),
        &h,
        &json!({"flow": [{"name": "start_live_chat", "parameters": {"integration_id": 8}}]})
            .to_string(),
    )
    .await;
    assert_eq!(
        (s, v["live_chat"]["state"].as_str()),
        (200, Some("waiting")),
        "{v}"
    );
}

/// A GET with these headers and, if given, this `Host`.
async fn raw_get(url: &str, headers: &[(&str, &str)], host: Option<&str>) -> (u16, Value) {
    let mut rb = client().get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(h) = host {
        rb = rb.header("host", h);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// DNS rebinding: on a loopback `listen`, a request naming another host is refused
/// (`403`), with or without tokens, before anything runs; loopback names pass; webhooks
/// keep any `Host` (providers come through a proxy). A non-loopback `listen` (behind a
/// proxy, tokens required) takes any `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_listen_answers_only_to_loopback_host_names() {
    let (admin, hits) = counting_admin().await;
    let (_d, rx, rec, svc) = world("[http_request]\nallow = [\"127.0.0.1\"]\n").await;
    let b = &svc.base;
    let port = b.rsplit(':').next().unwrap().to_string();
    let bearer = format!("Bearer {API_TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let mut bodies = Vec::new();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("localhost.evil.example:{port}"),
        format!("10.0.0.1:{port}"),
    ] {
        let mut h = auth.to_vec();
        h.push(("content-type", "application/json"));
        h.push(("host", host.as_str()));
        let (s, v) = raw_post(
            &format!("{b}/v1/conversations/r1/run"),
            &h,
            &attack_body(admin),
        )
        .await;
        assert_eq!(s, 403, "{host}: {v}");
        bodies.push(v);
        for path in [
            "/v1/conversations/r1/live_chat",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/v1/nope",
        ] {
            let (s, v) = raw_get(&format!("{b}{path}"), &auth, Some(&host)).await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (403, Some("forbidden_host")),
                "{host} {path}"
            );
        }
    }
    // The one without a port: ports are picked at random.
    snap("forbidden_host", &bodies[1]);
    assert!(bodies
        .iter()
        .all(|v| v["error"]["code"] == "forbidden_host"));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Loopback names, with or without a port.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        "127.0.0.1".to_string(),
    ] {
        let (s, v) = raw_get(&format!("{b}/healthz"), &[], Some(&host)).await;
        assert_eq!(s, 200, "{host}: {v}");
    }
    // Webhooks keep their signatures as the check, whatever the Host.
    start_chat(b, "c1", 8).await;
    let raw = lp_change("pc-c1", 1, "OPEN", None, true).to_string();
    let sig = transbordo::service::auth::liveperson_signature(LP_SECRET, raw.as_bytes());
    let (s, v) = raw_post(
        &format!("{b}/webhooks/liveperson/8"),
        &[
            ("content-type", "application/json"),
            ("x-liveperson-signature", sig.as_str()),
            ("host", "transbordo.example.com"),
        ],
        &raw,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rec.count("send"), 0);
    drop(rx);
    svc.stop().await;

    // Bound beyond loopback (tokens required): a proxy's public name is fine.
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &url, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\""),
    )
    .unwrap();
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    let (s, v) = raw_get(
        &format!("{}/healthz", svc.base),
        &[],
        Some("transbordo.example.com"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    svc.stop().await;
}

/// A reverse proxy in front of a loopback `listen` forwards the public name as `Host`:
/// the name `public_url` gives is the operator's choice and is answered; others are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_listen_also_answers_to_the_public_url_host() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &url, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("public_url = \"https://Bots.Example.com/transbordo\"\n{text}"),
    )
    .unwrap();
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    let b = &svc.base;
    for host in ["bots.example.com", "BOTS.example.com:443"] {
        let (s, v) = raw_get(&format!("{b}/healthz"), &[], Some(host)).await;
        assert_eq!(s, 200, "{host}: {v}");
    }
    for host in [
        "bots.example.com:8443",
        "bots.example.com:66979",
        "evil.example",
        "bots.example.com.evil.example",
    ] {
        let (s, v) = raw_get(&format!("{b}/healthz"), &[], Some(host)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("forbidden_host")),
            "{host}"
        );
    }
    svc.stop().await;
}
