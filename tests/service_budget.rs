//! Issue 15 against a real `transbordo serve` process: the amplification payloads that
//! took 1.56 GB and 4.9 s of CPU before the run budget. After each `POST …/run` the
//! process's peak RSS (`VmHWM`) stays ≤ 200 MB, the request costs ≤ 2 s of CPU,
//! `/healthz` answers within 1 s during and after, and the answer is a 200 whose
//! warnings carry the `limit` failure.

mod process_support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process_support::{free_port, integrations_toml, scaled, write_config, BIN};
use serde_json::{json, Map, Value};

const TOKEN_ENV: &str = "TRANSBORDO_BUDGET_TEST_TOKEN";
const TOKEN: &str = "budget-test-token-0123456789";

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("field")
}

/// utime + stime of the process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces) start past the last ')'.
    let rest = &s[s.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks as f64 / hz
}

fn doubling(n: usize) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("s0".into(), json!("xxxxxxxxxxxxxxxx"));
    for i in 1..=n {
        c.insert(
            format!("s{i}"),
            json!(format!("<? $s{} + $s{} ?>", i - 1, i - 1)),
        );
    }
    c
}

/// The payloads of the table.
fn payloads() -> Vec<(&'static str, Value)> {
    let mut arrays = doubling(16);
    arrays.insert("a0".into(), json!("<? [$s16,$s16] ?>"));
    for i in 1..=6 {
        arrays.insert(
            format!("a{i}"),
            json!(format!("<? [$a{},$a{}] ?>", i - 1, i - 1)),
        );
    }
    let mut replaces = doubling(16);
    for i in 0..200 {
        replaces.insert(
            format!("r{i}"),
            json!("<? $s16.replace(/x/g,'x').length ?>"),
        );
    }
    vec![
        (
            "doubling arrays (675 bytes)",
            json!({"flow": {"context": arrays, "actions": [{"name": "send_message", "parameters": {"text": "<? $a6 ?>"}}]}}),
        ),
        (
            "200 regex replaces over 1 MiB",
            json!({"flow": {"context": replaces, "actions": [{"name": "send_message", "parameters": {"text": "<? $r199 ?>"}}]}}),
        ),
        (
            "http_request timeout 99999999999 (templated)",
            json!({"flow": {"context": {"t": 99999999999u64}, "actions": [{"name": "http_request", "parameters": {"config": {"url": "https://example.invalid/x", "timeout": "<? $t ?>"}}}]}}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplification_payloads_stay_small_and_fast_in_a_real_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("integrations.toml"),
        integrations_toml("http://127.0.0.1:9", 0, 0, 0),
    )
    .expect("integrations");
    let cfg = write_config(
        dir.path(),
        "state.db",
        "http://127.0.0.1:9/events",
        "budget-test-secret",
        TOKEN_ENV,
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("serve.log");
    let child = Command::new(BIN)
        .env(TOKEN_ENV, TOKEN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn serve");
    let serve = Serve(child);
    let pid = serve.0.id();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // `/healthz` polled all along: the slowest answer.
    let stop = Arc::new(AtomicBool::new(false));
    let slowest_ms = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, slowest_ms, http, base) =
            (stop.clone(), slowest_ms.clone(), http.clone(), base.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = http
                    .get(format!("{base}/healthz"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let ms = if ok {
                    t.elapsed().as_millis() as u64
                } else {
                    5000
                };
                slowest_ms.fetch_max(ms, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut figures = Vec::new();
    for (i, (name, body)) in payloads().into_iter().enumerate() {
        let size = body.to_string().len();
        let cpu_before = cpu_s(pid);
        let started = Instant::now();
        let r = http
            .post(format!("{base}/v1/conversations/budget-{i}/run"))
            .bearer_auth(TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("answered");
        let status = r.status();
        let text = r.text().await.expect("body");
        let took = started.elapsed();
        let cpu = cpu_s(pid) - cpu_before;
        let hwm_mb = status_kb(pid, "VmHWM:") / 1024;
        figures.push(format!(
            "{name}: request {size} bytes, answer {} bytes, {took:?} wall, {cpu:.2} s CPU, VmHWM {hwm_mb} MB",
            text.len()
        ));
        assert_eq!(status, 200, "{name}: {}", &text[..text.len().min(500)]);
        let doc: Value = serde_json::from_str(&text).expect("json");
        let warnings = doc["warnings"].to_string();
        assert!(
            warnings.contains("failed: limit:"),
            "{name}: no limit failure in {}",
            &warnings[..warnings.len().min(800)]
        );
        assert!(hwm_mb <= 200, "{name}: peak RSS {hwm_mb} MB\n{figures:?}");
        assert!(cpu <= 2.0, "{name}: {cpu:.2} s of CPU\n{figures:?}");
        // The answer stays far below what the flow asked for (256 MB).
        assert!(text.len() < 32 << 20, "{name}: {} bytes", text.len());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    poller.await.expect("poller");
    let t = Instant::now();
    let after = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert!(after.status().is_success());
    assert!(t.elapsed() < Duration::from_secs(1));
    let slowest = slowest_ms.load(Ordering::Relaxed);
    eprintln!("{}\nslowest /healthz: {slowest} ms", figures.join("\n"));
    assert!(slowest < 1000, "/healthz took {slowest} ms\n{figures:?}");
    assert!(serve.0.id() == pid);
}
