//! Load generator for `transbordo serve` (not a test; `scripts/load-service.sh` runs it
//! for the README's table). Starts the provider sandbox and a builder receiver in this
//! process and REPLICAS `transbordo serve` processes (the release binary) on one
//! database, then:
//!
//! 1. N LivePerson handoffs (`POST /run`, C at a time, spread over the replicas):
//!    handoffs/s and the p50/p99 latency of `/run`; the replicas' RSS growth per open
//!    live chat;
//! 2. message relay: N user messages (`POST /messages`, relayed to the sandbox's
//!    LivePerson): user messages/s and the p99 of `/messages`; then N agent messages as
//!    signed LivePerson webhooks (one per live chat, spread over the replicas): agent
//!    messages/s until every `agent_message` event reached the builder, and the p99 from
//!    sending the webhook to the builder receiving its event;
//! 3. N user closes (`POST /close`): closes/s, p50/p99, and endings/s until every
//!    `live_chat_ended` reached the builder.
//!
//! ```text
//! cargo run --release --example load_service -- DATABASE REPLICAS N C
//! ```
//! DATABASE is `sqlite` (a temporary file) or a PostgreSQL server URL, on which a fresh
//! database is created for the run and dropped after it. `TRANSBORDO_BIN` names the
//! `transbordo` binary to run (default: this checkout's release build), for paired runs
//! of two builds.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transbordo::sandbox::{Provider, Sandbox, SandboxOptions, WebhookPatch};

const TOKEN: &str = "load-test-api-token-0123456789";
const SECRET: &str = "load-test-builder-secret";
/// The sandbox's LivePerson client secret: signs its (and our) LivePerson webhooks.
const LP_SECRET: &str = "sandbox-secret";

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// The microsecond timestamp an agent message carries (`lm:<us>;`), if the body has one.
fn sent_us(body: &[u8]) -> Option<u128> {
    let at = body.windows(3).position(|w| w == b"lm:")? + 3;
    let digits: Vec<u8> = body[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `VmRSS` (now) or `VmHWM` (peak) of a process, in KB.
fn rss_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system, every thread) process `pid` has used, in seconds; 0 when
/// it cannot be read. `/proc/PID/stat` counts it in USER_HZ ticks, 100 a second on
/// Linux.
fn cpu_s(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After `(comm)`: state is field 3, utime and stime are fields 14 and 15.
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

/// CPU seconds so far of each PostgreSQL backend connected to database `name`, by pid
/// (empty when the server is not on this machine: its processes are not in `/proc`).
async fn backends_cpu(admin_url: &str, name: &str) -> HashMap<u32, f64> {
    use sqlx::Connection;
    let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await else {
        return HashMap::new();
    };
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_all(&mut admin)
        .await
        .unwrap_or_default();
    pids.into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|p| (p, cpu_s(p)))
        .collect()
}

struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `n` requests, `c` at a time, round-robin over `bases`; returns the wall time
/// and the sorted latencies (ms). Any non-200 answer aborts.
async fn burst(
    http: &reqwest::Client,
    bases: &[String],
    n: usize,
    c: usize,
    path: impl Fn(usize) -> (String, serde_json::Value) + Send + Sync + 'static,
) -> (Duration, Vec<f64>) {
    let (wall, lat, _) = burst_bodies(http, bases, n, c, path, false).await;
    (wall, lat)
}

/// [`burst`], also returning each answer's body by request index when `keep`.
async fn burst_bodies(
    http: &reqwest::Client,
    bases: &[String],
    n: usize,
    c: usize,
    path: impl Fn(usize) -> (String, serde_json::Value) + Send + Sync + 'static,
    keep: bool,
) -> (Duration, Vec<f64>, Vec<(usize, String)>) {
    let path = Arc::new(path);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (http, bases, path, next) = (http.clone(), bases.to_vec(), path.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut bodies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (lat, bodies);
                }
                let (p, body) = path(i);
                let t = Instant::now();
                let r = http
                    .post(format!("{}{p}", bases[i % bases.len()]))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                assert!(status.is_success(), "{p}: {status} {text}");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if keep {
                    bodies.push((i, text));
                }
            }
        }));
    }
    let mut all = Vec::new();
    let mut bodies = Vec::new();
    for t in tasks {
        let (l, b) = t.await.expect("task");
        all.extend(l);
        bodies.extend(b);
    }
    let wall = t0.elapsed();
    all.sort_by(|a, b| a.total_cmp(b));
    (wall, all, bodies)
}

