//! The service serves at most `max_in_flight` requests of a part (`api`, `webhooks`) at
//! once: one more waits up to 5 s for a slot, then gets `503 busy` with `Retry-After`;
//! a request that holds a slot must send its body within 10 s, so a sender trickling
//! its body cannot keep the slot. Real HTTP against an in-process service.

mod service_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use service_common::{get, lp_change, lp_webhook, Receiver, Recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Opens a webhook request and sends its headers and the start of its body only: the
/// service takes a slot for it and waits for the rest.
async fn trickle(base: &str) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhooks/liveperson/7 HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"kind\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s
}

async fn shed(base: &str, part: &str) -> f64 {
    let series = format!("transbordo_requests_shed_total{{part=\"{part}\"}}");
    let text = service_common::metrics_text(base).await;
    service_common::metric_value(&text, &series).unwrap_or_else(|| panic!("{series} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_max_in_flight_waits_then_gets_busy_and_a_trickled_body_loses_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (cb, _rx) = Receiver::default().start().await;
    let cfg = service_common::write_config(
        dir.path(),
        &cb,
        "max_in_flight = 1\n\n[webhooks]\nmax_in_flight = 1\n",
    );
    let svc = service_common::start(&cfg, Arc::new(Recorder::default())).await;
    assert_eq!(shed(&svc.base, "webhooks").await, 0.0);

    let started = Instant::now();
    let mut held = trickle(&svc.base).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The one webhook slot is taken: the next webhook waits 5 s, then is told so.
    let body = lp_change("pc-none", 1, "OPEN", None, false);
    let t = Instant::now();
    let r = service_common::client()
        .post(format!("{}/webhooks/liveperson/7", svc.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let waited = t.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let answer: serde_json::Value = r.json().await.unwrap();
    settings().bind(|| insta::assert_json_snapshot!("busy_answer", answer));
    assert!(waited >= Duration::from_millis(4_500), "{waited:?}");
    assert_eq!(shed(&svc.base, "webhooks").await, 1.0);

    // Slots are per part: the API still answers (its own slot is free).
    let (status, _) = get(&svc.base, "/v1/conversations/c-none/live_chat").await;
    assert_eq!(status, 404);
    assert_eq!(shed(&svc.base, "api").await, 0.0);

    // 10 s after it took its slot, the trickled request is refused and its slot freed,
    // though its sender still holds the connection open.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), held.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(read.is_ok(), "no answer to the trickled request");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("the request body did not arrive within 10 s"),
        "{answer}"
    );
    assert!(started.elapsed() >= Duration::from_secs(10));
    let (status, _) = lp_webhook(&svc.base, 7, &body).await;
    assert_ne!(status, 503);
    assert_eq!(shed(&svc.base, "webhooks").await, 1.0);
    svc.stop().await;
}

#[test]
fn max_in_flight_below_one_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = service_common::write_config(
        dir.path(),
        "http://127.0.0.1:9/cb",
        "\n[webhooks]\nmax_in_flight = 0\n",
    );
    let Err(e) = transbordo::service::ServiceConfig::from_file(&cfg) else {
        panic!("a max_in_flight of 0 was accepted");
    };
    let text = e
        .to_string()
        .replace(&dir.path().display().to_string(), "DIR");
    settings().bind(|| insta::assert_snapshot!("max_in_flight_zero", text));
}
