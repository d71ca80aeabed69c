//! The `transcript` parameter end to end: `transbordo run` (the real binary) hands over to
//! the sandbox's fakes over HTTP, and the conversation the agent sees holds the bot
//! conversation so far, split to each provider's limit without cutting a character.

use std::process::Command;

use serde_json::{json, Value};
use transbordo::providers::{altu, liveperson, zendesk};
use transbordo::sandbox::{Sandbox, SandboxOptions};

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Env {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = std::fs::read_to_string(format!("{ROOT}/examples/sandbox-integrations.toml"))
        .expect("example integrations")
        .replace("http://127.0.0.1:8910", &sandbox.base_url());
    std::fs::write(dir.path().join("integrations.toml"), toml).expect("write");
    Env { sandbox, dir }
}

impl Env {
    /// `transbordo run` of one `start_live_chat` with `params` and `$history` = `history`.
    fn run(&self, params: Value, history: Value) -> Value {
        let flow =
            json!([{"name": "start_live_chat", "parameters": params, "result_variable": "r"}]);
        let flow_path = self.dir.path().join("flow.json");
        let ctx_path = self.dir.path().join("context.json");
        std::fs::write(&flow_path, flow.to_string()).expect("write");
        let ctx = json!({"conversation_id": "conv-7",
            "contact": {"id": "5511999990000", "name": "Ana Souza", "email": "ana@example.com"},
            "context": {"history": history}});
        std::fs::write(&ctx_path, ctx.to_string()).expect("write");
        let out = Command::new(BIN)
            .arg("run")
            .arg(&flow_path)
            .arg("--context")
            .arg(&ctx_path)
            .arg("--integrations")
            .arg(self.dir.path().join("integrations.toml"))
            .output()
            .expect("binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        serde_json::from_slice(&out.stdout).expect("stdout is JSON")
    }

    /// The lines of the conversation with `id` as the agent sees them: (role, text).
    async fn seen(&self, id: &str) -> Vec<(String, String)> {
        let c = self
            .sandbox
            .control()
            .conversation(id)
            .await
            .expect("conversation exists");
        c.transcript.into_iter().map(|t| (t.role, t.text)).collect()
    }
}

fn history() -> Value {
    json!([
        {"from": "bot", "text": "Olá! Como posso ajudar?", "at": "2026-11-26T10:01:58-03:00"},
        {"from": "user", "text": "Meu pedido 123 não chegou 😞", "at": "2026-11-26T10:02:11-03:00"},
        {"from": "bot", "text": "Vou transferir você para um atendente."}
    ])
}

const BLOCK: &str = "Histórico da conversa com o bot\n\
[2026-11-26T10:01:58-03:00] Bot: Olá! Como posso ajudar?\n\
[2026-11-26T10:02:11-03:00] Cliente: Meu pedido 123 não chegou 😞\n\
Bot: Vou transferir você para um atendente.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveperson_agent_reads_the_transcript_after_the_start_message() {
    let e = env().await;
    let out = e.run(
        json!({"integration_id": 7, "start_message": "Pedido atrasado", "transcript": "<? $history ?>"}),
        history(),
    );
    assert_eq!(out["context"]["r"]["status"], "ok", "{out}");
    assert_eq!(out["warnings"], json!([]), "{out}");
    let id = out["context"]["r"]["body"]["body"]["conversationId"]
        .as_str()
        .expect("conversation id");
    let seen = e.seen(id).await;
    assert_eq!(
        seen,
        [
            ("consumer".to_string(), "Pedido atrasado".to_string()),
            ("consumer".to_string(), BLOCK.to_string())
        ]
    );
    // `transbordo sandbox show`: what the agent reads, the block kept together.
    let out = Command::new(BIN)
        .args(["sandbox", "show", id, "--url", &e.sandbox.base_url()])
        .output()
        .expect("binary runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(
            "  [consumer] Histórico da conversa com o bot\n             [2026-11-26T10:01:58-03:00] Bot: Olá! Como posso ajudar?\n"
        ),
        "{shown}"
    );
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zendesk_agent_reads_the_transcript_as_a_private_note() {
    let e = env().await;
    let out = e.run(
        json!({"integration_id": "1", "subject": "Pedido 123", "transcript": "<? $history ?>"}),
        history(),
    );
    let r = &out["context"]["r"]["response"];
    assert_eq!(r["status"], "ok", "{out}");
    let id = r["body"]["ticket"]["id"].to_string();
    let c = e
        .sandbox
        .control()
        .conversation(&id)
        .await
        .expect("ticket exists");
    let texts: Vec<&str> = c.transcript.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["Pedido 123", BLOCK]);
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altu_platform_receives_the_transcript_array() {
    let e = env().await;
    let out = e.run(
        json!({"integration_id": 3, "start_message": "Pedido atrasado", "transcript": "<? $history ?>"}),
        history(),
    );
    assert_eq!(out["context"]["r"]["status"], "ok", "{out}");
    let id = out["context"]["r"]["body"]["conversationId"]
        .as_str()
        .expect("conversation id");
    let c = e.sandbox.control().conversation(id).await.expect("exists");
    assert_eq!(c.details["data"]["transcript"], history(), "{}", c.details);
    let seen = e.seen(id).await;
    assert_eq!(seen[0], ("bot".into(), "Pedido atrasado".into()));
    assert_eq!(
        seen[1..]
            .iter()
            .map(|(r, t)| format!("{r}|{t}"))
            .collect::<Vec<_>>(),
        [
            "transcript|[2026-11-26T10:01:58-03:00] Bot: Olá! Como posso ajudar?",
            "transcript|[2026-11-26T10:02:11-03:00] Cliente: Meu pedido 123 não chegou 😞",
            "transcript|Bot: Vou transferir você para um atendente.",
        ]
    );
    e.sandbox.shutdown().await;
}

