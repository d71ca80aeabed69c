//! The real clients over HTTP on 127.0.0.1 (wiremock): results, failure classes, retries,
//! token caching/refresh, idempotency, limits on the wire, and secrets never leaking.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use transbordo::providers::jwt::{self, JtiCache, Validation};
use transbordo::providers::{
    CloseReason, HandoffCx, Integration, IntegrationId, Integrations, ProviderClient, RetryPolicy,
    StartOutcome,
};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const LP_SECRET: &str = "lp-secret-Q9";
const ZD_TOKEN: &str = "zd-token-Q9";
const ALTU_KEY: &str = "altu-key-Q9";
const ALTU_TOKEN: &str = "altu-token-Q9";
const SECRETS: &[&str] = &[LP_SECRET, ZD_TOKEN, ALTU_KEY, ALTU_TOKEN];

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        total_budget: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_millis(1500),
    }
}

fn client() -> ProviderClient {
    ProviderClient::new(policy()).unwrap_or_else(|e| panic!("client: {e}"))
}

fn integration(kind: &str, uri: &str) -> Integration {
    let toml = match kind {
        "lp" => format!(
            "[[integration]]\nid = 7\nprovider = \"liveperson\"\naccount_id = \"12345678\"\nclient_id = \"lp-client\"\nclient_secret = \"{LP_SECRET}\"\ncsds_url = \"{uri}\"\n"
        ),
        "zd" => format!(
            "[[integration]]\nid = 1\nprovider = \"zendesk\"\nbase_url = \"{uri}\"\nemail = \"bot@acme.com\"\napi_token = \"{ZD_TOKEN}\"\n"
        ),
        _ => format!(
            "[[integration]]\nid = 3\nprovider = \"altu_sdk\"\nwebhook_url = \"{uri}/transbordo\"\naccess_token = \"{ALTU_TOKEN}\"\naccess_key = \"{ALTU_KEY}\"\n"
        ),
    };
    let ints = Integrations::from_toml_str(&toml, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let first = ints.iter().next().cloned();
    first.unwrap_or_else(|| panic!("one integration"))
}

fn cx(handoff: &str, contact: Value) -> HandoffCx {
    HandoffCx {
        handoff_id: handoff.into(),
        conversation_id: "conv-1".into(),
        contact,
    }
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fake_jwt(exp: u64) -> String {
    format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
        URL_SAFE_NO_PAD.encode(json!({"aud": "12345678", "exp": exp}).to_string())
    )
}

fn assert_no_secrets(o: &StartOutcome) {
    let text = format!("{o:?} {}", o.result);
    for s in SECRETS {
        assert!(!text.contains(s), "secret {s} leaked: {text}");
    }
}

/// The requests the fake received, secrets redacted, for snapshots.
async fn received(server: &MockServer) -> Value {
    let reqs: Vec<Request> = server.received_requests().await.unwrap_or_default();
    Value::Array(
        reqs.iter()
            .map(|r| {
                let mut headers = Map::new();
                for name in [
                    "content-type",
                    "idempotency-key",
                    "authorization",
                    "x-lp-on-behalf",
                ] {
                    if let Some(v) = r.headers.get(name).and_then(|v| v.to_str().ok()) {
                        let shown = if name == "authorization" || name == "x-lp-on-behalf" {
                            let scheme = v
                                .split(' ')
                                .next()
                                .filter(|s| *s == "Basic" || *s == "Bearer");
                            match scheme {
                                Some(s) => format!("{s} [redacted]"),
                                None => "[redacted]".to_string(),
                            }
                        } else {
                            v.to_string()
                        };
                        headers.insert(name.into(), json!(shown));
                    }
                }
                let text = String::from_utf8_lossy(&r.body).to_string();
                let mut body = serde_json::from_str::<Value>(&text).unwrap_or(json!(text));
                if let Value::String(s) = &mut body {
                    for sec in SECRETS {
                        *s = s.replace(sec, "[redacted]");
                    }
                }
                json!({
                    "method": r.method.to_string(),
                    "path": r.url.path(),
                    "query": r.url.query(),
                    "headers": headers,
                    "body": body,
                })
            })
            .collect(),
    )
}

fn snap_settings() -> insta::internals::SettingsBindDropGuard {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    s.bind_to_scope()
}

// ---- LivePerson -----------------------------------------------------------------------

async fn mount_lp_base(server: &MockServer, token_exp: u64, sentinel_times: u64) {
    let host = server.uri().trim_start_matches("http://").to_string();
    Mock::given(method("GET"))
        .and(path("/api/account/12345678/service/baseURI.json"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"baseURIs": [
                {"service": "sentinel", "account": "12345678", "baseURI": host},
                {"service": "idp", "account": "12345678", "baseURI": host},
                {"service": "asyncMessagingEnt", "account": "12345678", "baseURI": host},
            ]})),
        )
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/sentinel/api/account/12345678/app/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"access_token": fake_jwt(token_exp), "token_type": "Bearer"}),
            ),
        )
        .expect(sentinel_times)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/account/12345678/consumer"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"token": "consumer-jws-1"})))
        .mount(server)
        .await;
}

