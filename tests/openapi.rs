//! `docs/openapi.json` is the document the code generates (regenerate it with
//! `TRANSBORDO_WRITE_OPENAPI=1 cargo test --test openapi`), and the running service
//! serves exactly that at `GET /openapi.json`, without a token.

mod service_common;

use std::sync::Arc;

use serde_json::Value;
use service_common::*;
use transbordo::service::openapi;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

#[test]
fn committed_document_matches_the_code() {
    let generated = openapi::document() + "\n";
    if std::env::var_os("TRANSBORDO_WRITE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is not what the code generates; run \
         TRANSBORDO_WRITE_OPENAPI=1 cargo test --test openapi and commit it"
    );
    let doc: Value = serde_json::from_str(&generated).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    // Every route of the router is described, with the bearer scheme on /v1 only.
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        [
            "/v1/conversations/{id}/run",
            "/v1/conversations/{id}/messages",
            "/v1/conversations/{id}/typing",
            "/v1/conversations/{id}/close",
            "/v1/conversations/{id}/live_chat",
            "/v1/conversations/{id}/timeline",
            "/webhooks/liveperson/{integration_id}",
            "/webhooks/zendesk/{integration_id}",
            "/webhooks/altu/{integration_id}",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/files/{token}",
        ]
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (_, op) in item.as_object().expect("operations") {
            let secured = op.get("security").is_some();
            assert_eq!(secured, path.starts_with("/v1/"), "{path}");
            if secured {
                assert!(op["responses"]["401"].is_object(), "{path}: 401 documented");
            }
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_token"]["scheme"],
        "bearer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = Receiver::default().start().await;
    let cfg = write_config(dir.path(), &url, "");
    let svc = start(&cfg, Arc::new(Recorder::default())).await;
    let r = client()
        .get(format!("{}/openapi.json", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), openapi::document());
    svc.stop().await;
}
