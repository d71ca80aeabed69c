//! Render-only throughput of a realistic node and load+compile speed of flow JSON.
//!
//! `cargo bench --bench render`; figures are reported in the README.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use transbordo::providers::Integrations;
use transbordo::{Engine, RunOptions, Store};

/// Three actions, six expressions: the shape of a typical handoff node.
const NODE: &str = r#"[
  {"name": "set_variables", "parameters": {"context": {"tries": "<? ($tries ?? 0) + 1 ?>"}}},
  {"name": "http_request", "parameters": {"config": {
      "url": "https://api.example.com/orders/<? contact.id ?>",
      "method": "post",
      "data": {"cpf": "<? contact.cpf ?>", "channel": "whatsapp"}}}, "result_variable": "order"},
  {"name": "start_live_chat", "parameters": {
      "integration_id": 1,
      "subject": "Pedido de <? contact.name | title ?>",
      "tags": ["<? $zendeskTag ?>", "canal_smkwhatsapp"],
      "custom_fields": [{"id": "360023232032", "value": "<? contact.cpf ?>"}]}, "result_variable": "ticket"}
]"#;

const CONTEXT: &str = r#"{
  "contact": {"id": "5511999990000", "name": "ana souza", "email": "ana@example.com", "phone": "+55 11 99999-0000",
              "cpf": "123.456.789-00", "source": "whatsapp", "extra": {"cidade": "São Paulo", "bairro": "Consolação"}},
  "context": {"zendeskTag": "vip", "zendeskSubject": "Pedido 123 atrasado", "tries": 1},
  "input": {"text": "quero falar com um atendente"}, "intent": "falar_com_atendente",
  "entities": [{"entity": "cidade", "value": "São Paulo"}]
}"#;

const INTEGRATIONS: &str = r#"
[[integration]]
id = 1
provider = "zendesk"
base_url = "https://acme.zendesk.com"
email = "bot@acme.com"
api_token = "bench-token"
"#;

fn engine() -> Engine {
    let integrations =
        Integrations::from_toml_str(INTEGRATIONS, "bench.toml").expect("bench integrations");
    Engine::new().with_integrations(integrations)
}

fn bench_render(c: &mut Criterion) {
    let engine = engine();
    let flow = engine.load(NODE, "node.json").expect("bench node loads");
    let store = Store::from_json(&serde_json::from_str(CONTEXT).expect("json")).expect("store");
    let mut g = c.benchmark_group("render");
    // One element = one action: criterion reports actions per second.
    g.throughput(Throughput::Elements(flow.action_count() as u64));
    g.bench_function("node_3_actions_6_expressions", |b| {
        let mut missing = Vec::new();
        b.iter(|| {
            missing.clear();
            black_box(flow.render_parameters(black_box(&store), false, &mut missing))
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opts = RunOptions {
        strict: false,
        dry_run: true,
        trace: true,
        ..RunOptions::default()
    };
    g.bench_function("dry_run_whole_node", |b| {
        b.iter(|| rt.block_on(async { black_box(engine.run(&flow, store.clone(), &opts).await) }))
    });
    g.finish();
}

fn bench_load(c: &mut Criterion) {
    let engine = engine();
    // A 100-node document: the same actions repeated, as a large real flow file would be.
    let actions: Vec<serde_json::Value> = serde_json::from_str(NODE).expect("json");
    let many: Vec<serde_json::Value> = (0..100).flat_map(|_| actions.clone()).collect();
    let src = serde_json::to_string_pretty(&many).expect("json");
    let mut g = c.benchmark_group("load");
    g.throughput(Throughput::Bytes(src.len() as u64));
    // Dropping the compiled flow is not part of loading it: criterion drops it untimed.
    g.bench_function("load_and_compile_300_actions", |b| {
        b.iter_with_large_drop(|| engine.load(black_box(&src), "big.json").expect("loads"))
    });
    g.finish();
}

/// The repeated-expression flow of `scripts/gen-flow.py` (send_message and
/// set_variables alternating), at least `bytes` long.
fn generated_flow(bytes: usize) -> String {
    const PAIR: &str = r#"{"name": "send_message", "parameters": {"text": "Olá <? contact.name ?>, plano <? contact.extra.plano ?> #17"}},
{"name": "set_variables", "parameters": {"context": {"a": "<? $a + 1 ?>", "t": "<? $tag ?>-<? contact.cpf ?>"}}}"#;
    let mut s = String::with_capacity(bytes + PAIR.len() + 4);
    s.push_str("[\n");
    while s.len() < bytes {
        if s.len() > 2 {
            s.push_str(",\n");
        }
        s.push_str(PAIR);
    }
    s.push_str("\n]");
    s
}

/// Load + compile at the sizes real builders hold: throughput must not fall with size.
fn bench_load_sizes(c: &mut Criterion) {
    let engine = engine();
    let mut g = c.benchmark_group("load_sizes");
    g.sample_size(10);
    for (label, bytes) in [
        ("80KB", 80_000),
        ("1MB", 1_000_000),
        ("5MB", 5_000_000),
        ("20MB", 20_000_000),
    ] {
        let src = generated_flow(bytes);
        g.throughput(Throughput::Bytes(src.len() as u64));
        g.bench_function(label, |b| {
            b.iter_with_large_drop(|| engine.load(black_box(&src), "big.json").expect("loads"))
        });
    }
    g.finish();
}

/// Render-only of a 40,000-action flow (every parameter of every action).
fn bench_render_big(c: &mut Criterion) {
    let engine = engine();
    let src = generated_flow(4_600_000);
    let flow = engine.load(&src, "big.json").expect("loads");
    let store = Store::from_json(&serde_json::from_str(CONTEXT).expect("json")).expect("store");
    let mut g = c.benchmark_group("render_big");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flow.action_count() as u64));
    g.bench_function("4.6MB_flow_render_parameters", |b| {
        let mut missing = Vec::new();
        b.iter(|| {
            missing.clear();
            black_box(flow.render_parameters(black_box(&store), false, &mut missing))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_render,
    bench_load,
    bench_load_sizes,
    bench_render_big
);
criterion_main!(benches);
