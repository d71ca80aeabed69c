//! Every seed example through `transbordo run` (the real binary) against the sandbox's
//! fakes over HTTP on 127.0.0.1: exact result shapes, the conversation the agent sees,
//! retries, idempotent ticket creation, failures as result objects, and no secret in
//! any output.

use std::process::Command;

use serde_json::{json, Value};
use transbordo::sandbox::{Fault, FaultRule, Provider, Sandbox, SandboxOptions};

const BIN: &str = env!("CARGO_BIN_EXE_transbordo");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRETS: [&str; 4] = [
    "sandbox-secret",
    "sandbox-token",
    "sandbox-access-key",
    "sandbox-access-token",
];

struct Env {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
}

async fn env() -> Env {
    let sandbox = Sandbox::start(SandboxOptions::ephemeral())
        .await
        .expect("sandbox starts");
    let base = sandbox.base_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = std::fs::read_to_string(format!("{ROOT}/examples/sandbox-integrations.toml"))
        .expect("example integrations")
        .replace("http://127.0.0.1:8910", &base);
    std::fs::write(dir.path().join("integrations.toml"), toml).expect("write");
    Env { sandbox, dir }
}

impl Env {
    /// `transbordo run FLOW` with the example context; returns the parsed stdout.
    fn run(&self, flow: Value) -> Value {
        let path = self.dir.path().join("flow.json");
        std::fs::write(&path, serde_json::to_string_pretty(&flow).expect("json")).expect("write");
        let integrations = self.dir.path().join("integrations.toml");
        let out = Command::new(BIN)
            .args([
                "run",
                path.to_str().unwrap_or(""),
                "--context",
                "examples/context.json",
                "--integrations",
            ])
            .arg(&integrations)
            .current_dir(ROOT)
            .output()
            .expect("binary runs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        for s in SECRETS {
            assert!(
                !stdout.contains(s) && !stderr.contains(s),
                "secret {s} leaked:\n{stdout}\n{stderr}"
            );
        }
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        serde_json::from_str(&stdout).expect("stdout is JSON")
    }

    async fn fault(&self, provider: Provider, endpoint: &str, fault: Fault, times: u32) {
        let rule = FaultRule {
            provider,
            endpoint: endpoint.into(),
            fault,
            times,
        };
        self.sandbox
            .control()
            .add_fault(&rule)
            .await
            .expect("fault accepted");
    }
}

fn example(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/examples/{name}")).expect("example"),
    )
    .expect("json")
}