/// 60 messages of multi-byte text, each near 1 KiB: split into several messages on
/// LivePerson and Zendesk and into continued entries on the connector, oldest first;
/// every piece is within its limit and nothing is lost or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transcripts_are_split_to_each_limit_oldest_first() {
    let e = env().await;
    let long: Vec<Value> = (0..60)
        .map(|i| {
            let from = if i % 2 == 0 { "user" } else { "bot" };
            // 3-byte and 4-byte characters, so a byte cut could land inside one.
            json!({"from": from, "text": format!("{i:02} {}", "ação☕😀 ".repeat(70 + i)).trim_end()})
        })
        .collect();
    let expected_lines: Vec<String> = long[10..]
        .iter()
        .map(|m| {
            let who = if m["from"] == "user" {
                "Cliente"
            } else {
                "Bot"
            };
            format!("{who}: {}", m["text"].as_str().unwrap_or_default())
        })
        .collect();

    // LivePerson: only the last 50 (the default), in messages of at most 4,000 bytes.
    let out = e.run(
        json!({"integration_id": 7, "transcript": "<? $history ?>"}),
        json!(long),
    );
    let w = out["warnings"].to_string();
    assert!(w.contains("the oldest 10 were left out"), "{w}");
    let id = out["context"]["r"]["body"]["body"]["conversationId"]
        .as_str()
        .expect("id")
        .to_string();
    let parts: Vec<String> = e.seen(&id).await.into_iter().map(|(_, t)| t).collect();
    assert!(parts.len() > 10, "{} parts", parts.len());
    assert_lossless(
        &parts,
        liveperson::TRANSCRIPT_MESSAGE_LIMIT,
        &expected_lines,
    );

    // Zendesk: the same blocks as private comments of at most 60,000 bytes.
    let out = e.run(
        json!({"integration_id": "1", "subject": "s", "transcript": "<? $history ?>"}),
        json!(long),
    );
    let tid = out["context"]["r"]["response"]["body"]["ticket"]["id"].to_string();
    let parts: Vec<String> = e
        .seen(&tid)
        .await
        .into_iter()
        .skip(1)
        .map(|(_, t)| t)
        .collect();
    assert!(parts.len() > 1);
    assert_lossless(&parts, zendesk::TRANSCRIPT_COMMENT_LIMIT, &expected_lines);

    // Connector: one entry per 4,096 bytes of text, joined back by the platform.
    let long_text = "ação☕😀".repeat(1000);
    let out = e.run(
        json!({"integration_id": 3, "transcript": [{"from": "user", "text": long_text}]}),
        json!([]),
    );
    let id = out["context"]["r"]["body"]["conversationId"]
        .as_str()
        .expect("id")
        .to_string();
    let c = e.sandbox.control().conversation(&id).await.expect("exists");
    let entries = c.details["data"]["transcript"]
        .as_array()
        .expect("array")
        .clone();
    assert!(entries.len() >= 3);
    assert!(entries.iter().all(|x| x["text"]
        .as_str()
        .is_some_and(|t| t.len() <= altu::TRANSCRIPT_TEXT_LIMIT)));
    assert!(entries[1..].iter().all(|x| x["continued"] == true));
    let joined: String = entries.iter().filter_map(|x| x["text"].as_str()).collect();
    assert_eq!(joined, long_text);
    assert_eq!(
        e.seen(&id).await,
        [("transcript".to_string(), format!("Cliente: {long_text}"))]
    );
    e.sandbox.shutdown().await;
}