fn lp_conversation_ok() -> ResponseTemplate {
    // Entries deliberately out of order: the result must match on reqId.
    ResponseTemplate::new(200).set_body_json(json!([
        {"code": "OK", "body": {"conversationId": "ebe75240-0e78-4ca5-bf5c-4818ae5d137f"}, "reqId": "2"},
        {"code": "OK", "body": {"msg": "OK User Profile set successfully"}, "reqId": "1"},
    ]))
}

async fn mount_lp_send(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(
            "/api/account/12345678/messaging/consumer/conversation/send",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"reqId": "3", "code": "OK", "body": {"sequence": 0}})),
        )
        .mount(server)
        .await;
}

#[tokio::test]
async fn liveperson_happy_path_exact_result_and_wire() {
    let _g = snap_settings();
    let server = MockServer::start().await;
    mount_lp_base(&server, now() + 3600, 1).await;
    Mock::given(method("POST"))
        .and(path(
            "/api/account/12345678/messaging/consumer/conversation",
        ))
        .and(header("x-lp-on-behalf", "consumer-jws-1"))
        .respond_with(lp_conversation_ok())
        .expect(2)
        .mount(&server)
        .await;
    mount_lp_send(&server).await;
    let integ = integration("lp", &server.uri());
    let c = client();
    let p = params(json!({
        "integration_id": 7, "skill_id": "1589664150",
        "campaign_info": {"campaign_id": "1614784350", "engagement_id": "1614784550"},
        "start_message": "Mensagem inicial para o agente",
        "extra_info": "x".repeat(300),
    }));
    let out = c
        .start_live_chat(
            &integ,
            &p,
            &cx(
                "hf-lp-1",
                json!({"name": "Maria Silva", "phone": "+5511999990000"}),
            ),
        )
        .await;
    assert_eq!(
        out.result,
        json!({"status": "ok", "body": {"reqId": "2", "code": "OK", "body": {"conversationId": "ebe75240-0e78-4ca5-bf5c-4818ae5d137f"}}})
    );
    let h = out.handoff.clone().unwrap_or_else(|| panic!("handoff"));
    assert_eq!(
        h.provider_conversation_id,
        "ebe75240-0e78-4ca5-bf5c-4818ae5d137f"
    );
    assert_eq!(h.consumer_token_key.as_deref(), Some("+5511999990000"));
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(out.warnings[0].contains("extra_info"));
    assert_no_secrets(&out);
    // Second handoff: domains and AppJWT are cached (CSDS and Sentinel expect(1)).
    let out2 = c
        .start_live_chat(
            &integ,
            &params(json!({})),
            &cx("hf-lp-2", json!({"phone": "+5511999990000"})),
        )
        .await;
    assert_eq!(out2.result["status"], "ok");
    let wire = received(&server).await;
    // extra_info over 256 characters is sent as an empty description.
    let conv = wire
        .as_array()
        .and_then(|a| {
            a.iter().find(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/conversation"))
            })
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(conv["body"][0]["body"]["description"], "");
    // The Sentinel form carries the credentials in the body.
    let form = wire[1]["body"].as_str().unwrap_or_default().to_string();
    assert_eq!(form, "client_id=lp-client&client_secret=[redacted]");
    insta::assert_json_snapshot!("liveperson_wire", wire);
}

#[tokio::test]
async fn liveperson_token_near_expiry_is_refetched() {
    let server = MockServer::start().await;
    // exp within the 60 s refresh margin: every handoff fetches a new AppJWT.
    mount_lp_base(&server, now() + 30, 2).await;
    Mock::given(method("POST"))
        .and(path(
            "/api/account/12345678/messaging/consumer/conversation",
        ))
        .respond_with(lp_conversation_ok())
        .expect(2)
        .mount(&server)
        .await;
    let integ = integration("lp", &server.uri());
    let c = client();
    for h in ["a", "b"] {
        let out = c
            .start_live_chat(&integ, &params(json!({})), &cx(h, json!({"id": "u1"})))
            .await;
        assert_eq!(out.result["status"], "ok", "{}", out.result);
    }
}

#[tokio::test]
async fn liveperson_401_refreshes_app_jwt_once() {
    let server = MockServer::start().await;
    mount_lp_base(&server, now() + 3600, 2).await;
    Mock::given(method("POST"))
        .and(path("/api/account/12345678/messaging/consumer/conversation"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"kind": "resp", "code": 401, "body": {"title": "Unauthorized", "details": "AppJWT expired", "errorCode": 40102}})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(
            "/api/account/12345678/messaging/consumer/conversation",
        ))
        .respond_with(lp_conversation_ok())
        .expect(1)
        .mount(&server)
        .await;
    let out = client()
        .start_live_chat(
            &integration("lp", &server.uri()),
            &params(json!({})),
            &cx("h", json!({})),
        )
        .await;
    assert_eq!(out.result["status"], "ok", "{}", out.result);
}

