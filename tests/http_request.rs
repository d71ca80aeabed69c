//! `http_request` over real HTTP on 127.0.0.1: JSON and text bodies, non-2xx answers,
//! timeouts, refused connections, and redaction of secret headers in the trace.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use transbordo::{Engine, RunOptions, Store};

async fn server() -> SocketAddr {
    let app = Router::new()
        .route(
            "/echo",
            post(
                |headers: HeaderMap, Query(q): Query<Value>, Json(body): Json<Value>| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    Json(json!({"received": body, "query": q, "auth_seen": !auth.is_empty()}))
                },
            ),
        )
        .route("/text", get(|| async { "plain answer" }))
        .route(
            "/missing",
            get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": "no such order"})),
                )
            }),
        )
        .route(
            "/boom",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "try later") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn run_one(config: Value) -> (Value, transbordo::RunOutcome) {
    let engine = Engine::new();
    let flow = json!([{"name": "http_request", "parameters": {"flavor": "axios", "config": config}, "result_variable": "r"}]);
    let flow = engine.load(&flow.to_string(), "flow.json").expect("loads");
    let store = Store::from_json(&json!({"context": {"token": "s3cr3t-value"}})).expect("store");
    let out = engine.run(&flow, store, &traced()).await;
    (out.context["r"].clone(), out)
}

#[tokio::test]
async fn json_answer_with_query_and_body() {
    let addr = server().await;
    let (r, out) = run_one(json!({
        "url": format!("http://{addr}/echo"), "method": "post",
        "headers": {"Authorization": "Bearer s3cr3t-value"},
        "params": {"page": 2}, "data": {"cpf": "123"}
    }))
    .await;
    assert_eq!(r["status"], "ok");
    assert_eq!(r["statusCode"], 200);
    assert_eq!(r["body"]["received"], json!({"cpf": "123"}));
    assert_eq!(r["body"]["query"], json!({"page": "2"}));
    assert_eq!(r["body"]["auth_seen"], true);
    // The trace shows parameters with the secret header redacted.
    let trace = serde_json::to_string(&out.trace).expect("json");
    assert!(!trace.contains("s3cr3t-value"), "{trace}");
    assert!(trace.contains("[redacted]"));
}

#[tokio::test]
async fn text_answer_is_a_string_body() {
    let addr = server().await;
    let (r, _) = run_one(json!({"url": format!("http://{addr}/text")})).await;
    assert_eq!(r["status"], "ok");
    assert_eq!(r["body"], "plain answer");
}

#[tokio::test]
async fn non_2xx_is_an_error_result_with_status_code() {
    let addr = server().await;
    let (r, out) = run_one(json!({"url": format!("http://{addr}/missing")})).await;
    assert_eq!(r["status"], "error");
    assert_eq!(r["statusCode"], 404);
    assert_eq!(r["body"], json!({"error": "no such order"}));
    assert_eq!(r["error"]["kind"], "rejected");
    assert_eq!(r["error"]["http_status"], 404);
    assert!(out
        .warnings
        .iter()
        .any(|w| w.message.contains("http_request failed: rejected")));
    let (r, _) = run_one(json!({"url": format!("http://{addr}/boom")})).await;
    assert_eq!(r["error"]["kind"], "unavailable");
    assert_eq!(r["body"], "try later");
}

#[tokio::test]
async fn timeout_is_an_error_result() {
    let addr = server().await;
    let (r, _) = run_one(json!({"url": format!("http://{addr}/slow"), "timeout": 200})).await;
    assert_eq!(r["status"], "error");
    assert_eq!(r["error"]["kind"], "timeout");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("200 ms"),
        "{r}"
    );
}

#[tokio::test]
async fn refused_connection_is_unavailable() {
    // Bind then drop: the port is closed when the request is made.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (r, _) = run_one(json!({"url": format!("http://{addr}/x")})).await;
    assert_eq!(r["status"], "error");
    assert_eq!(r["error"]["kind"], "unavailable");
}

#[tokio::test]
async fn templated_bad_url_is_a_config_error_at_run_time() {
    let engine = Engine::new();
    let flow = json!([{"name": "http_request", "parameters": {"config": {"url": "<? $u ?>"}}, "result_variable": "r"}]);
    let flow = engine.load(&flow.to_string(), "f.json").expect("loads");
    let store = Store::from_json(&json!({"context": {"u": "ftp://example.com"}})).expect("store");
    let out = engine.run(&flow, store, &traced()).await;
    assert_eq!(out.context["r"]["error"]["kind"], "config");
    insta::assert_snapshot!(out.context["r"]["error"]["message"].as_str().unwrap_or(""), @"`config.url` must be http or https, not ftp");
}

/// A run that keeps its trace (these tests read it).
fn traced() -> RunOptions {
    RunOptions {
        trace: true,
        ..RunOptions::default()
    }
}
