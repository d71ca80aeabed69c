//! Repeated SIGKILLs of `transbordo serve` during 180 concurrent LivePerson handoffs, on
//! both stores: the service is killed and restarted every few hundred milliseconds
//! while runs are in flight (each run retried until it is answered). A handoff cut by a
//! kill between its provider call and its live chat left an intent in the store, which
//! the restarted service reconciles (adopts the conversation, or closes it and ends the
//! handoff with `error`). Afterwards: no handoff intent is left, every handoff the store
//! tracks ends exactly once (one `live_chat_ended` event id per handoff), the provider
//! holds no open conversation, and no event is left undelivered.

mod pg_support;
mod process_support;
mod service_common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process_support::{scaled, Balancer, Replica};
use serde_json::{json, Value};
use service_common::{Receiver, API_TOKEN, BUILDER_SECRET};
use transbordo::sandbox::{ConversationStatus, Provider, Sandbox, SandboxOptions, WebhookPatch};

const TOKEN_ENV: &str = "TRANSBORDO_CRASH_API_TOKEN";
const RUNS: usize = 180;

async fn call(http: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    // The replica may be dead or die mid-request: retry until something answers.
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        if let Ok(r) = http
            .post(url)
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
        {
            let s = r.status().as_u16();
            let v = r.json().await.unwrap_or(Value::Null);
            if s != 502 && s != 503 {
                return (s, v);
            }
        }
        assert!(Instant::now() < deadline, "{url}: no answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crash_during_runs(database: String, keep: Option<pg_support::TestDb>) {
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox");
    let sb = sandbox.control();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("integrations.toml"),
        process_support::integrations_toml(&sandbox.base_url(), 0, 0, 0),
    )
    .unwrap();
    let database = if database == "sqlite" {
        dir.path().join("crash.db").display().to_string()
    } else {
        database
    };
    let (rx_url, rx) = Receiver::default().start().await;
    let cfg =
        process_support::write_config(dir.path(), &database, &rx_url, BUILDER_SECRET, TOKEN_ENV);
    let mut replica = Replica::new(&cfg, dir.path(), TOKEN_ENV, API_TOKEN);
    replica.spawn().await;
    let (lb, _b) = Balancer::start(vec![replica.port]).await;
    let patch = WebhookPatch {
        url: Some(Some(format!("{lb}/webhooks/liveperson/7"))),
        ..WebhookPatch::default()
    };
    sb.set_webhook(Provider::Liveperson, &patch)
        .await
        .expect("webhook");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(12));
    for i in 0..RUNS {
        let (http, lb, sem) = (http.clone(), lb.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let body = json!({"flow": [{"name": "start_live_chat",
                "parameters": {"integration_id": 7, "start_message": "Cliente pediu atendimento"}}],
                "context": {"contact": {"name": "Ana"}}});
            let (s, v) = call(&http, &format!("{lb}/v1/conversations/crash-{i}/run"), body).await;
            drop(permit);
            assert!(
                s == 200 || (s == 409 && v["error"]["code"] == "live_chat_open"),
                "run crash-{i}: {s} {v}"
            );
        }));
    }
    // Kill and restart while the runs go on.
    let mut kills = 0;
    while !tasks.iter().all(|t| t.is_finished()) && kills < 30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        replica.kill();
        kills += 1;
        replica.spawn().await;
    }
    for t in tasks {
        t.await.expect("run task");
    }
    assert!(kills >= 3, "the runs finished before the kills: {kills}");
    // Handoffs cut by a kill are reconciled once their intent's lease (5 s) runs out.
    let metric = |m: &str, name: &str| -> Option<String> {
        m.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l[name.len()..].trim().to_string())
    };
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let m = http
            .get(format!("{lb}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        if metric(&m, "transbordo_handoff_intents_pending").as_deref() == Some("0") {
            break;
        }
        assert!(Instant::now() < deadline, "intents not reconciled: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Before the closes: what the provider opened, and how much of it is open.
    let opened = sb
        .conversations(Some(Provider::Liveperson), None)
        .await
        .expect("conversations");
    let open_before = opened
        .iter()
        .filter(|c| c.status != ConversationStatus::Closed)
        .count();
    // Every tracked live chat: the user closes it (or it already ended).
    let mut tracked = HashMap::new();
    let mut without = 0;
    for i in 0..RUNS {
        let conv = format!("crash-{i}");
        let r = http
            .get(format!("{lb}/v1/conversations/{conv}/live_chat"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        // 404: the run answered without a live chat (its handoff failed) and nothing
        // was left to reconcile.
        let Some(pc) = v["live_chat"]["provider_conversation_id"].as_str() else {
            assert_eq!(status, 404, "{conv}: {v}");
            without += 1;
            continue;
        };
        tracked.insert(conv.clone(), pc.to_string());
        let (s, v) = call(
            &http,
            &format!("{lb}/v1/conversations/{conv}/close"),
            json!({}),
        )
        .await;
        assert!(s == 200 || s == 409, "close {conv}: {s} {v}");
    }
    // Endings by handoff: a conversation may have had two (one reconciled with `error`,
    // then the builder's retry), each must end exactly once.
    let endings = |conv: &str| -> HashMap<String, HashSet<String>> {
        let mut by: HashMap<String, HashSet<String>> = HashMap::new();
        for e in rx.for_conv(conv) {
            if e["type"] == "live_chat_ended" {
                by.entry(e["handoff_id"].as_str().unwrap_or_default().to_string())
                    .or_default()
                    .insert(e["event_id"].to_string());
            }
        }
        by
    };
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    while !tracked.keys().all(|c| !endings(c).is_empty()) {
        assert!(Instant::now() < deadline, "live chats not ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut reconciled_errors = 0;
    for i in 0..RUNS {
        let conv = format!("crash-{i}");
        let by = endings(&conv);
        for (handoff, ids) in &by {
            assert_eq!(ids.len(), 1, "{conv} {handoff}: {:?}", rx.for_conv(&conv));
        }
        if tracked.contains_key(&conv) {
            assert!(!by.is_empty(), "{conv}: not ended");
        }
        reconciled_errors += by.len().saturating_sub(1);
    }
    let after = sb
        .conversations(Some(Provider::Liveperson), None)
        .await
        .expect("conversations");
    let still_open: Vec<_> = after
        .iter()
        .filter(|c| c.status != ConversationStatus::Closed)
        .collect();
    assert!(
        still_open.is_empty(),
        "{} provider conversations left open: {still_open:?}",
        still_open.len()
    );
    // What the reconciles did, from the replicas' logs (for the figures).
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            // `--log-format json` flattens the event's fields into the line.
            let fields = if v["fields"].is_object() {
                &v["fields"]
            } else {
                &v
            };
            if fields["message"] == "interrupted handoff reconciled" {
                let o = fields["outcome"].as_str().unwrap_or_default().to_string();
                *outcomes.entry(o).or_default() += 1;
            }
        }
    }
    eprintln!(
        "{kills} SIGKILLs during {RUNS} runs: {} conversations with a live chat, each \
         handoff ended once ({reconciled_errors} extra handoffs ended), {without} without \
         one; {} provider conversations opened, {open_before} open before the user \
         closes and 0 after; interrupted handoffs reconciled: {outcomes:?}",
        tracked.len(),
        after.len()
    );
    let (s, m) = {
        let r = http.get(format!("{lb}/metrics")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(s, 200);
    let pending = m
        .lines()
        .find(|l| l.starts_with("transbordo_outbox_pending "))
        .map(|l| {
            l.trim_start_matches("transbordo_outbox_pending ")
                .trim()
                .to_string()
        });
    assert_eq!(pending.as_deref(), Some("0"), "{m}");
    drop(replica);
    drop(keep);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_during_runs_on_sqlite() {
    crash_during_runs("sqlite".into(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_during_runs_on_postgres() {
    let Some(db) = pg_support::test_db().await else {
        return;
    };
    crash_during_runs(db.url.clone(), Some(db)).await;
}

/// The lookups the reconcile uses, against the sandbox fakes: LivePerson names a
/// consumer's open conversation when asked for a second one (and opens one when none is
/// open); an ALTU OPEN replayed with its `event_id` names the first platform conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_lookups_against_the_sandbox() {
    use transbordo::providers::liveperson::ConsumerConversation;
    use transbordo::providers::{HandoffCx, IntegrationId, Integrations, ProviderClient};
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox");
    let ints = Integrations::from_toml_str(
        &process_support::integrations_toml(&sandbox.base_url(), 0, 0, 0),
        "i.toml",
    )
    .expect("integrations");
    let client = ProviderClient::new(Default::default()).expect("client");
    let lp = ints.get(&IntegrationId::new("7".to_string())).expect("lp");
    let cx = |h: &str| HandoffCx {
        handoff_id: h.into(),
        conversation_id: "conv-r".into(),
        contact: json!({"name": "Ana"}),
    };
    let params = json!({"start_message": "oi"}).as_object().cloned().unwrap();
    let started = client.start_live_chat(lp, &params, &cx("h-lp")).await;
    let opened = started
        .handoff
        .expect("lp handoff")
        .provider_conversation_id;
    let found = client
        .liveperson_open_conversation(lp, "conv-r")
        .await
        .expect("lookup");
    assert_eq!(found, ConsumerConversation::Open(opened.clone()));
    // Another consumer has none open: the lookup opened one.
    let other = client
        .liveperson_open_conversation(lp, "conv-nobody")
        .await
        .expect("lookup");
    let ConsumerConversation::Opened(new) = other else {
        panic!("{other:?}")
    };
    assert_ne!(new, opened);

    let altu = ints
        .get(&IntegrationId::new("3".to_string()))
        .expect("altu");
    let started = client.start_live_chat(altu, &params, &cx("h-altu")).await;
    let platform = started
        .handoff
        .expect("altu handoff")
        .provider_conversation_id;
    let replayed = client
        .altu_replay_open(altu, "h-altu", "conv-r")
        .await
        .expect("replay");
    assert_eq!(replayed, platform);
    let open = sb_open(&sandbox).await;
    assert!(open.contains(&platform), "{open:?}");
    sandbox.shutdown().await;
}

async fn sb_open(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .control()
        .conversations(Some(Provider::Altu), None)
        .await
        .expect("conversations")
        .into_iter()
        .filter(|c| c.status != ConversationStatus::Closed)
        .map(|c| c.id)
        .collect()
}