/// One agent message per live chat, as signed LivePerson webhooks, `c` at a time,
/// round-robin over the replicas; returns the wall time and the sorted webhook latencies.
async fn webhooks(
    http: &reqwest::Client,
    bases: &[String],
    pcs: &[String],
    c: usize,
) -> (Duration, Vec<f64>) {
    let pcs = Arc::new(pcs.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (http, bases, pcs, next) = (http.clone(), bases.to_vec(), pcs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pcs.len() {
                    return lat;
                }
                let pc = &pcs[i];
                let body = serde_json::json!({"kind": "notification",
                    "type": "ms.MessagingEventNotification",
                    "body": {"changes": [{"sequence": 1, "originatorId": "agent-9",
                        "originatorMetadata": {"id": "agent-9", "role": "ASSIGNED_AGENT"},
                        "serverTimestamp": 1528371199686u64, "dialogId": pc, "conversationId": pc,
                        "event": {"type": "ContentEvent", "contentType": "text/plain",
                                  "message": format!("lm:{}; Olá, sou a Bia", now_us())}}]}})
                .to_string();
                let sig =
                    transbordo::providers::auth::liveperson_signature(LP_SECRET, body.as_bytes());
                let t = Instant::now();
                let r = http
                    .post(format!("{}/webhooks/liveperson/7", bases[i % bases.len()]))
                    .header("content-type", "application/json")
                    .header("x-liveperson-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .expect("webhook");
                assert!(r.status().is_success(), "webhook: {}", r.status());
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let wall = t0.elapsed();
    all.sort_by(|a, b| a.total_cmp(b));
    (wall, all)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, database, replicas, n, c] = &args[..] else {
        eprintln!("usage: load_service DATABASE(sqlite|postgres://...) REPLICAS N CONCURRENCY");
        std::process::exit(2);
    };
    let replicas: usize = replicas.parse().expect("REPLICAS");
    let n: usize = n.parse().expect("N");
    let c: usize = c.parse().expect("CONCURRENCY");
    // `TRANSBORDO_BIN` runs another build (paired A/B runs against a baseline binary).
    let bin = std::env::var("TRANSBORDO_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/transbordo").to_string()
    });
    let bin = bin.as_str();
    let dir = std::env::temp_dir().join(format!("transbordo-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox");
    let ended = Arc::new(AtomicUsize::new(0));
    let e2 = ended.clone();
    // Agent messages the builder got, and each one's latency from its webhook (ms).
    let relayed: Arc<Mutex<Vec<f64>>> = Arc::default();
    let r2 = relayed.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: axum::body::Bytes| {
            let e = e2.clone();
            let r = r2.clone();
            async move {
                if body.windows(15).any(|w| w == b"live_chat_ended") {
                    e.fetch_add(1, Ordering::Relaxed);
                } else if body.windows(13).any(|w| w == b"agent_message") {
                    if let Some(t) = sent_us(&body) {
                        let ms = now_us().saturating_sub(t) as f64 / 1000.0;
                        r.lock().expect("relayed").push(ms);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let rx_url = format!("http://{}/events", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });

    let integrations = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sandbox-integrations.toml"
    ))
    .expect("integrations")
    .replace("http://127.0.0.1:8910", &sandbox.base_url());
    std::fs::write(dir.join("integrations.toml"), integrations).expect("write");
    let pg_name = format!("transbordo_load_{}", std::process::id());
    let db = if database == "sqlite" {
        dir.join("load.db").display().to_string()
    } else {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(database)
            .await
            .expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {pg_name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        let (server, _) = database.rsplit_once('/').expect("a postgres:// URL");
        format!("{server}/{pg_name}")
    };
    // `TRANSBORDO_LOAD_CONNECTIONS`: the replicas' `database_connections` (PostgreSQL).
    let connections = match std::env::var("TRANSBORDO_LOAD_CONNECTIONS") {
        Ok(n) if database != "sqlite" => format!("database_connections = {n}\n"),
        _ => String::new(),
    };
    std::fs::write(
        dir.join("service.toml"),
        format!(
            "listen = \"127.0.0.1:1\"\ndatabase = \"{db}\"\n{connections}integrations = \"integrations.toml\"\n\
             [builder]\ncallback_url = \"{rx_url}\"\nsigning_secret = \"{SECRET}\"\n\
             [api]\ntokens = [\"{TOKEN}\"]\nmessages_per_minute = 0\n"
        ),
    )
    .expect("write config");
    let status = Command::new(bin)
        .args(["migrate", "--config"])
        .arg(dir.join("service.toml"))
        .stdout(Stdio::null())
        .status()
        .expect("migrate");
    assert!(status.success());
    let mut procs = Replicas(Vec::new());
    let mut bases = Vec::new();
    for _ in 0..replicas {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut cmd = Command::new(bin);
        // `TRANSBORDO_LOAD_WORKER_THREADS`: each replica's runtime threads (tokio's
        // `TOKIO_WORKER_THREADS`), without changing this process's.
        if let Ok(n) = std::env::var("TRANSBORDO_LOAD_WORKER_THREADS") {
            cmd.env("TOKIO_WORKER_THREADS", n);
        }
        let child = cmd
            .env("TRANSBORDO_LOG", "warn")
            .args(["serve", "--config"])
            .arg(dir.join("service.toml"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        procs.0.push(child);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    for b in &bases {
        while !http
            .get(format!("{b}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let control = sandbox.control();
    // The sandbox's notifications are shared out over the replicas, as a balancer in
    // front of them would (with one URL, replica 0 would take every webhook).
    let hook = |b: &String| format!("{b}/webhooks/liveperson/7");
    let lp_hook = WebhookPatch {
        url: Some(Some(hook(&bases[0]))),
        spread: Some(bases[1..].iter().map(hook).collect()),
        ..WebhookPatch::default()
    };
    control
        .set_webhook(Provider::Liveperson, &lp_hook)
        .await
        .expect("webhook");

    // CPU from here to the last ending: the replicas, their PostgreSQL backends and this
    // process (the sandbox, the builder receiver and the clients: the same work whatever
    // the setup, so it shows how fast the machine ran).
    let replicas_cpu = |procs: &Replicas| procs.0.iter().map(|p| cpu_s(p.id())).sum::<f64>();
    let (cpu_rep0, cpu_self0) = (replicas_cpu(&procs), cpu_s(std::process::id()));
    let cpu_pg0 = if database == "sqlite" {
        HashMap::new()
    } else {
        backends_cpu(database, &pg_name).await
    };
    let rss_before: u64 = procs.0.iter().map(|p| rss_kb(p.id(), "VmRSS:")).sum();
    let run = |i: usize| {
        (
            format!("/v1/conversations/load-{i}/run"),
            serde_json::json!({"flow": [{"name": "start_live_chat",
                "parameters": {"integration_id": 7, "start_message": "Cliente pediu atendimento"}}],
                "context": {"contact": {"name": "Ana"}}}),
        )
    };
    let (wall, lat, bodies) = burst_bodies(&http, &bases, n, c, run, true).await;
    let rss_open: u64 = procs.0.iter().map(|p| rss_kb(p.id(), "VmRSS:")).sum();
    // The provider conversation of each live chat (the agent messages address it).
    let mut pcs = vec![String::new(); n];
    for (i, body) in bodies {
        let v: serde_json::Value = serde_json::from_str(&body).expect("run answer");
        pcs[i] = v["live_chat"]["provider_conversation_id"]
            .as_str()
            .expect("a live chat")
            .to_string();
    }
    let per_chat = (rss_open.saturating_sub(rss_before) * 1024) as f64 / n as f64;
    let handoffs = n as f64 / wall.as_secs_f64();
    // Message relay: user messages to the agent, then agent messages to the builder.
    let message = |i: usize| {
        (
            format!("/v1/conversations/load-{i}/messages"),
            serde_json::json!({"text": "Preciso de ajuda com meu pedido"}),
        )
    };
    let (mwall, mlat) = burst(&http, &bases, n, c, message).await;
    let user_msgs = n as f64 / mwall.as_secs_f64();
    let t_agent = Instant::now();
    let (_, hook_lat) = webhooks(&http, &bases, &pcs, c).await;
    while relayed.lock().expect("relayed").len() < n {
        assert!(
            t_agent.elapsed() < Duration::from_secs(600),
            "agent messages not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let agent_msgs = n as f64 / t_agent.elapsed().as_secs_f64();
    let mut relay_lat = relayed.lock().expect("relayed").clone();
    relay_lat.sort_by(|a, b| a.total_cmp(b));
    let close = |i: usize| {
        (
            format!("/v1/conversations/load-{i}/close"),
            serde_json::json!({}),
        )
    };
    let t_end = Instant::now();
    let (cwall, clat) = burst(&http, &bases, n, c, close).await;
    while ended.load(Ordering::Relaxed) < n {
        assert!(
            t_end.elapsed() < Duration::from_secs(600),
            "endings not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let endings = n as f64 / t_end.elapsed().as_secs_f64();
    let peak: u64 = procs.0.iter().map(|p| rss_kb(p.id(), "VmHWM:")).sum();
    // Milliseconds of CPU per operation (N handoffs, N user messages, N agent messages,
    // N closes). Backends that came and went meanwhile are missed (the store keeps its
    // connections, so there are none unless a call failed on one).
    let ops = (4 * n) as f64;
    let cpu_rep = (replicas_cpu(&procs) - cpu_rep0) * 1000.0 / ops;
    let cpu_self = (cpu_s(std::process::id()) - cpu_self0) * 1000.0 / ops;
    let cpu_pg = if database == "sqlite" {
        "–".to_string()
    } else {
        let now = backends_cpu(database, &pg_name).await;
        let used: f64 = now
            .iter()
            .map(|(pid, t)| t - cpu_pg0.get(pid).copied().unwrap_or(0.0))
            .sum();
        format!("{:.2}", used * 1000.0 / ops)
    };
    let store = if database == "sqlite" {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    println!(
        "| {store} | {replicas} | {n} | {handoffs:.0} | {:.1} / {:.1} | {user_msgs:.0} ({:.1}) | {agent_msgs:.0} ({:.1} / {:.1}) | {:.0} | {:.1} / {:.1} | {endings:.0} | {:.1} KB | {:.0} MB | {cpu_rep:.2} / {cpu_pg} / {cpu_self:.2} |",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&mlat, 0.99),
        percentile(&hook_lat, 0.99),
        percentile(&relay_lat, 0.99),
        n as f64 / cwall.as_secs_f64(),
        percentile(&clat, 0.5),
        percentile(&clat, 0.99),
        per_chat / 1024.0,
        peak as f64 / 1024.0,
    );
    drop(procs);
    if database != "sqlite" {
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::PgConnection::connect(database).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
    sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
