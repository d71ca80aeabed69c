//! The Zendesk Support API fake over real HTTP.

mod sandbox_support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sandbox_support::*;
use serde_json::{json, Value};
use transbordo::sandbox::signing::zendesk_signature;
use transbordo::sandbox::{
    CloseReason, ConversationStatus, Fault, FaultRule, JoinRequest, Provider, SignatureOrder,
    WebhookPatch,
};

struct Zd {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Zd {
    fn new(base: String) -> Zd {
        let auth = format!(
            "Basic {}",
            STANDARD.encode("bot@example.com/token:sandbox-token")
        );
        Zd {
            http: reqwest::Client::new(),
            base,
            auth,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        if let Some(b) = body {
            r = r.json(b);
        }
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.send().await.unwrap()
    }

    async fn create(&self, body: &Value, key: Option<&str>) -> reqwest::Response {
        self.call(
            reqwest::Method::POST,
            "/api/v2/tickets.json",
            Some(body),
            key,
        )
        .await
    }
}

fn ticket(text: &str) -> Value {
    json!({"ticket":{"subject":"Chat hand-off","comment":{"body":text,"public":false},
        "requester":{"name":"Jane Doe","email":"jane@example.com","locale_id":8},
        "tags":["chatbot_handoff"],"external_id":"handoff-1","custom_fields":[{"id":360012345,"value":"abc"}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn ticket_create_get_update() {
    let sb = sandbox().await;
    let zd = Zd::new(sb.base_url());
    let r = zd.create(&ticket("transcript"), None).await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().contains_key("x-rate-limit"));
    assert!(r.headers().contains_key("x-rate-limit-remaining"));
    assert!(!r.headers().contains_key("x-idempotency-lookup"));
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    let t = &v["ticket"];
    let id = t["id"].as_u64().unwrap();
    assert_eq!(
        location,
        format!("{}/api/v2/tickets/{id}.json", sb.base_url())
    );
    assert_eq!(t["url"], location.as_str());
    assert_eq!(t["status"], "new");
    assert_eq!(t["description"], "transcript");
    assert_eq!(t["tags"], json!(["chatbot_handoff"]));
    assert_eq!(t["custom_fields"], json!([{"id":360012345,"value":"abc"}]));
    assert_eq!(t["external_id"], "handoff-1");
    assert_ne!(t["requester_id"], t["submitter_id"]);
    let _g = insta_settings().bind_to_scope();
    insta::assert_json_snapshot!("zd_ticket_created", redact(&v));

    for path in [
        format!("/api/v2/tickets/{id}"),
        format!("/api/v2/tickets/{id}.json"),
    ] {
        let g = zd.call(reqwest::Method::GET, &path, None, None).await;
        assert_eq!(g.status(), 200);
        assert_eq!(g.json::<Value>().await.unwrap()["ticket"]["id"], id);
    }
    let missing = zd
        .call(
            reqwest::Method::GET,
            "/api/v2/tickets/999999.json",
            None,
            None,
        )
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"error":"RecordNotFound","description":"Not found"})
    );

    let up = json!({"ticket":{"status":"pending","comment":{"body":"user says hi","author_id":t["requester_id"]}}});
    let r = zd
        .call(
            reqwest::Method::PUT,
            &format!("/api/v2/tickets/{id}.json"),
            Some(&up),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["ticket"]["status"],
        "pending"
    );
    let c: Value = zd
        .call(
            reqwest::Method::GET,
            &format!("/api/v2/tickets/{id}/comments.json"),
            None,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["count"], 2);
    assert_eq!(c["comments"][1]["body"], "user says hi");
    let conv = sb.control().conversation(&id.to_string()).await.unwrap();
    let roles: Vec<&str> = conv.transcript.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(roles, ["bot", "consumer"]);

    // Solved via the API, then closed, then no more updates.
    zd.call(
        reqwest::Method::PUT,
        &format!("/api/v2/tickets/{id}"),
        Some(&json!({"ticket":{"status":"closed"}})),
        None,
    )
    .await;
    let r = zd
        .call(
            reqwest::Method::PUT,
            &format!("/api/v2/tickets/{id}"),
            Some(&json!({"ticket":{"status":"open"}})),
            None,
        )
        .await;
    assert_eq!(r.status(), 422);
    insta::assert_json_snapshot!("zd_422_closed_ticket", r.json::<Value>().await.unwrap());
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_replays_and_conflicts() {
    let sb = sandbox().await;
    let zd = Zd::new(sb.base_url());
    let body = ticket("transcript");
    let first = zd.create(&body, Some("run-42")).await;
    assert_eq!(first.status(), 201);
    assert_eq!(first.headers()["x-idempotency-lookup"], "miss");
    let loc1 = first.headers()["location"].clone();
    let v1: Value = first.json().await.unwrap();

    let again = zd.create(&body, Some("run-42")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["x-idempotency-lookup"], "hit");
    assert_eq!(again.headers()["location"], loc1);
    assert_eq!(again.json::<Value>().await.unwrap(), v1);
    let tickets = sb
        .control()
        .conversations(Some(Provider::Zendesk), None)
        .await
        .unwrap();
    assert_eq!(tickets.len(), 1, "exactly one ticket");

    let other = zd
        .create(&ticket("another transcript"), Some("run-42"))
        .await;
    assert_eq!(other.status(), 400);
    let _g = insta_settings().bind_to_scope();
    insta::assert_json_snapshot!(
        "zd_400_idempotency_conflict",
        other.json::<Value>().await.unwrap()
    );

    // Another key makes another ticket.
    assert_eq!(zd.create(&body, Some("run-43")).await.status(), 201);
    assert_eq!(
        sb.control()
            .conversations(Some(Provider::Zendesk), None)
            .await
            .unwrap()
            .len(),
        2
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blank_comment_is_422_and_bad_auth_401() {
    let sb = sandbox().await;
    let zd = Zd::new(sb.base_url());
    let _g = insta_settings().bind_to_scope();
    let r = zd.create(&ticket("   "), Some("k")).await;
    assert_eq!(r.status(), 422);
    insta::assert_json_snapshot!("zd_422_blank_comment", r.json::<Value>().await.unwrap());
    let r = zd
        .create(&json!({"ticket":{"subject":"no comment"}}), None)
        .await;
    assert_eq!(r.status(), 422);
    // The failed create did not burn the key.
    assert_eq!(
        zd.create(&ticket("ok"), Some("k")).await.headers()["x-idempotency-lookup"],
        "miss"
    );

    let url = format!("{}/api/v2/tickets.json", sb.base_url());
    let wrong = format!("Basic {}", STANDARD.encode("bot@example.com/token:nope"));
    for auth in [
        None,
        Some(wrong.as_str()),
        Some("Bearer nope"),
        Some("Token x"),
    ] {
        let mut req = zd.http.post(&url).json(&ticket("x"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(r.headers().contains_key("x-rate-limit"));
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"error":"Couldn't authenticate you"})
        );
    }
    let r = zd
        .http
        .post(&url)
        .header("authorization", "Bearer sandbox-oauth-token")
        .json(&ticket("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_create_or_update_and_put() {
    let sb = sandbox().await;
    let zd = Zd::new(sb.base_url());
    let body = json!({"user":{"name":"Jane","email":"jane@example.com","external_id":"c-1","user_fields":{"plan":"gold"}}});
    let r = zd
        .call(
            reqwest::Method::POST,
            "/api/v2/users/create_or_update.json",
            Some(&body),
            None,
        )
        .await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().contains_key("location"));
    let u: Value = r.json().await.unwrap();
    let id = u["user"]["id"].as_u64().unwrap();
    let _g = insta_settings().bind_to_scope();
    insta::assert_json_snapshot!("zd_user_created", redact(&u));

    let body2 = json!({"user":{"email":"JANE@example.com","user_fields":{"tier":"2"}}});
    let r = zd
        .call(
            reqwest::Method::POST,
            "/api/v2/users/create_or_update",
            Some(&body2),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let u2: Value = r.json().await.unwrap();
    assert_eq!(u2["user"]["id"], id);
    assert_eq!(u2["user"]["user_fields"], json!({"plan":"gold","tier":"2"}));

    let put = json!({"user":{"user_fields":{"plan":"silver"}}});
    let r = zd
        .call(
            reqwest::Method::PUT,
            &format!("/api/v2/users/{id}.json"),
            Some(&put),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["user"]["user_fields"]["plan"],
        "silver"
    );
    assert_eq!(
        zd.call(
            reqwest::Method::PUT,
            "/api/v2/users/1.json",
            Some(&put),
            None
        )
        .await
        .status(),
        404
    );
    let r = zd
        .call(
            reqwest::Method::POST,
            "/api/v2/users/create_or_update",
            Some(&json!({"user":{"email":"x@y.z"}})),
            None,
        )
        .await;
    assert_eq!(r.status(), 422);
    // The ticket can name the requester by id.
    let t = json!({"ticket":{"requester_id":id,"comment":{"body":"hi"}}});
    let r = zd.create(&t, None).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["ticket"]["requester_id"],
        id
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_429_503_delay_malformed() {
    let sb = sandbox().await;
    let zd = Zd::new(sb.base_url());
    let ctl = sb.control();
    let rule = |endpoint: &str, fault: Fault| FaultRule {
        provider: Provider::Zendesk,
        endpoint: endpoint.into(),
        fault,
        times: 1,
    };
    ctl.add_fault(&rule(
        "tickets",
        Fault {
            status: Some(429),
            retry_after: Some(7),
            ..Fault::default()
        },
    ))
    .await
    .unwrap();
    let r = zd.create(&ticket("x"), Some("k1")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.headers().contains_key("x-rate-limit-remaining"));
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        r.text().await.unwrap(),
        "Rate limit for ticket updates exceeded, please wait before updating this ticket again"
    );
    // Nothing was created, the key is still fresh.
    assert_eq!(
        zd.create(&ticket("x"), Some("k1")).await.headers()["x-idempotency-lookup"],
        "miss"
    );

    ctl.add_fault(&rule(
        "*",
        Fault {
            status: Some(503),
            retry_after: Some(2),
            ..Fault::default()
        },
    ))
    .await
    .unwrap();
    let r = zd
        .call(
            reqwest::Method::POST,
            "/api/v2/users/create_or_update",
            Some(&json!({"user":{"name":"a"}})),
            None,
        )
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    let _g = insta_settings().bind_to_scope();
    insta::assert_json_snapshot!("zd_503_fault", r.json::<Value>().await.unwrap());

    ctl.add_fault(&rule(
        "tickets",
        Fault {
            status: Some(500),
            body: Some("oops".into()),
            ..Fault::default()
        },
    ))
    .await
    .unwrap();
    let r = zd.create(&ticket("x"), None).await;
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (500, "oops".to_string())
    );

    ctl.add_fault(&rule(
        "tickets",
        Fault {
            delay_ms: Some(250),
            ..Fault::default()
        },
    ))
    .await
    .unwrap();
    let t0 = Instant::now();
    assert_eq!(zd.create(&ticket("slow"), None).await.status(), 201);
    assert!(t0.elapsed() >= Duration::from_millis(250));

    // Malformed: the ticket is created but the answer cannot be parsed; the idempotent
    // retry gets the full answer without a second ticket.
    let before = ctl
        .conversations(Some(Provider::Zendesk), None)
        .await
        .unwrap()
        .len();
    ctl.add_fault(&rule(
        "tickets",
        Fault {
            malformed: true,
            ..Fault::default()
        },
    ))
    .await
    .unwrap();
    let r = zd.create(&ticket("cut"), Some("k2")).await;
    assert_eq!(r.status(), 201);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
    let r = zd.create(&ticket("cut"), Some("k2")).await;
    assert_eq!(r.headers()["x-idempotency-lookup"], "hit");
    assert!(r.json::<Value>().await.is_ok());
    assert_eq!(
        ctl.conversations(Some(Provider::Zendesk), None)
            .await
            .unwrap()
            .len(),
        before + 1
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_actions_send_signed_webhooks() {
    let sb = sandbox().await;
    let rx = Receiver::start().await;
    target(&sb, Provider::Zendesk, &rx.url).await;
    let zd = Zd::new(sb.base_url());
    let ctl = sb.control();
    let v: Value = zd
        .create(&ticket("transcript"), None)
        .await
        .json()
        .await
        .unwrap();
    let id = v["ticket"]["id"].to_string();

    let r = ctl
        .join(
            &id,
            &JoinRequest {
                agent_id: None,
                agent_name: Some("Ana".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.conversation.status, ConversationStatus::WithAgent);
    assert_eq!(r.conversation.details["status"], "open");
    ctl.say(&id, "Hi, I am Ana").await.unwrap();
    let r = ctl.close(&id, CloseReason::Agent).await.unwrap();
    assert_eq!(r.conversation.details["status"], "solved");
    assert_eq!(r.conversation.status, ConversationStatus::Closed);

    let hits = rx.wait_for(3).await;
    for h in &hits {
        let ts = h.header("x-zendesk-webhook-signature-timestamp");
        assert!(ts.ends_with('Z'), "{ts}");
        let expected = zendesk_signature(
            "sandbox-webhook-secret",
            ts,
            &h.body,
            SignatureOrder::TimestampBody,
        );
        assert_eq!(h.header("x-zendesk-webhook-signature"), expected);
    }
    let bodies: Vec<Value> = hits.iter().map(Hit::json).collect();
    assert_eq!(bodies[0]["type"], "zen:event-type:ticket.status_changed");
    assert_eq!(
        bodies[0]["event"],
        json!({"previous":"NEW","current":"OPEN"})
    );
    assert_eq!(bodies[0]["detail"]["id"], id.as_str());
    assert_eq!(bodies[1]["type"], "zen:event-type:ticket.comment_added");
    assert_eq!(bodies[1]["event"]["comment"]["body"], "Hi, I am Ana");
    assert_eq!(
        bodies[2]["event"],
        json!({"previous":"OPEN","current":"SOLVED"})
    );
    let _g = insta_settings().bind_to_scope();
    for (name, b) in [
        "status_changed_open",
        "comment_added",
        "status_changed_solved",
    ]
    .iter()
    .zip(&bodies)
    {
        insta::assert_json_snapshot!(format!("zd_webhook_{name}"), redact(b));
    }

    // Reopen through the API (solved → open fires the webhook too), now signed body ‖ timestamp.
    ctl.set_webhook(
        Provider::Zendesk,
        &WebhookPatch {
            signature_order: Some(SignatureOrder::BodyTimestamp),
            ..WebhookPatch::default()
        },
    )
    .await
    .unwrap();
    let r = zd
        .call(
            reqwest::Method::PUT,
            &format!("/api/v2/tickets/{id}.json"),
            Some(&json!({"ticket":{"status":"open"}})),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let h = rx.wait_for(4).await.pop().unwrap();
    assert_eq!(
        h.json()["event"],
        json!({"previous":"SOLVED","current":"OPEN"})
    );
    let ts = h.header("x-zendesk-webhook-signature-timestamp");
    let sig = h.header("x-zendesk-webhook-signature");
    assert_eq!(
        sig,
        zendesk_signature(
            "sandbox-webhook-secret",
            ts,
            &h.body,
            SignatureOrder::BodyTimestamp
        )
    );
    // A receiver checking timestamp ‖ body refuses it: the order matters.
    assert_ne!(
        sig,
        zendesk_signature(
            "sandbox-webhook-secret",
            ts,
            &h.body,
            SignatureOrder::TimestampBody
        )
    );
    sb.shutdown().await;
}

#[test]
fn zendesk_signature_vector_both_orders() {
    let secret = "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=";
    let body = br#"{"say": "hello"}"#;
    let ts = "2021-07-25T10:00:00Z";
    assert_eq!(
        zendesk_signature(secret, ts, body, SignatureOrder::TimestampBody),
        "Rry/4TtIdFyawtXXp8QdI6tlAUUQ/5kL1OTp5qo/ZIk="
    );
    assert_eq!(
        zendesk_signature(secret, ts, body, SignatureOrder::BodyTimestamp),
        "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="
    );
}