fn lp_ok_shape(v: &Value) -> String {
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["body"]["code"], "OK", "{v}");
    assert!(
        v["body"]["reqId"].is_string() || v["body"]["reqId"].is_number(),
        "{v}"
    );
    let id = v["body"]["body"]["conversationId"]
        .as_str()
        .expect("conversationId")
        .to_string();
    let keys: Vec<&str> = v
        .as_object()
        .expect("obj")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["status", "body"]);
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn liveperson_minimal_and_campaign_open_real_conversations() {
    let e = env().await;
    let out = e.run(json!([{"name": "start_live_chat", "parameters": {"integration_id": 7, "start_message": "Mensagem para o agente"}, "result_variable": "response"}]));
    let conv = lp_ok_shape(&out["context"]["response"]);
    assert_eq!(out["handoff"]["provider"], "liveperson");
    assert_eq!(out["handoff"]["provider_conversation_id"], conv.as_str());
    let seen = e
        .sandbox
        .control()
        .conversation(&conv)
        .await
        .expect("the agent sees it");
    assert!(
        seen.transcript
            .iter()
            .any(|t| t.text == "Mensagem para o agente"),
        "{:?}",
        seen.transcript
    );

    // The campaign example: a second consumer (another contact id) so LivePerson allows it.
    let mut flow = example("liveperson-campaign.json");
    flow[0]["parameters"]["start_message"] = json!("Mensagem inicial para o agente");
    let e2 = env().await;
    let out = e2.run(flow);
    let conv = lp_ok_shape(&out["context"]["lp_widget_response"]);
    let seen = e2
        .sandbox
        .control()
        .conversation(&conv)
        .await
        .expect("exists");
    assert_eq!(seen.skill_id.as_deref(), Some("1589664150"));
    e.sandbox.shutdown().await;
    e2.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn liveperson_extra_info_address_is_sent() {
    let e = env().await;
    let out = e.run(json!([{"name": "start_live_chat", "parameters": {"integration_id": 7, "extra_info": {"endereco": {"país": "Brasil", "estado": "SP", "cidade": "São Paulo", "bairro": "Consolação", "logradouro": "R. Sergipe", "numero": "475", "complemento": "5º Andar"}}}, "result_variable": "response"}]));
    let conv = lp_ok_shape(&out["context"]["response"]);
    let seen = e
        .sandbox
        .control()
        .conversation(&conv)
        .await
        .expect("exists");
    assert!(
        seen.details.to_string().contains("Consolação"),
        "{}",
        seen.details
    );
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zendesk_seed_creates_exactly_one_ticket_even_when_the_answer_is_lost() {
    let e = env().await;
    // The first create is processed but its answer is cut: the retry with the same
    // Idempotency-Key must replay it, not create a second ticket.
    e.fault(
        Provider::Zendesk,
        "tickets",
        Fault {
            malformed: true,
            ..Fault::default()
        },
        1,
    )
    .await;
    let out = e.run(example("zendesk-ticket.json"));
    let r = &out["context"]["ticketResponse"];
    assert_eq!(r["response"]["status"], "ok", "{r}");
    let ticket = &r["response"]["body"]["ticket"];
    assert_eq!(ticket["subject"], "Pedido 123 atrasado");
    assert_eq!(
        ticket["tags"],
        json!(["vip", "canal_smkwhatsapp", "smkreceptivo"])
    );
    let tickets = e
        .sandbox
        .control()
        .conversations(Some(Provider::Zendesk), None)
        .await
        .expect("list");
    assert_eq!(tickets.len(), 1, "exactly one ticket: {tickets:?}");
    assert_eq!(
        out["messages"][0]["message"]["text"],
        "Aguarde um minuto..."
    );
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_then_success_and_failures_as_results() {
    let e = env().await;
    e.fault(
        Provider::Zendesk,
        "tickets",
        Fault {
            status: Some(503),
            retry_after: Some(1),
            ..Fault::default()
        },
        1,
    )
    .await;
    let out = e.run(example("zendesk-ticket.json"));
    assert_eq!(
        out["context"]["ticketResponse"]["response"]["status"], "ok",
        "{}",
        out["context"]
    );

    // Rejected by the provider: the error sits under `response` for Zendesk.
    let out = e.run(json!([{"name": "start_live_chat", "parameters": {"integration_id": "1", "subject": "x", "start_message": "   "}, "result_variable": "t"}]));
    let r = &out["context"]["t"]["response"];
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        ["rejected", "config"].contains(&r["error"]["kind"].as_str().unwrap_or("")),
        "{r}"
    );

    // LivePerson credentials refused: kind `auth`.
    e.fault(
        Provider::Liveperson,
        "token",
        Fault {
            status: Some(401),
            ..Fault::default()
        },
        10,
    )
    .await;
    let out = e.run(json!([{"name": "start_live_chat", "parameters": {"integration_id": 7}, "result_variable": "lp"}]));
    assert_eq!(out["context"]["lp"]["status"], "error");
    assert_eq!(
        out["context"]["lp"]["error"]["kind"], "auth",
        "{}",
        out["context"]["lp"]
    );
    assert_eq!(out["handoff"], Value::Null);
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn altu_connector_opens_a_conversation_with_contact_info() {
    let e = env().await;
    let out = e.run(json!([{"name": "start_live_chat", "parameters": {"integration_id": 3, "skillId": "vendas", "start_message": "Novo atendimento", "contact_info": {"nome": "<? contact.name ?>", "cpf": "<? contact.cpf ?>"}}, "result_variable": "altu"}]));
    let r = &out["context"]["altu"];
    assert_eq!(r["status"], "ok", "{r}");
    let id = r["body"]["conversationId"]
        .as_str()
        .expect("conversationId");
    let seen = e.sandbox.control().conversation(id).await.expect("exists");
    assert!(
        seen.details.to_string().contains("123.456.789-00"),
        "{}",
        seen.details
    );
    // Sent as compact JSON text (protocol §4), parsed back by the sandbox.
    assert!(seen.details["data"]["contact_info"].is_string());
    assert_eq!(
        seen.details["contact_info"]["cpf"], "123.456.789-00",
        "{}",
        seen.details
    );
    assert_eq!(seen.skill_id.as_deref(), Some("vendas"));
    assert_eq!(seen.transcript[0].text, "Novo atendimento");
    assert_eq!(out["handoff"]["provider"], "altu_sdk");
    e.sandbox.shutdown().await;
}
