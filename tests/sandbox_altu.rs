//! The ALTU agent platform fake (`POST /altu/events` and the agent events it sends).

mod sandbox_support;

use std::time::{SystemTime, UNIX_EPOCH};

use sandbox_support::*;
use serde_json::{json, Value};
use transbordo::sandbox::signing::{connector_token, sign_hs256, verify_short_lived};
use transbordo::sandbox::{
    CloseReason, ConversationStatus, Fault, FaultRule, JoinRequest, Provider,
};

const KEY: &[u8] = b"sandbox-access-key";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn post(base: &str, jwt: Option<&str>, access: &str, body: &Value) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{base}/altu/events"))
        .header("x-access-token", access)
        .json(body);
    if let Some(j) = jwt {
        r = r.header("authorization", format!("Bearer {j}"));
    }
    let resp = r.send().await.unwrap();
    let s = resp.status().as_u16();
    let t = resp.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

async fn event(base: &str, body: &Value) -> (u16, Value) {
    post(
        base,
        Some(&connector_token(KEY, now(), 60)),
        "sandbox-access-token",
        body,
    )
    .await
}

fn open(ours: &str, event_id: &str) -> Value {
    json!({"event":"OPEN_CONVERSATION","event_id":event_id,"conversation_id":ours,
        "contact":{"id":"c-9","name":"Jane"},"skill_id":"sales","start_message":"Hi, a human please",
        "extra_info":{"order":123},"contact_info":[{"label":"Plan","value":"gold"}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn open_message_close_and_duplicate_event_ids() {
    let sb = sandbox().await;
    let base = sb.base_url();
    let (s, v) = event(&base, &open("our-1", "e-1")).await;
    assert_eq!(s, 201);
    let pid = v["conversation_id"].as_str().unwrap().to_string();
    assert!(pid.starts_with("altu-"));
    // Same event_id: same answer, no second conversation.
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

    let m = json!({"event":"USER_MESSAGE","event_id":"e-3","conversation_id":"our-1","text":"still there?"});
    assert_eq!(event(&base, &m).await.0, 200);
    assert_eq!(event(&base, &m).await.0, 200);
    let c = sb.control().conversation(&pid).await.unwrap();
    assert_eq!(c.external_id.as_deref(), Some("our-1"));
    assert_eq!(c.skill_id.as_deref(), Some("sales"));
    assert_eq!(
        c.details["contact_info"],
        json!([{"label":"Plan","value":"gold"}])
    );
    let texts: Vec<(&str, &str)> = c
        .transcript
        .iter()
        .map(|t| (t.role.as_str(), t.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [("bot", "Hi, a human please"), ("consumer", "still there?")]
    );

    let close = json!({"event":"CLOSE_CONVERSATION","event_id":"e-4","conversation_id":"our-1"});
    assert_eq!(event(&base, &close).await.0, 200);
    let c = sb.control().conversation(&pid).await.unwrap();
    assert_eq!(
        (c.status, c.close_reason),
        (ConversationStatus::Closed, Some(CloseReason::User))
    );
    let late =
        json!({"event":"USER_MESSAGE","event_id":"e-5","conversation_id":"our-1","text":"x"});
    assert_eq!(event(&base, &late).await.0, 409);
    let unknown =
        json!({"event":"USER_MESSAGE","event_id":"e-6","conversation_id":"nope","text":"x"});
    assert_eq!(event(&base, &unknown).await.0, 404);
    let bad = json!({"event":"OPEN_CONVERSATION","conversation_id":"x"});
    assert_eq!(event(&base, &bad).await.0, 400);
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_401_invalid_token() {
    let sb = sandbox().await;
    let base = sb.base_url();
    let body = open("our-1", "e-1");
    let t = now();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "sandbox-access-token"),
        (
            "wrong_key",
            Some(connector_token(b"other", t, 60)),
            "sandbox-access-token",
        ),
        (
            "expired",
            Some(sign_hs256(
                KEY,
                &json!({"iat": t - 120, "exp": t - 60, "jti": "a"}),
            )),
            "sandbox-access-token",
        ),
        (
            "too_long_lived",
            Some(sign_hs256(
                KEY,
                &json!({"iat": t, "exp": t + 3600, "jti": "b"}),
            )),
            "sandbox-access-token",
        ),
        (
            "no_jti",
            Some(sign_hs256(KEY, &json!({"iat": t, "exp": t + 30}))),
            "sandbox-access-token",
        ),
        ("garbage", Some("not.a.jwt".into()), "sandbox-access-token"),
        (
            "wrong_access_token",
            Some(connector_token(KEY, t, 60)),
            "nope",
        ),
    ];
    let _g = insta_settings().bind_to_scope();
    for (name, jwt, access) in cases {
        let (s, v) = post(&base, jwt.as_deref(), access, &body).await;
        assert_eq!(s, 401, "{name}");
        assert_eq!(v, json!({"error":"invalid_token"}), "{name}");
    }
    insta::assert_json_snapshot!("altu_401", post(&base, None, "x", &body).await.1);
    assert!(sb
        .control()
        .conversations(Some(Provider::Altu), None)
        .await
        .unwrap()
        .is_empty());
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_events_are_signed_jwts() {
    let sb = sandbox().await;
    let rx = Receiver::start().await;
    target(&sb, Provider::Altu, &rx.url).await;
    let (_, v) = event(&sb.base_url(), &open("our-7", "e-1")).await;
    let pid = v["conversation_id"].as_str().unwrap().to_string();
    let ctl = sb.control();
    ctl.join(&pid, &JoinRequest::default()).await.unwrap();
    ctl.say(&pid, "Hello, I am the agent").await.unwrap();
    ctl.close(&pid, CloseReason::Agent).await.unwrap();
    let hits = rx.wait_for(3).await;
    for h in &hits {
        assert_eq!(h.header("x-access-token"), "sandbox-access-token");
        let jwt = h.header("authorization").strip_prefix("Bearer ").unwrap();
        let claims = verify_short_lived(KEY, jwt, now(), 60).unwrap();
        assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 60);
    }
    let bodies: Vec<Value> = hits.iter().map(Hit::json).collect();
    let events: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["AGENT_JOINED", "AGENT_MESSAGE", "AGENT_CLOSED"]);
    assert!(bodies
        .iter()
        .all(|b| b["conversation_id"] == "our-7" && b["platform_conversation_id"] == pid.as_str()));
    let _g = insta_settings().bind_to_scope();
    for (name, b) in ["agent_joined", "agent_message", "agent_closed"]
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
