//! The ALTU agent platform fake (`POST /altu/events` and the agent events it sends),
//! against `docs/connector-protocol.md`.

mod sandbox_support;

use std::time::{SystemTime, UNIX_EPOCH};

use sandbox_support::*;
use serde_json::{json, Value};
use transbordo::sandbox::signing::{
    connector_claims, connector_token, sign_hs256, url_path, verify_connector,
};
use transbordo::sandbox::{
    CloseReason, ConversationStatus, Fault, FaultRule, JoinRequest, Provider,
};

const KEY: &[u8] = b"sandbox-access-key";
const ACCESS_TOKEN: &str = "sandbox-access-token";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn post(base: &str, jwt: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{base}/altu/events"))
        .json(body);
    if let Some(j) = jwt {
        r = r.header("authorization", format!("Bearer {j}"));
    }
    let resp = r.send().await.unwrap();
    let s = resp.status().as_u16();
    let t = resp.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

/// The claims transbordo sends (protocol §3), for the envelope's `conversation_id`. The
/// `aud` host is a proxy's: only the path is compared.
fn claims(body: &Value) -> Value {
    connector_claims(
        "transbordo",
        "https://proxy.example.com:8443/altu/events",
        ACCESS_TOKEN,
        body["conversation_id"].as_str().unwrap_or(""),
        now(),
        60,
    )
}

/// A valid token for `body`, with some claims replaced (`null` removes one).
fn token_with(body: &Value, patch: Value) -> String {
    let mut c = claims(body);
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    sign_hs256(KEY, &c)
}

async fn event(base: &str, body: &Value) -> (u16, Value) {
    post(base, Some(&sign_hs256(KEY, &claims(body))), body).await
}

fn open(ours: &str, event_id: &str) -> Value {
    json!({"event":"OPEN_CONVERSATION","event_id":event_id,"conversation_id":ours,
        "integration_id":"3",
        "data":{"skill_id":"sales","start_message":"Hi, a human please",
            "extra_info":"{\"order\":123}","contact_info":"[{\"label\":\"Plan\",\"value\":\"gold\"}]",
            "user":{"name":"Jane","email":"jane@example.com"},"bot_conversation_id":"conv-1"}})
}

fn later(event: &str, event_id: &str, ours: &str, pid: &str, data: Value) -> Value {
    json!({"event":event,"event_id":event_id,"conversation_id":ours,
        "platform_conversation_id":pid,"data":data})
}

#[tokio::test(flavor = "multi_thread")]
async fn open_message_close_and_duplicate_event_ids() {
    let sb = sandbox().await;
    let base = sb.base_url();
    let (s, v) = event(&base, &open("our-1", "e-1")).await;
    assert_eq!(s, 201);
    let pid = v["conversation_id"].as_str().unwrap().to_string();
    assert!(pid.starts_with("altu-"));
    // Same event_id (a retry: fresh token): same answer, no second conversation.
    assert_eq!(event(&base, &open("our-1", "e-1")).await, (201, v.clone()));
    assert_eq!(
        sb.control()
            .conversations(Some(Provider::Altu), None)
            .await
            .unwrap()
            .len(),
        1
    );
    // Same conversation, new event id: conflict.
    assert_eq!(event(&base, &open("our-1", "e-2")).await.0, 409);

    // What arrived is visible in `details`, JSON text parsed back.
    let c = sb.control().conversation(&pid).await.unwrap();
    assert_eq!(c.external_id.as_deref(), Some("our-1"));
    assert_eq!(c.skill_id.as_deref(), Some("sales"));
    assert_eq!(c.consumer_id.as_deref(), Some("jane@example.com"));
    assert_eq!(
        c.details["contact_info"],
        json!([{"label":"Plan","value":"gold"}])
    );
    assert_eq!(c.details["extra_info"], json!({"order": 123}));
    assert_eq!(
        c.details["user"],
        json!({"name":"Jane","email":"jane@example.com"})
    );
    assert_eq!(c.details["bot_conversation_id"], "conv-1");
    assert_eq!(c.details["integration_id"], "3");
    assert_eq!(c.details["data"], open("our-1", "e-1")["data"]);

    let m = later(
        "USER_MESSAGE",
        "e-3",
        "our-1",
        &pid,
        json!({"text": "still there?"}),
    );
    assert_eq!(event(&base, &m).await.0, 200);
    assert_eq!(event(&base, &m).await.0, 200);
    let c = sb.control().conversation(&pid).await.unwrap();
    let texts: Vec<(&str, &str)> = c
        .transcript
        .iter()
        .map(|t| (t.role.as_str(), t.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [("bot", "Hi, a human please"), ("consumer", "still there?")]
    );

    let close = later(
        "CLOSE_CONVERSATION",
        "e-4",
        "our-1",
        &pid,
        json!({"reason": "user_closed"}),
    );
    assert_eq!(event(&base, &close).await.0, 200);
    let c = sb.control().conversation(&pid).await.unwrap();
    assert_eq!(
        (c.status, c.close_reason),
        (ConversationStatus::Closed, Some(CloseReason::User))
    );
    assert_eq!(c.details["close_reason"], "user_closed");
    // Closing again (new event id) is not an error.
    let again = later(
        "CLOSE_CONVERSATION",
        "e-4b",
        "our-1",
        &pid,
        json!({"reason": "timeout"}),
    );
    assert_eq!(event(&base, &again).await.0, 200);
    let late = later("USER_MESSAGE", "e-5", "our-1", &pid, json!({"text": "x"}));
    assert_eq!(event(&base, &late).await.0, 409);
    let unknown = later("USER_MESSAGE", "e-6", "our-1", "nope", json!({"text": "x"}));
    assert_eq!(event(&base, &unknown).await.0, 404);
    // The platform id of a conversation opened with another `conversation_id`.
    let wrong = later("USER_MESSAGE", "e-7", "other", &pid, json!({"text": "x"}));
    assert_eq!(event(&base, &wrong).await.0, 404);
    // Malformed: 400.
    for bad in [
        json!({"event":"OPEN_CONVERSATION","conversation_id":"x"}),
        json!({"event":"DANCE","event_id":"b1","conversation_id":"x"}),
        later("USER_MESSAGE", "b2", "our-1", &pid, json!({})),
        json!({"event":"USER_MESSAGE","event_id":"b3","conversation_id":"our-1","data":{"text":"x"}}),
        json!({"event":"OPEN_CONVERSATION","event_id":"b4","conversation_id":"z","data":{"contact_info":[1]}}),
    ] {
        assert_eq!(event(&base, &bad).await.0, 400, "{bad}");
    }
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_with_a_system_reason_and_over_limit_fields() {
    let sb = sandbox().await;
    let base = sb.base_url();
    let o = json!({"event":"OPEN_CONVERSATION","event_id":"o","conversation_id":"our-2",
        "data":{"skill_id":42,"extra_info":"","start_message":""}});
    let (s, v) = event(&base, &o).await;
    assert_eq!(s, 201);
    let pid = v["conversation_id"].as_str().unwrap().to_string();
    let c = sb.control().conversation(&pid).await.unwrap();
    assert_eq!(c.skill_id.as_deref(), Some("42"));
    // Sent empty when over the size limit: kept as it arrived.
    assert_eq!(c.details["extra_info"], "");
    assert_eq!(c.details["contact_info"], Value::Null);
    assert!(c.transcript.is_empty());
    let close = later(
        "CLOSE_CONVERSATION",
        "c",
        "our-2",
        &pid,
        json!({"reason": "user_inactivity_timeout"}),
    );
    assert_eq!(event(&base, &close).await.0, 200);
    let c = sb.control().conversation(&pid).await.unwrap();
    assert_eq!(c.close_reason, Some(CloseReason::System));
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_401_invalid_token() {
    let sb = sandbox().await;
    let base = sb.base_url();
    let body = open("our-1", "e-1");
    let t = now();
    let none_alg = {
        use base64::Engine as _;
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.",
            b(br#"{"alg":"none","typ":"JWT"}"#),
            b(claims(&body).to_string().as_bytes())
        )
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("wrong_key", Some(sign_hs256(b"other", &claims(&body)))),
        ("alg_none", Some(none_alg)),
        (
            "expired",
            Some(token_with(&body, json!({"iat": t - 120, "exp": t - 60}))),
        ),
        (
            "future",
            Some(token_with(&body, json!({"iat": t + 40, "exp": t + 90}))),
        ),
        (
            "too_long_lived",
            Some(token_with(&body, json!({"exp": t + 3600}))),
        ),
        ("no_jti", Some(token_with(&body, json!({"jti": null})))),
        ("no_iat", Some(token_with(&body, json!({"iat": null})))),
        ("garbage", Some("not.a.jwt".into())),
        ("wrong_sub", Some(token_with(&body, json!({"sub": "nope"})))),
        ("no_sub", Some(token_with(&body, json!({"sub": null})))),
        ("wrong_iss", Some(token_with(&body, json!({"iss": "altu"})))),
        ("no_iss", Some(token_with(&body, json!({"iss": null})))),
        (
            "wrong_aud",
            Some(token_with(&body, json!({"aud": "https://proxy/elsewhere"}))),
        ),
        ("no_aud", Some(token_with(&body, json!({"aud": null})))),
        (
            "other_conversation",
            Some(token_with(&body, json!({"conversation_id": "our-9"}))),
        ),
        (
            "no_conversation",
            Some(token_with(&body, json!({"conversation_id": null}))),
        ),
        // The old draft's token: no iss/aud/sub/conversation_id.
        ("draft", Some(connector_token(KEY, t, 60))),
    ];
    let _g = insta_settings().bind_to_scope();
    for (name, jwt) in cases {
        let (s, v) = post(&base, jwt.as_deref(), &body).await;
        assert_eq!(s, 401, "{name}");
        assert_eq!(v, json!({"error":"invalid_token"}), "{name}");
    }
    insta::assert_json_snapshot!("altu_401", post(&base, None, &body).await.1);
    assert!(sb
        .control()
        .conversations(Some(Provider::Altu), None)
        .await
        .unwrap()
        .is_empty());
    // A replayed token (same jti) is refused, even for another event.
    let tok = sign_hs256(KEY, &claims(&body));
    assert_eq!(post(&base, Some(&tok), &body).await.0, 201);
    let other = open("our-1", "e-2");
    assert_eq!(post(&base, Some(&tok), &other).await.0, 401);
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_events_are_signed_jwts() {
    let sb = sandbox().await;
    let rx = Receiver::start().await;
    target(&sb, Provider::Altu, &rx.url).await;
    let ctl = sb.control();
    let mut pids = Vec::new();
    for ours in ["our-7", "our-8", "our-9"] {
        let (_, v) = event(&sb.base_url(), &open(ours, &format!("open-{ours}"))).await;
        pids.push(v["conversation_id"].as_str().unwrap().to_string());
    }
    let join = JoinRequest {
        agent_id: Some("a-1".into()),
        agent_name: Some("Ana".into()),
    };
    ctl.join(&pids[0], &join).await.unwrap();
    ctl.say(&pids[0], "Hello, I am the agent").await.unwrap();
    ctl.close(&pids[0], CloseReason::Agent).await.unwrap();
    ctl.close(&pids[1], CloseReason::User).await.unwrap();
    ctl.close(&pids[2], CloseReason::System).await.unwrap();
    let hits = rx.wait_for(5).await;
    let bodies: Vec<Value> = hits.iter().map(Hit::json).collect();
    let mut jtis = std::collections::HashSet::new();
    for (h, b) in hits.iter().zip(&bodies) {
        assert_eq!(h.header("x-access-token"), "", "no longer sent");
        let jwt = h.header("authorization").strip_prefix("Bearer ").unwrap();
        let c = verify_connector(KEY, jwt, now()).unwrap();
        assert!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap() <= 60);
        assert_eq!(c["iss"], "altu");
        assert_eq!(c["aud"], rx.url.as_str());
        assert_eq!(url_path(c["aud"].as_str().unwrap()), "/hook");
        assert_eq!(c["sub"], ACCESS_TOKEN);
        assert_eq!(c["conversation_id"], b["conversation_id"]);
        assert!(jtis.insert(c["jti"].as_str().unwrap().to_string()));
    }
    let events: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "AGENT_JOINED",
            "AGENT_MESSAGE",
            "AGENT_CLOSED",
            "USER_CLOSED",
            "AGENT_CLOSED"
        ]
    );
    let ids: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| {
            (
                b["conversation_id"].as_str().unwrap(),
                b["platform_conversation_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("our-7", pids[0].as_str()),
            ("our-7", pids[0].as_str()),
            ("our-7", pids[0].as_str()),
            ("our-8", pids[1].as_str()),
            ("our-9", pids[2].as_str())
        ]
    );
    assert_eq!(bodies[0]["data"]["agent"], json!({"id":"a-1","name":"Ana"}));
    assert_eq!(bodies[1]["data"]["text"], "Hello, I am the agent");
    assert_eq!(bodies[2]["data"]["reason"], "agent");
    assert_eq!(bodies[3]["data"], json!({}));
    assert_eq!(bodies[4]["data"]["reason"], "system");
    let _g = insta_settings().bind_to_scope();
    for (name, b) in [
        "agent_joined",
        "agent_message",
        "agent_closed",
        "user_closed",
        "system_closed",
    ]
    .iter()
    .zip(&bodies)
    {
        insta::assert_json_snapshot!(format!("altu_webhook_{name}"), redact(b));
    }
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_fault() {
    let sb = sandbox().await;
    sb.control()
        .add_fault(&FaultRule {
            provider: Provider::Altu,
            endpoint: "events".into(),
            fault: Fault {
                status: Some(503),
                retry_after: Some(1),
                ..Fault::default()
            },
            times: 1,
        })
        .await
        .unwrap();
    let (s, _) = event(&sb.base_url(), &open("a", "e")).await;
    assert_eq!(s, 503);
    assert_eq!(event(&sb.base_url(), &open("a", "e")).await.0, 201);
    sb.shutdown().await;
}