#[tokio::test]
async fn liveperson_persistent_401_is_auth_error() {
    let server = MockServer::start().await;
    mount_lp_base(&server, now() + 3600, 2).await;
    let body =
        json!({"kind": "resp", "code": 401, "body": {"title": "Unauthorized", "errorCode": 40102}});
    Mock::given(method("POST"))
        .and(path(
            "/api/account/12345678/messaging/consumer/conversation",
        ))
        .respond_with(ResponseTemplate::new(401).set_body_json(body.clone()))
        .expect(2)
        .mount(&server)
        .await;
    let out = client()
        .start_live_chat(
            &integration("lp", &server.uri()),
            &params(json!({})),
            &cx("h", json!({})),
        )
        .await;
    assert_eq!(out.result["status"], "error");
    assert_eq!(out.result["error"]["kind"], "auth");
    assert_eq!(out.result["error"]["http_status"], 401);
    assert_eq!(out.result["error"]["body"], body);
    assert!(out.handoff.is_none());
    assert_no_secrets(&out);
}

#[tokio::test]
async fn liveperson_429_honours_retry_after_then_rate_limited() {
    let server = MockServer::start().await;
    mount_lp_base(&server, now() + 3600, 1).await;
    Mock::given(method("POST"))
        .and(path(
            "/api/account/12345678/messaging/consumer/conversation",
        ))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_string("Too many requests, please try again later"),
        )
        .expect(3)
        .mount(&server)
        .await;
    let t = Instant::now();
    let out = client()
        .start_live_chat(
            &integration("lp", &server.uri()),
            &params(json!({})),
            &cx("h", json!({})),
        )
        .await;
    // Two retries, each after the 1 s Retry-After.
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(out.result["error"]["kind"], "rate_limited");
    assert_eq!(out.result["error"]["http_status"], 429);
    assert_eq!(
        out.result["error"]["body"],
        "Too many requests, please try again later"
    );
}

