//! The LivePerson Connector API fake over real HTTP.

mod sandbox_support;

use std::time::{Duration, Instant};

use sandbox_support::*;
use serde_json::{json, Value};
use transbordo::sandbox::signing::liveperson_signature;
use transbordo::sandbox::{
    CloseReason, ConversationStatus, DeliveryState, Fault, FaultRule, JoinRequest, Provider,
    TokenSettings,
};

#[tokio::test(flavor = "multi_thread")]
async fn full_flow_csds_token_consumer_conversation_send_close() {
    let sb = sandbox().await;
    let lp = Lp::new(&sb);
    let host = sb.addr().to_string();

    // CSDS, all services and one service.
    let v: Value = lp
        .http
        .get(format!(
            "{}/api/account/12345678/service/baseURI.json?version=1.0",
            lp.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for service in ["sentinel", "idp", "asyncMessagingEnt"] {
        let e = v["baseURIs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["service"] == service)
            .unwrap();
        assert_eq!(e["baseURI"], host.as_str());
        assert_eq!(e["account"], "12345678");
    }
    let one = lp
        .http
        .get(format!(
            "{}/api/account/12345678/service/idp/baseURI.json?version=1.0",
            lp.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(
        one.json::<Value>().await.unwrap(),
        json!({"service":"idp","account":"12345678","baseURI":host})
    );

    // Sentinel: form body; then all in the query as lp-demo does.
    let jwt = lp.token().await;
    assert_eq!(jwt.split('.').count(), 3, "JWT-looking token");
    let q = lp
        .http
        .post(format!(
            "{}/sentinel/api/account/12345678/app/token?v=1.0&grant_type=client_credentials&client_id=sandbox-client&client_secret=sandbox-secret",
            lp.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(q.status(), 200);
    let t: Value = q.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);

    // IdP: one stable token per ext_consumer_id.
    let jws = lp.consumer(&jwt, "user-1").await;
    assert_eq!(lp.consumer(&jwt, "user-1").await, jws);
    assert_ne!(lp.consumer(&jwt, "user-2").await, jws);

    // CONVERSATION.
    let (s, v) = lp.open(&jwt, &jws).await;
    assert_eq!(s, 200);
    assert_eq!(
        v[0],
        json!({"code":"OK","body":{"msg":"OK User Profile set successfully"},"reqId":"1,"})
    );
    assert_eq!(v[1]["code"], "OK");
    assert_eq!(v[1]["reqId"], "2,");
    let conv = v[1]["body"]["conversationId"].as_str().unwrap().to_string();

    // A second open conversation for the same consumer.
    let (s, v) = lp.open(&jwt, &jws).await;
    assert_eq!(s, 400);
    assert_ne!(v[1]["code"], "OK");
    assert_eq!(v[1]["body"]["conversationId"], conv.as_str());

    // SEND: sequence numbers; raw and Bearer tokens both accepted.
    let (s, v) = lp.send(&jwt, &jws, &text_message(&conv, "hello")).await;
    assert_eq!(
        (s, v),
        (200, json!({"reqId":"7","code":"OK","body":{"sequence":0}}))
    );
    let (s, v) = lp
        .send(
            &format!("Bearer {jwt}"),
            &format!("Bearer {jws}"),
            &text_message(&conv, "again"),
        )
        .await;
    assert_eq!((s, v["body"]["sequence"].clone()), (200, json!(1)));
    let typing = json!({"kind":"req","id":"8","type":"ms.PublishEvent",
        "body":{"dialogId":conv,"event":{"type":"ChatStateEvent","chatState":"COMPOSING"}}});
    assert_eq!(lp.send(&jwt, &jws, &typing).await.0, 200);
    let profile = json!({"kind":"req","id":"9","type":"userprofile.SetUserProfile","body":{"firstName":"Ana"}});
    assert_eq!(
        lp.send(&jwt, &jws, &profile).await,
        (
            200,
            json!({"reqId":"9","code":"OK","body":{"msg":"OK User Profile set successfully"}})
        )
    );

    let c = sb.control().conversation(&conv).await.unwrap();
    assert_eq!(c.status, ConversationStatus::Waiting);
    let texts: Vec<&str> = c.transcript.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["hello", "again"]);

    // Close from the consumer side (object form).
    let (s, v) = lp.send(&jwt, &jws, &close_request(&conv)).await;
    assert_eq!(s, 200);
    assert_eq!(v["code"], "OK");
    assert_eq!(v["reqId"], 1);
    let c = sb.control().conversation(&conv).await.unwrap();
    assert_eq!(c.status, ConversationStatus::Closed);
    assert_eq!(c.close_reason, Some(CloseReason::User));
    // Sending to a closed conversation is refused.
    assert_eq!(
        lp.send(&jwt, &jws, &text_message(&conv, "late")).await.0,
        400
    );

    // A new conversation is allowed once the first is closed; close it with the array form.
    let (s, v) = lp.open(&jwt, &jws).await;
    assert_eq!(s, 200);
    let conv2 = v[1]["body"]["conversationId"].as_str().unwrap().to_string();
    let close_arr = json!({"kind":"req","id":"3","type":"cm.UpdateConversationField",
        "body":{"conversationId":conv2,"conversationField":[{"field":"ConversationStateField","conversationState":"CLOSE"}]}});
    assert_eq!(lp.send(&jwt, &jws, &close_arr).await.0, 200);
    assert_eq!(
        sb.control().conversation(&conv2).await.unwrap().status,
        ConversationStatus::Closed
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failures_use_documented_error_codes() {
    let sb = sandbox().await;
    let lp = Lp::new(&sb);
    let (jwt, jws, conv) = lp.start_conversation("u1").await;
    let path = "/messaging/consumer/conversation?v=3";
    let body = lp.open_body();
    let cases = [
        ("no_app_jwt", None, Some(jws.as_str()), 40105),
        ("bad_app_jwt", Some("garbage"), Some(jws.as_str()), 40102),
        ("no_consumer_jws", Some(jwt.as_str()), None, 40104),
        (
            "bad_consumer_jws",
            Some(jwt.as_str()),
            Some("garbage"),
            40103,
        ),
    ];
    let _g = insta_settings().bind_to_scope();
    for (name, a, c, code) in cases {
        let (s, v) = lp.post(path, a, c, &body).await;
        assert_eq!(s, 401, "{name}");
        assert_eq!(v["body"]["errorCode"], code, "{name}");
        assert_eq!(v["type"], ".ReqBody$ErrorResp");
        insta::assert_json_snapshot!(format!("lp_401_{name}"), v);
    }
    // Consumer B touching consumer A's conversation: valid AppJWT, wrong consumer → 40103.
    let other = lp.consumer(&jwt, "u2").await;
    let (s, v) = lp.send(&jwt, &other, &text_message(&conv, "x")).await;
    assert_eq!((s, v["body"]["errorCode"].clone()), (401, json!(40103)));
    // IdP also wants the AppJWT.
    let (s, v) = lp
        .post(
            "/consumer?v=1.0",
            None,
            None,
            &json!({"ext_consumer_id":"x"}),
        )
        .await;
    assert_eq!((s, v["body"]["errorCode"].clone()), (401, json!(40105)));
    // Sentinel: bad secret.
    let r = lp
        .http
        .post(format!(
            "{}/sentinel/api/account/12345678/app/token?v=1.0&grant_type=client_credentials",
            lp.base
        ))
        .body("client_id=sandbox-client&client_secret=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    insta::assert_json_snapshot!("lp_sentinel_401", r.json::<Value>().await.unwrap());
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_are_400_with_lp_envelope() {
    let sb = sandbox().await;
    let lp = Lp::new(&sb);
    let jwt = lp.token().await;
    let jws = lp.consumer(&jwt, "u").await;
    let p = "/messaging/consumer/conversation?v=3";
    let not_array = json!({"kind":"req"});
    let reversed = json!([lp.open_body()[1].clone(), lp.open_body()[0].clone()]);
    let mut no_brand = lp.open_body();
    no_brand[1]["body"]
        .as_object_mut()
        .unwrap()
        .remove("brandId");
    for b in [not_array, reversed, no_brand] {
        let (s, v) = lp.post(p, Some(&jwt), Some(&jws), &b).await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(v["body"]["errorCode"], 40001);
    }
    let (s, v) = lp
        .post(p, Some(&jwt), Some(&jws), &json!("{not json"))
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, _, conv) = lp.start_conversation("v").await;
    let batch = json!([text_message(&conv, "a"), text_message(&conv, "b")]);
    let (s, v) = lp.send(&jwt, &jws, &batch).await;
    assert_eq!(s, 400);
    let _g = insta_settings().bind_to_scope();
    insta::assert_json_snapshot!("lp_400_send_batch", v);
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn app_jwt_expiry() {
    let sb = sandbox().await;
    let lp = Lp::new(&sb);
    let ctl = sb.control();
    let (jwt, jws, conv) = lp.start_conversation("u").await;

    // Tokens issued with a zero lifetime are expired at once: 40102.
    ctl.liveperson_tokens(&TokenSettings {
        ttl_s: Some(0),
        expire_now: false,
    })
    .await
    .unwrap();
    let short = lp.token().await;
    let (s, v) = lp.send(&short, &jws, &text_message(&conv, "x")).await;
    assert_eq!((s, v["body"]["errorCode"].clone()), (401, json!(40102)));
    assert_eq!(v["body"]["details"], "AppJWT is expired");
    // The old token still works until expired by the switch.
    assert_eq!(lp.send(&jwt, &jws, &text_message(&conv, "x")).await.0, 200);
    let r = ctl
        .liveperson_tokens(&TokenSettings {
            ttl_s: Some(3600),
            expire_now: true,
        })
        .await
        .unwrap();
    assert_eq!(r["expired"], 1);
    assert_eq!(lp.send(&jwt, &jws, &text_message(&conv, "x")).await.0, 401);
    // A fresh token works; the expire_tokens fault expires it before the next request.
    let fresh = lp.token().await;
    assert_eq!(
        lp.send(&fresh, &jws, &text_message(&conv, "y")).await.0,
        200
    );
    ctl.add_fault(&FaultRule {
        provider: Provider::Liveperson,
        endpoint: "send".into(),
        fault: Fault {
            expire_tokens: true,
            ..Fault::default()
        },
        times: 1,
    })
    .await
    .unwrap();
    let (s, v) = lp.send(&fresh, &jws, &text_message(&conv, "z")).await;
    assert_eq!((s, v["body"]["errorCode"].clone()), (401, json!(40102)));
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_429_500_delay_malformed() {
    let sb = sandbox().await;
    let lp = Lp::new(&sb);
    let ctl = sb.control();
    let (jwt, jws, _) = lp.start_conversation("u").await;
    let fault = |endpoint: &str, fault: Fault, times| FaultRule {
        provider: Provider::Liveperson,
        endpoint: endpoint.into(),
        fault,
        times,
    };

    ctl.add_fault(&fault(
        "conversation",
        Fault {
            status: Some(429),
            retry_after: Some(1),
            ..Fault::default()
        },
        2,
    ))
    .await
    .unwrap();
    for _ in 0..2 {
        let r = lp
            .http
            .post(format!(
                "{}/api/account/12345678/messaging/consumer/conversation?v=3",
                lp.base
            ))
            .header("authorization", &jwt)
            .header("x-lp-on-behalf", &jws)
            .json(&lp.open_body())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(
            r.text().await.unwrap(),
            "Too many requests, please try again later"
        );
    }
    // The rule is used up: back to normal (400: the consumer already has a conversation).
    assert_eq!(lp.open(&jwt, &jws).await.0, 400);
    assert!(ctl.faults().await.unwrap().is_empty());

    ctl.add_fault(&fault(
        "token",
        Fault {
            status: Some(500),
            ..Fault::default()
        },
        1,
    ))
    .await
    .unwrap();
    let r = lp
        .http
        .post(format!(
            "{}/sentinel/api/account/12345678/app/token?v=1.0&grant_type=client_credentials",
            lp.base
        ))
        .body("client_id=sandbox-client&client_secret=sandbox-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let _g = insta_settings().bind_to_scope();
    insta::assert_json_snapshot!("lp_500_fault", r.json::<Value>().await.unwrap());

    ctl.add_fault(&fault(
        "csds",
        Fault {
            delay_ms: Some(300),
            ..Fault::default()
        },
        1,
    ))
    .await
    .unwrap();
    let url = format!(
        "{}/api/account/12345678/service/baseURI.json?version=1.0",
        lp.base
    );
    let t0 = Instant::now();
    let r = lp.http.get(&url).send().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status(), 200);

    ctl.add_fault(&fault(
        "*",
        Fault {
            malformed: true,
            ..Fault::default()
        },
        1,
    ))
    .await
    .unwrap();
    let r = lp.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert!(text.starts_with("{\"baseURIs\""));
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_webhooks_are_signed_with_the_client_secret() {
    let sb = sandbox().await;
    let rx = Receiver::start().await;
    target(&sb, Provider::Liveperson, &rx.url).await;
    let lp = Lp::new(&sb);
    let ctl = sb.control();
    let (jwt, jws, conv) = lp.start_conversation("u").await;
    rx.wait_for(1).await; // UPSERT OPEN on creation (sent in the background)
    lp.send(&jwt, &jws, &text_message(&conv, "I need a human"))
        .await;
    rx.wait_for(2).await; // consumer echo

    let r = ctl
        .join(
            &conv,
            &JoinRequest {
                agent_id: Some("12345678.42".into()),
                agent_name: Some("Ana".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.conversation.status, ConversationStatus::WithAgent);
    assert_eq!(r.notifications.len(), 1);
    assert_eq!(r.notifications[0].state, DeliveryState::Delivered);
    ctl.say(&conv, "Hello from the Agent").await.unwrap();
    let r = ctl.close(&conv, CloseReason::Agent).await.unwrap();
    assert_eq!(r.conversation.close_reason, Some(CloseReason::Agent));

    let hits = rx.wait_for(5).await;
    assert_eq!(hits.len(), 5);
    for h in &hits {
        assert_eq!(
            h.header("x-liveperson-signature"),
            liveperson_signature("sandbox-secret", &h.body)
        );
        assert_eq!(h.header("x-liveperson-account-id"), "12345678");
        assert_eq!(h.header("x-liveperson-client-id"), "sandbox-client");
    }
    let bodies: Vec<Value> = hits.iter().map(Hit::json).collect();
    assert_eq!(
        bodies[1]["body"]["changes"][0]["originatorMetadata"]["role"],
        "CONSUMER"
    );
    let join = &bodies[2]["body"]["changes"][0]["result"]["conversationDetails"];
    assert!(join["participants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["role"] == "ASSIGNED_AGENT" && p["id"] == "12345678.42"));
    assert_eq!(
        bodies[3]["body"]["changes"][0]["originatorMetadata"]["role"],
        "ASSIGNED_AGENT"
    );
    assert_eq!(
        bodies[3]["body"]["changes"][0]["event"]["message"],
        "Hello from the Agent"
    );
    assert_eq!(
        bodies[4]["body"]["changes"][0]["result"]["conversationDetails"]["closeReason"],
        "AGENT"
    );

    let _g = insta_settings().bind_to_scope();
    let names = [
        "open",
        "consumer_echo",
        "agent_joined",
        "agent_message",
        "closed_by_agent",
    ];
    for (name, b) in names.iter().zip(&bodies) {
        insta::assert_json_snapshot!(format!("lp_webhook_{name}"), redact(b));
    }
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_reasons_consumer_and_system() {
    let sb = sandbox().await;
    let rx = Receiver::start().await;
    target(&sb, Provider::Liveperson, &rx.url).await;
    let lp = Lp::new(&sb);
    let (jwt, jws, conv) = lp.start_conversation("a").await;
    lp.send(&jwt, &jws, &close_request(&conv)).await;
    // Webhooks caused by API calls are sent in the background and may arrive in any
    // order: find the close by content, not by position.
    let hits = rx.wait_for(2).await;
    let close = hits
        .iter()
        .map(Hit::json)
        .find(|b| b["body"]["changes"][0]["result"]["conversationDetails"]["state"] == "CLOSE")
        .expect("a CLOSE notification among the first two");
    let d = &close["body"]["changes"][0]["result"]["conversationDetails"];
    assert_eq!(d["closeReason"], "CONSUMER");
    assert_eq!(d["state"], "CLOSE");
    assert_eq!(d["dialogs"][0]["closedBy"], "CONSUMER");

    let (_, _, conv2) = lp.start_conversation("b").await;
    sb.control()
        .close(&conv2, CloseReason::System)
        .await
        .unwrap();
    let hits = rx.wait_for(4).await;
    let last = hits.iter().map(Hit::json).find(|b| {
        b["body"]["changes"][0]["result"]["convId"] == conv2.as_str()
            && b["body"]["changes"][0]["result"]["conversationDetails"]["state"] == "CLOSE"
    });
    assert_eq!(
        last.unwrap()["body"]["changes"][0]["result"]["conversationDetails"]["closeReason"],
        "SYSTEM"
    );
    sb.shutdown().await;
}

/// lp-demo's two real notification bodies (`test/notifications.test.js`), as chai sends them
/// (compact JSON), with their recorded signatures.
#[test]
fn liveperson_signature_vectors() {
    let secret = "rl9hacst6kqilbofup64n11ga3";
    let chat_state = r#"{"kind":"notification","body":{"changes":[{"originatorId":"2969e404f3be1c8cdda63f0b72d205ab5afb3fe3e3d7d72ab58245f564fdfd91","originatorMetadata":{"id":"2969e404f3be1c8cdda63f0b72d205ab5afb3fe3e3d7d72ab58245f564fdfd91","role":"CONSUMER"},"event":{"type":"ChatStateEvent","chatState":"PAUSE"},"conversationId":"b8b83fe9-75f0-46f2-baaa-2930f7192cfb","dialogId":"b8b83fe9-75f0-46f2-baaa-2930f7192cfb"}]},"type":"ms.MessagingEventNotification"}"#;
    let close = r#"{"kind":"notification","body":{"changes":[{"type":"UPSERT","result":{"convId":"b8b83fe9-75f0-46f2-baaa-2930f7192cfb","effectiveTTR":-1,"conversationDetails":{"skillId":"-1","participants":[{"id":"52e05c00-d5e4-5823-acf7-62570b939a63","role":"CONTROLLER"},{"id":"2969e404f3be1c8cdda63f0b72d205ab5afb3fe3e3d7d72ab58245f564fdfd91","role":"CONSUMER"}],"dialogs":[{"dialogId":"b8b83fe9-75f0-46f2-baaa-2930f7192cfb","participantsDetails":[{"id":"2969e404f3be1c8cdda63f0b72d205ab5afb3fe3e3d7d72ab58245f564fdfd91","role":"CONSUMER"},{"id":"52e05c00-d5e4-5823-acf7-62570b939a63","role":"CONTROLLER"}],"dialogType":"MAIN","channelType":"MESSAGING","state":"CLOSE","creationTs":1545398580042,"endTs":1545399379370,"metaDataLastUpdateTs":1545399379370,"closedBy":"CONSUMER"}],"brandId":"42257269","state":"CLOSE","stage":"CLOSE","closeReason":"CONSUMER","startTs":1545398580042,"endTs":1545399379370,"metaDataLastUpdateTs":1545399379370,"ttr":{"ttrType":"PRIORITIZED","value":600}}}}]},"type":"cqm.ExConversationChangeNotification"}"#;
    assert_eq!(
        liveperson_signature(secret, chat_state.as_bytes()),
        "sha1=e/TfS0wv1HbvEsMqcBMmFLcMslI="
    );
    assert_eq!(
        liveperson_signature(secret, close.as_bytes()),
        "sha1=CKiT6u4nb4Mpi0tdbCbgBXKAF1E="
    );
    // Re-serializing the parsed body (key order kept) gives the same bytes here, but the
    // signature must be checked on the raw bytes: one changed byte breaks it.
    let tampered = close.replace("\"CONSUMER\"}]", "\"CONSUMER\" }]");
    assert_ne!(
        liveperson_signature(secret, tampered.as_bytes()),
        "sha1=CKiT6u4nb4Mpi0tdbCbgBXKAF1E="
    );
}
