//! `transbordo run` with the service's `http_request` guard (`--http-guard`,
//! `--http-allow`) and with logs on stderr (`-v`, `--log-format json`).

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn run(args: &[&str], run_args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = dir.path().join("flow.json");
    let url = format!(
        "http://127.0.0.1:{}/secret-path?token=query-secret",
        closed_port()
    );
    std::fs::write(
        &flow,
        format!(
            r#"[{{"name": "http_request", "parameters": {{"config": {{"url": "{url}",
                 "headers": {{"Authorization": "Bearer header-secret"}}}}}}, "result_variable": "r"}}]"#
        ),
    )
    .expect("write flow");
    let out = Command::new(BIN)
        .args(args)
        .arg("run")
        .args(run_args)
        .arg(&flow)
        .env_remove("TRANSBORDO_LOG")
        .output()
        .expect("run transbordo");
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("run document");
    (doc, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn run_sends_anywhere_unless_guarded() {
    let (doc, stderr) = run(&[], &[]);
    assert_eq!(doc["context"]["r"]["error"]["kind"], "unavailable", "{doc}");
    assert_eq!(stderr, "", "no logs without -v");
    let (doc, _) = run(&[], &["--http-guard"]);
    assert_eq!(doc["context"]["r"]["error"]["kind"], "forbidden", "{doc}");
    let (doc, _) = run(&[], &["--http-allow", "127.0.0.0/8"]);
    assert_eq!(doc["context"]["r"]["error"]["kind"], "unavailable", "{doc}");
}

#[test]
fn verbose_logs_a_json_line_per_request_without_secrets() {
    let (_, stderr) = run(&["-v", "--log-format", "json"], &["--http-guard"]);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["message"] == "http_request")
        .unwrap_or_else(|| panic!("no http_request line in {stderr}"));
    assert_eq!(line["host"], "127.0.0.1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["outcome"], "forbidden");
    for secret in ["secret-path", "query-secret", "header-secret"] {
        assert!(!stderr.contains(secret), "{secret} in {stderr}");
    }
}

#[test]
fn a_bad_allow_entry_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = dir.path().join("flow.json");
    std::fs::write(&flow, "[]").expect("write flow");
    let out = Command::new(BIN)
        .args(["run", "--http-allow", "10.0.0.0/99"])
        .arg(&flow)
        .output()
        .expect("run transbordo");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --http-allow: `10.0.0.0/99` is not a host name, `*.domain`, IP address or CIDR network\n"
    );
}

#[test]
fn serve_without_tokens_on_loopback_says_the_api_is_open() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("i.toml"),
        "[[integration]]\nid = 7\nprovider = \"liveperson\"\naccount_id = \"1\"\nclient_id = \"c\"\nclient_secret = \"x\"\n",
    )
    .expect("integrations");
    let cfg = dir.path().join("s.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\nintegrations = \"i.toml\"\n[builder]\ncallback_url = \"http://127.0.0.1:9/e\"\nsigning_secret = \"s\"\n",
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&cfg)
        .env_remove("TRANSBORDO_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut warning = None;
    for line in std::io::BufReader::new(stderr).lines().take(5) {
        let line = line.expect("utf-8");
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        if v["level"] == "WARN" {
            warning = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let w = warning.expect("a warning line");
    assert!(
        w["message"]
            .as_str()
            .expect("message")
            .starts_with("the builder API is open"),
        "{w}"
    );
}