#[tokio::test]
async fn liveperson_unsafe_create_is_not_retried_on_500() {
    let server = MockServer::start().await;
    mount_lp_base(&server, now() + 3600, 1).await;
    Mock::given(method("POST"))
        .and(path(
            "/api/account/12345678/messaging/consumer/conversation",
        ))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": "boom"})))
        .expect(1)
        .mount(&server)
        .await;
    let out = client()
        .start_live_chat(
            &integration("lp", &server.uri()),
            &params(json!({})),
            &cx("h", json!({})),
        )
        .await;
    assert_eq!(out.result["error"]["kind"], "unavailable");
    assert_eq!(out.result["error"]["body"], json!({"error": "boom"}));
}

// ---- Zendesk --------------------------------------------------------------------------

fn ticket_201() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(
        json!({"ticket": {"id": 35436, "status": "new", "subject": "Ajuda", "requester_id": 900}}),
    )
}

#[tokio::test]
async fn zendesk_retry_then_success_reuses_idempotency_key() {
    let _g = snap_settings();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/users/create_or_update.json"))
        .and(body_partial_json(
            json!({"user": {"email": "carlos@example.com"}}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"user": {"id": 900, "name": "Carlos"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .and(header("idempotency-key", "hf-zd-1"))
        .and(body_partial_json(
            json!({"ticket": {"requester_id": 900, "external_id": "hf-zd-1"}}),
        ))
        .respond_with(ticket_201())
        .expect(1)
        .mount(&server)
        .await;
    let out = client()
        .start_live_chat(
            &integration("zd", &server.uri()),
            &params(json!({"integration_id": "1", "subject": "Ajuda", "tags": ["a"], "extra_info": {"x": 1},
                           "custom_fields": [{"id": "360023232032", "value": "123"}]})),
            &cx("hf-zd-1", json!({"name": "Carlos", "email": "carlos@example.com"})),
        )
        .await;
    assert_eq!(
        out.result,
        json!({"response": {"body": {"ticket": {"id": 35436, "status": "new", "subject": "Ajuda", "requester_id": 900}}, "status": "ok"}})
    );
    let h = out.handoff.clone().unwrap_or_else(|| panic!("handoff"));
    assert_eq!(h.provider_conversation_id, "35436");
    assert_eq!(h.requester_id, Some(json!(900)));
    assert_eq!(
        out.warnings,
        vec!["`extra_info` is not supported by Zendesk and is ignored".to_string()]
    );
    assert_no_secrets(&out);
    let wire = received(&server).await;
    let keys: Vec<_> = wire
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["path"] == "/api/v2/tickets.json")
                .map(|r| r["headers"]["idempotency-key"].clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(keys, vec![json!("hf-zd-1"), json!("hf-zd-1")]);
    insta::assert_json_snapshot!("zendesk_wire", wire);
}

async fn zd_failure(resp: ResponseTemplate, times: u64) -> StartOutcome {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/tickets.json"))
        .respond_with(resp)
        .expect(times)
        .mount(&server)
        .await;
    let out = client()
        .start_live_chat(
            &integration("zd", &server.uri()),
            &params(json!({"subject": "s"})),
            &cx("h", json!({})),
        )
        .await;
    assert_no_secrets(&out);
    assert!(out.handoff.is_none());
    assert_eq!(out.result["response"]["status"], "error", "{}", out.result);
    out
}

#[tokio::test]
async fn zendesk_failure_classes() {
    let _g = snap_settings();
    let invalid = json!({"error": "RecordInvalid", "description": "Record validation errors",
        "details": {"base": [{"description": "Description: cannot be blank", "error": "BlankValue"}]}});
    let cases = vec![
        (
            "401",
            zd_failure(
                ResponseTemplate::new(401)
                    .set_body_json(json!({"error": "Couldn't authenticate you"})),
                1,
            )
            .await,
        ),
        (
            "422",
            zd_failure(ResponseTemplate::new(422).set_body_json(invalid.clone()), 1).await,
        ),
        (
            "400_text",
            zd_failure(ResponseTemplate::new(400).set_body_string("Bad request"), 1).await,
        ),
        (
            "429",
            zd_failure(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "0")
                    .set_body_string("Rate limit for ticket updates exceeded"),
                3,
            )
            .await,
        ),
        (
            "500",
            zd_failure(
                ResponseTemplate::new(500).set_body_json(json!({"error": "InternalError"})),
                3,
            )
            .await,
        ),
        (
            "slow",
            zd_failure(ticket_201().set_delay(Duration::from_secs(3)), 1).await,
        ),
        (
            "malformed_201",
            zd_failure(
                ResponseTemplate::new(201).set_body_string("<html>oops</html>"),
                1,
            )
            .await,
        ),
    ];
    let kinds: Vec<_> = cases
        .iter()
        .map(|(n, o)| (*n, o.result["response"]["error"]["kind"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("401", json!("auth")),
            ("422", json!("rejected")),
            ("400_text", json!("rejected")),
            ("429", json!("rate_limited")),
            ("500", json!("unavailable")),
            ("slow", json!("timeout")),
            ("malformed_201", json!("unavailable")),
        ]
    );
    assert_eq!(cases[1].1.result["response"]["error"]["body"], invalid);
    let all: Map<String, Value> = cases
        .into_iter()
        .map(|(n, o)| (n.to_string(), o.result))
        .collect();
    insta::assert_json_snapshot!("zendesk_failures", all);
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let out = client()
        .start_live_chat(
            &integration("zd", &format!("http://127.0.0.1:{port}")),
            &params(json!({"subject": "s"})),
            &cx("h", json!({})),
        )
        .await;
    assert_eq!(
        out.result["response"]["error"]["kind"], "unavailable",
        "{}",
        out.result
    );
}

#[tokio::test]
async fn zendesk_comment_close_and_status() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/tickets/35436.json"))
        .and(body_partial_json(
            json!({"ticket": {"comment": {"body": "oi", "author_id": 900, "public": true}}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ticket": {"id": 35436}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v2/tickets/35436.json"))
        .and(body_partial_json(json!({"ticket": {"status": "solved"}})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ticket": {"id": 35436, "status": "solved"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/tickets/35436.json"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ticket": {"id": 35436, "status": "open"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let integ = integration("zd", &server.uri());
    let h = transbordo::providers::Handoff {
        provider: transbordo::providers::zendesk::KIND,
        integration_id: IntegrationId::new("1"),
        provider_conversation_id: "35436".into(),
        consumer_token_key: None,
        handoff_id: "h".into(),
        requester_id: Some(json!(900)),
    };
    let c = client();
    c.send_user_message(&integ, &h, "oi")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.close(&integ, &h, CloseReason::UserClosed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.ticket_status(&integ, "35436").await.ok().as_deref(),
        Some("open")
    );
}

// ---- ALTU SDK -------------------------------------------------------------------------

#[tokio::test]
async fn altu_open_signed_event_limits_and_result() {
    let _g = snap_settings();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transbordo"))
        .and(body_partial_json(json!({"event": "OPEN_CONVERSATION", "event_id": "hf-a:open", "conversation_id": "hf-a"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"conversation_id": "plat-77"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/transbordo"))
        .and(body_partial_json(json!({"event": "USER_MESSAGE", "platform_conversation_id": "plat-77", "data": {"text": "olá"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/transbordo"))
        .and(body_partial_json(
            json!({"event": "CLOSE_CONVERSATION", "data": {"reason": "timeout"}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    let integ = integration("altu", &server.uri());
    let c = client();
    let big = json!(["z".repeat(1021)]); // 1025 characters of JSON
    let ok = json!(["z".repeat(1020)]); // 1024 characters of JSON
    let out = c
        .start_live_chat(
            &integ,
            &params(json!({"skillId": "vendas", "extra_info": big, "contact_info": ok, "start_message": "oi"})),
            &cx("hf-a", json!({"name": "Rita"})),
        )
        .await;
    assert_eq!(
        out.result,
        json!({"status": "ok", "body": {"conversationId": "plat-77"}})
    );
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert_no_secrets(&out);
    let h = out.handoff.clone().unwrap_or_else(|| panic!("handoff"));
    c.send_user_message(&integ, &h, "olá")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.close(&integ, &h, CloseReason::Timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let reqs = server.received_requests().await.unwrap_or_default();
    let v = Validation {
        issuer: Some("transbordo".into()),
        audience: Some(format!("{}/transbordo", server.uri())),
        ..Validation::default()
    };
    let replay = JtiCache::default();
    for r in &reqs {
        let auth = r
            .headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let token = auth
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("bearer: {auth}"));
        let claims = v
            .validate(token, ALTU_KEY.as_bytes(), now(), Some(&replay))
            .unwrap_or_else(|e| panic!("token refused: {e}"));
        assert_eq!(claims["sub"], ALTU_TOKEN);
        assert_eq!(claims["conversation_id"], "hf-a");
        assert!(
            claims["exp"].as_u64().unwrap_or(u64::MAX) - claims["iat"].as_u64().unwrap_or(0) <= 60
        );
        assert!(jwt::verify_hs256(token, b"wrong key").is_err());
    }
    let wire = received(&server).await;
    assert_eq!(wire[0]["body"]["data"]["extra_info"], "");
    assert_eq!(
        wire[0]["body"]["data"]["contact_info"]
            .as_str()
            .map(|s| s.chars().count()),
        Some(1024)
    );
    // Message event ids are random per message: redact for the snapshot.
    insta::assert_json_snapshot!("altu_wire", wire, {
        "[1].body.event_id" => "[message event id]",
        "[].body.data.contact_info" => "[1024 characters]",
    });
}

#[tokio::test]
async fn altu_malformed_answer_and_server_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transbordo"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "no conversation_id"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/transbordo"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let integ = integration("altu", &server.uri());
    let c = client();
    let o1 = c
        .start_live_chat(&integ, &params(json!({})), &cx("x", json!({})))
        .await;
    assert_eq!(o1.result["error"]["kind"], "unavailable");
    assert_eq!(
        o1.result["error"]["body"],
        json!({"id": "no conversation_id"})
    );
    let o2 = c
        .start_live_chat(&integ, &params(json!({})), &cx("y", json!({})))
        .await;
    assert_eq!(o2.result["error"]["kind"], "unavailable");
    assert_eq!(o2.result["error"]["http_status"], 502);
    assert!(o2.result["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("2 retries"));
    // 1 malformed + 3 attempts (first + 2 retries) on the 502.
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(4));
    assert_no_secrets(&o1);
    assert_no_secrets(&o2);
}

#[tokio::test]
async fn secrets_echoed_by_a_provider_are_scrubbed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transbordo"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": format!("bad key {ALTU_KEY}")})),
        )
        .mount(&server)
        .await;
    let out = client()
        .start_live_chat(
            &integration("altu", &server.uri()),
            &params(json!({})),
            &cx("x", json!({})),
        )
        .await;
    assert_eq!(out.result["error"]["kind"], "rejected");
    assert_eq!(out.result["error"]["body"]["error"], "bad key [redacted]");
    assert_no_secrets(&out);
}
