//! Real `transbordo serve` processes for the multi-process tests: a config shared by
//! the replicas (each binds its own `--listen`), the sandbox's integrations with chosen
//! timers, a load balancer in front of the replicas, SIGKILL and restart.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Scales waits with the machine's load: tests share 2 cores with builds and each other.
pub fn scaled(base: Duration) -> Duration {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(1.0);
    base.mul_f64((load / 2.0).clamp(1.0, 8.0))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `examples/sandbox-integrations.toml` pointed at `sandbox_base`, with timers
/// (seconds, 0 = none): LivePerson (7) wait, ALTU (3) wait and user inactivity.
pub fn integrations_toml(
    sandbox_base: &str,
    lp_wait: i64,
    altu_wait: i64,
    altu_idle: i64,
) -> String {
    let src = std::fs::read_to_string(format!("{ROOT}/examples/sandbox-integrations.toml"))
        .expect("examples/sandbox-integrations.toml")
        .replace("http://127.0.0.1:8910", sandbox_base);
    let mut doc: toml::Table = src.parse().expect("example integrations parse");
    for i in doc["integration"].as_array_mut().expect("list").iter_mut() {
        let t = i.as_table_mut().expect("table");
        let id = t["id"].as_integer().expect("id");
        let mut set = |k: &str, v: i64| {
            t.insert(k.into(), toml::Value::Integer(v));
        };
        match id {
            7 => set("wait_timeout_s", lp_wait),
            1 => set("wait_timeout_s", 0),
            3 => {
                set("wait_timeout_s", altu_wait);
                set("user_inactivity_timeout_s", altu_idle);
            }
            _ => {}
        }
    }
    toml::to_string(&doc).expect("toml")
}

/// The replicas' shared config (no `listen` of its own use: each gets `--listen`).
pub fn write_config(
    dir: &Path,
    database: &str,
    callback: &str,
    secret: &str,
    token_env: &str,
) -> PathBuf {
    let cfg = format!(
        r#"listen = "127.0.0.1:1"
database = "{database}"
integrations = "integrations.toml"

[builder]
callback_url = "{callback}"
signing_secret = "{secret}"

[delivery]
initial_backoff_ms = 50
max_backoff_ms = 500
timeout_ms = 3000

[api]
tokens = ["${{{token_env}}}"]
"#
    );
    let p = dir.join("service.toml");
    std::fs::write(&p, cfg).expect("write service.toml");
    p
}

/// One `transbordo serve` child.
pub struct Replica {
    pub port: u16,
    child: Option<Child>,
    log_dir: PathBuf,
    starts: u32,
    config: PathBuf,
    token: (String, String),
}

impl Replica {
    pub fn new(config: &Path, log_dir: &Path, token_env: &str, token: &str) -> Replica {
        Replica {
            port: free_port(),
            child: None,
            log_dir: log_dir.to_path_buf(),
            starts: 0,
            config: config.to_path_buf(),
            token: (token_env.to_string(), token.to_string()),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the child and waits for `/readyz`.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none());
        self.starts += 1;
        let log = self
            .log_dir
            .join(format!("serve-{}-{}.log", self.port, self.starts));
        let child = Command::new(BIN)
            .env(&self.token.0, &self.token.1)
            .env("TRANSBORDO_LOG", "info")
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn transbordo serve");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "replica exited at start ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.base())).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "replica not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }

    /// The logs of every start, for a failing test.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let p = self.log_dir.join(format!("serve-{}-{n}.log", self.port));
            out.push_str(&format!("--- {} ---\n", p.display()));
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
        out
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A round-robin load balancer: each request goes to the next replica; one that does
/// not answer (killed) or answers 503 is skipped for the next.
#[derive(Clone)]
pub struct Balancer {
    ports: Arc<Mutex<Vec<u16>>>,
    next: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl Balancer {
    pub async fn start(ports: Vec<u16>) -> (String, Balancer) {
        let lb = Balancer {
            ports: Arc::new(Mutex::new(ports)),
            next: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        };
        let app = axum::Router::new().fallback(forward).with_state(lb.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (url, lb)
    }
}

async fn forward(
    axum::extract::State(lb): axum::extract::State<Balancer>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let ports = lb.ports.lock().expect("ports").clone();
    let n = lb.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..ports.len() * 4 {
        let port = ports[(n + k) % ports.len()];
        let mut rb = lb
            .http
            .request(
                parts.method.clone(),
                format!("http://127.0.0.1:{port}{path}"),
            )
            .body(bytes.clone());
        for (name, v) in parts.headers.iter() {
            if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
                rb = rb.header(name, v);
            }
        }
        match rb.send().await {
            Ok(r) if r.status().as_u16() != 503 => {
                let status = r.status();
                let headers = r.headers().clone();
                let body = r.bytes().await.unwrap_or_default();
                let mut resp = (status, body).into_response();
                for (name, v) in headers.iter() {
                    if name != axum::http::header::CONTENT_LENGTH
                        && name != axum::http::header::TRANSFER_ENCODING
                    {
                        resp.headers_mut().insert(name, v.clone());
                    }
                }
                return resp;
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    (axum::http::StatusCode::BAD_GATEWAY, "no replica answered").into_response()
}