/// Every part fits the limit and starts with its numbered header; the bodies, joined,
/// give back exactly the expected lines in order.
fn assert_lossless(parts: &[String], limit: usize, expected_lines: &[String]) {
    let n = parts.len();
    let mut body = String::new();
    for (i, p) in parts.iter().enumerate() {
        assert!(p.len() <= limit, "part {i} is {} bytes", p.len());
        let header = format!("Histórico da conversa com o bot ({}/{n})\n", i + 1);
        let rest = p
            .strip_prefix(&header)
            .unwrap_or_else(|| panic!("part {i}: {p:.80}"));
        // Whole lines join with a newline; a line cut in two continues in the next part.
        if !body.is_empty() && !body.ends_with(' ') {
            body.push('\n');
        }
        body.push_str(rest);
    }
    assert_eq!(body, expected_lines.join("\n"));
}

/// 500 messages of about 4 KiB (the most `transcript_max_messages` allows) reach the
/// platform in one OPEN_CONVERSATION the sandbox accepts: the newest messages, 256 KiB at
/// most, with a warning naming what was left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_event_stays_within_what_a_platform_accepts() {
    let e = env().await;
    let long: Vec<Value> = (0..500)
        .map(|i| json!({"from": "user", "text": format!("{i:03} {}", "ç".repeat(2000))}))
        .collect();
    let out = e.run(
        json!({"integration_id": 3, "transcript": "<? $history ?>", "transcript_max_messages": 500}),
        json!(long),
    );
    assert_eq!(out["context"]["r"]["status"], "ok", "{out}");
    assert!(
        out["warnings"].to_string().contains("were left out"),
        "{out}"
    );
    let id = out["context"]["r"]["body"]["conversationId"]
        .as_str()
        .expect("id")
        .to_string();
    let c = e.sandbox.control().conversation(&id).await.expect("exists");
    let entries = c.details["data"]["transcript"]
        .as_array()
        .expect("array")
        .clone();
    let total: usize = entries
        .iter()
        .filter_map(|x| x["text"].as_str())
        .map(str::len)
        .sum();
    assert!(total <= altu::TRANSCRIPT_TOTAL_LIMIT, "{total}");
    let last = entries
        .last()
        .and_then(|x| x["text"].as_str())
        .unwrap_or_default();
    assert!(
        last.ends_with("ç")
            && e.seen(&id)
                .await
                .last()
                .is_some_and(|(_, t)| t.contains("499 "))
    );
    e.sandbox.shutdown().await;
}
