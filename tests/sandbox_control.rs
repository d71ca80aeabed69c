//! The control API: playing the agent, the outbox, the delivery switches, the CLI.

mod sandbox_support;

use std::process::ExitCode;

use clap::Parser;
use sandbox_support::*;
use serde_json::{json, Value};
use transbordo::cli::sandbox::{run_cli, SandboxArgs};
use transbordo::sandbox::{
    CloseReason, ControlError, ConversationStatus, DeliveryState, Fault, FaultRule, JoinRequest,
    Provider, WebhookPatch,
};

fn err_status(e: ControlError) -> u16 {
    match e {
        ControlError::Status { status, .. } => status,
        other => panic!("expected a status error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn join_say_close_and_errors() {
    let sb = sandbox().await;
    let ctl = sb.control();
    let lp = Lp::new(&sb);
    let (_, _, conv) = lp.start_conversation("u").await;

    assert_eq!(
        err_status(ctl.join("nope", &JoinRequest::default()).await.unwrap_err()),
        404
    );
    assert_eq!(
        err_status(ctl.say(&conv, "too early").await.unwrap_err()),
        409
    );

    let r = ctl.join(&conv, &JoinRequest::default()).await.unwrap();
    assert_eq!(r.conversation.status, ConversationStatus::WithAgent);
    let agent = r.conversation.agent.clone().unwrap();
    assert!(agent.id.starts_with("12345678."), "{}", agent.id);
    // No target configured: recorded only.
    assert_eq!(r.notifications[0].state, DeliveryState::Recorded);
    assert_eq!(r.notifications[0].attempts, 0);

    ctl.say(&conv, "hello").await.unwrap();
    let waiting = ctl
        .conversations(None, Some(ConversationStatus::WithAgent))
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].transcript.last().unwrap().text, "hello");
    assert_eq!(waiting[0].transcript.last().unwrap().role, "agent");
    ctl.close(&conv, CloseReason::User).await.unwrap();
    assert_eq!(
        err_status(ctl.close(&conv, CloseReason::Agent).await.unwrap_err()),
        409
    );
    assert!(ctl
        .conversations(Some(Provider::Zendesk), None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ctl.conversations(Some(Provider::Liveperson), Some(ConversationStatus::Closed))
            .await
            .unwrap()
            .len(),
        1
    );

    // Everything was recorded, including the creation UPSERT.
    let kinds: Vec<String> = ctl
        .notifications()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "lp.conversation_change",
            "lp.conversation_change",
            "lp.message",
            "lp.conversation_change"
        ]
    );

    // Raw control API errors.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/_sandbox/faults", sb.base_url()))
        .json(&json!({"provider":"zendesk","endpoint":"token","fault":{"status":500}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let _g = insta_settings().bind_to_scope();
    insta::assert_json_snapshot!("control_400_bad_fault", r.json::<Value>().await.unwrap());
    let r = http
        .post(format!("{}/_sandbox/conversations/x/say", sb.base_url()))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/nowhere", sb.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let info = ctl.info().await.unwrap();
    assert_eq!(
        info.altu_events_url,
        format!("{}/altu/events", sb.base_url())
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_webhooks_wait_in_the_outbox_and_are_redelivered() {
    let sb = sandbox().await;
    let ctl = sb.control();
    let rx = Receiver::start().await;
    rx.answer(500);
    let lp = Lp::new(&sb);
    let (_, _, conv) = lp.start_conversation("u").await;
    target(&sb, Provider::Liveperson, &rx.url).await;

    let r = ctl.join(&conv, &JoinRequest::default()).await.unwrap();
    let n = &r.notifications[0];
    assert_eq!(
        (n.state, n.attempts, n.last_status),
        (DeliveryState::Failed, 1, Some(500))
    );
    // LivePerson counts only 200/201 as delivered.
    rx.answer(204);
    ctl.say(&conv, "are you there?").await.unwrap();
    let outbox = ctl.outbox().await.unwrap();
    assert_eq!(outbox.len(), 2);

    rx.answer(200);
    let redone = ctl.redeliver_all().await.unwrap();
    assert_eq!(redone.len(), 2);
    assert!(redone
        .iter()
        .all(|n| n.state == DeliveryState::Delivered && n.attempts == 2));
    assert!(ctl.outbox().await.unwrap().is_empty());
    let hits = rx.hits();
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[0].body, hits[2].body, "the same bytes are redelivered");

    // An unreachable target: transport error recorded, then one redelivery by id.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    target(&sb, Provider::Liveperson, &dead_url).await;
    let r = ctl.close(&conv, CloseReason::Agent).await.unwrap();
    let n = &r.notifications[0];
    assert_eq!(n.state, DeliveryState::Failed);
    assert!(n.last_error.is_some());
    target(&sb, Provider::Liveperson, &rx.url).await;
    let again = ctl.redeliver(n.id).await.unwrap();
    assert_eq!(again.state, DeliveryState::Delivered);
    assert_eq!(
        rx.hits().last().unwrap().json()["body"]["changes"][0]["result"]["conversationDetails"]
            ["closeReason"],
        "AGENT"
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_and_out_of_order_switches() {
    let sb = sandbox().await;
    let ctl = sb.control();
    let rx = Receiver::start().await;
    let lp = Lp::new(&sb);
    let (_, _, conv) = lp.start_conversation("u").await;
    target(&sb, Provider::Liveperson, &rx.url).await;
    ctl.set_webhook(
        Provider::Liveperson,
        &WebhookPatch {
            duplicate: Some(true),
            ..WebhookPatch::default()
        },
    )
    .await
    .unwrap();
    ctl.join(&conv, &JoinRequest::default()).await.unwrap();
    let hits = rx.wait_for(2).await;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].body, hits[1].body);
    assert_eq!(
        hits[0].header("x-liveperson-signature"),
        hits[1].header("x-liveperson-signature")
    );

    ctl.set_webhook(
        Provider::Liveperson,
        &WebhookPatch {
            duplicate: Some(false),
            out_of_order: Some(true),
            ..WebhookPatch::default()
        },
    )
    .await
    .unwrap();
    ctl.close(&conv, CloseReason::Agent).await.unwrap();
    let hits = rx.wait_for(4).await;
    assert_eq!(hits.len(), 4);
    let ts = |h: &Hit| {
        h.json()["body"]["changes"][0]["result"]["conversationDetails"]["metaDataLastUpdateTs"]
            .as_u64()
            .unwrap()
    };
    let state =
        |h: &Hit| h.json()["body"]["changes"][0]["result"]["conversationDetails"]["state"].clone();
    // The CLOSE arrives, then the older OPEN/ASSIGNED one again.
    assert_eq!(state(&hits[2]), "CLOSE");
    assert_eq!(state(&hits[3]), "OPEN");
    assert!(ts(&hits[3]) <= ts(&hits[2]));
    assert_eq!(hits[3].body, hits[0].body);
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spread_shares_notifications_and_retries_on_the_next_target() {
    let sb = sandbox().await;
    let ctl = sb.control();
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let lp = Lp::new(&sb);
    let (_, _, conv) = lp.start_conversation("u").await;
    let set = ctl
        .set_webhook(
            Provider::Liveperson,
            &WebhookPatch {
                url: Some(Some(a.url.clone())),
                spread: Some(vec![b.url.clone()]),
                ..WebhookPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(set.spread, vec![b.url.clone()]);
    let joined = ctl.join(&conv, &JoinRequest::default()).await.unwrap();
    let closed = ctl.close(&conv, CloseReason::Agent).await.unwrap();
    let (j, c) = (&joined.notifications[0], &closed.notifications[0]);
    assert_eq!(j.state, DeliveryState::Delivered);
    assert_eq!(c.state, DeliveryState::Delivered);
    // Consecutive notifications land on different targets: one each.
    assert_ne!(j.target, c.target);
    assert_eq!(a.hits().len() + b.hits().len(), 2);
    assert_eq!((a.hits().len(), b.hits().len()), (1, 1));

    // A target that refuses: the retry of that notification goes to the other one.
    let refused = if c.target.as_deref() == Some(a.url.as_str()) {
        &a
    } else {
        &b
    };
    let other = if c.target.as_deref() == Some(a.url.as_str()) {
        &b
    } else {
        &a
    };
    refused.answer(500);
    let again = ctl.redeliver(c.id).await.unwrap();
    assert_eq!(again.state, DeliveryState::Delivered);
    assert_ne!(again.target, c.target);
    assert_eq!(other.hits().len(), 2);

    // `[]` removes the extra targets: everything goes to `url` again.
    let set = ctl
        .set_webhook(
            Provider::Liveperson,
            &WebhookPatch {
                spread: Some(vec![]),
                ..WebhookPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(set.spread.is_empty());
    assert_eq!(set.url.as_deref(), Some(a.url.as_str()));
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_are_listed_and_cleared() {
    let sb = sandbox().await;
    let ctl = sb.control();
    let rule = FaultRule {
        provider: Provider::Zendesk,
        endpoint: "tickets".into(),
        fault: Fault {
            status: Some(429),
            retry_after: Some(1),
            ..Fault::default()
        },
        times: 3,
    };
    assert_eq!(ctl.add_fault(&rule).await.unwrap(), vec![rule.clone()]);
    assert_eq!(ctl.faults().await.unwrap().len(), 1);
    ctl.clear_faults().await.unwrap();
    assert!(ctl.faults().await.unwrap().is_empty());
    sb.shutdown().await;
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SandboxArgs,
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_talks_to_the_control_api() {
    let sb = sandbox().await;
    let lp = Lp::new(&sb);
    let (_, _, conv) = lp.start_conversation("u").await;
    let url = sb.base_url();
    let run = |argv: Vec<&str>| {
        let cli = Cli::try_parse_from(std::iter::once("sandbox").chain(argv)).unwrap();
        run_cli(cli.args)
    };
    assert_eq!(
        run(vec!["conversations", "--url", &url]).await,
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(vec!["join", &conv, "--agent-name", "Ana", "--url", &url]).await,
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(vec![
            "say", &conv, "hello", "there", "--url", &url, "--json"
        ])
        .await,
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(vec!["close", &conv, "--by", "system", "--url", &url]).await,
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(vec!["join", "missing", "--url", &url]).await,
        ExitCode::FAILURE
    );
    assert_eq!(
        run(vec![
            "faults",
            "add",
            "--provider",
            "liveperson",
            "--endpoint",
            "send",
            "--status",
            "429",
            "--url",
            &url
        ])
        .await,
        ExitCode::SUCCESS
    );
    assert_eq!(
        run(vec![
            "webhook",
            "zendesk",
            "--duplicate",
            "true",
            "--url",
            &url
        ])
        .await,
        ExitCode::SUCCESS
    );
    let c = sb.control().conversation(&conv).await.unwrap();
    assert_eq!(c.agent.unwrap().name, "Ana");
    assert_eq!(c.transcript.last().unwrap().text, "hello there");
    assert_eq!(c.close_reason, Some(CloseReason::System));
    assert_eq!(sb.control().faults().await.unwrap()[0].endpoint, "send");
    assert!(sb.control().webhooks().await.unwrap().zendesk.duplicate);
    // `serve` parses its options.
    let cli = Cli::try_parse_from([
        "sandbox",
        "serve",
        "--port",
        "0",
        "--lp-webhook-url",
        "http://127.0.0.1:1/x",
    ])
    .unwrap();
    assert!(matches!(
        cli.args.command,
        transbordo::cli::sandbox::SandboxCommand::Serve(_)
    ));
    sb.shutdown().await;
}

/// `examples/sandbox-integrations.toml` matches the sandbox's defaults.
#[test]
fn example_integrations_match_the_defaults() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sandbox-integrations.toml"
    ))
    .unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let o = transbordo::sandbox::SandboxOptions::default();
    let base = format!("http://{}", o.bind);
    let all = v["integration"].as_array().unwrap();
    let by = |p: &str| {
        all.iter()
            .find(|i| i["provider"].as_str() == Some(p))
            .unwrap()
    };
    let lp = by("liveperson");
    assert_eq!(
        lp["account_id"].as_str(),
        Some(o.liveperson.account_id.as_str())
    );
    assert_eq!(
        lp["client_id"].as_str(),
        Some(o.liveperson.apps[0].client_id.as_str())
    );
    assert_eq!(
        lp["client_secret"].as_str(),
        Some(o.liveperson.apps[0].client_secret.as_str())
    );
    assert_eq!(lp["csds_url"].as_str(), Some(base.as_str()));
    let zd = by("zendesk");
    assert_eq!(zd["base_url"].as_str(), Some(base.as_str()));
    assert_eq!(zd["email"].as_str(), Some(o.zendesk.email.as_str()));
    assert_eq!(zd["api_token"].as_str(), Some(o.zendesk.api_token.as_str()));
    assert_eq!(
        zd["webhook_secret"].as_str(),
        Some(o.zendesk.webhook_secret.as_str())
    );
    let altu = by("altu_sdk");
    assert_eq!(
        altu["webhook_url"].as_str(),
        Some(format!("{base}/altu/events").as_str())
    );
    assert_eq!(
        altu["access_token"].as_str(),
        Some(o.altu.access_token.as_str())
    );
    assert_eq!(
        altu["access_key"].as_str(),
        Some(o.altu.access_key.as_str())
    );
}
