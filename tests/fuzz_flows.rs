//! Bad input never panics: random, truncated and mutated flow documents go through
//! load, check and (when they load) a dry run; every failure must be a clean diagnostic
//! whose position lies inside the document.

use transbordo::providers::Integrations;
use transbordo::{Engine, RunOptions, Store};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["examples", "tests/fixtures/load_errors"] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut entries: Vec<_> = std::fs::read_dir(&root)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.extension().and_then(|e| e.to_str()) == Some("json") {
                out.push(std::fs::read_to_string(&p).expect("readable"));
            }
        }
    }
    let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flows");
    let mut entries: Vec<_> = std::fs::read_dir(&flows)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("readable")).expect("json");
        out.push(serde_json::to_string_pretty(&v["flow"]).expect("json"));
    }
    out
}

const NOISE: &[&str] = &[
    "<?",
    "?>",
    "\\<?",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "'",
    "$",
    "#",
    "@",
    "|",
    "(",
    ")",
    ".",
    "\\",
    "é",
    "\u{1F600}",
    "null",
    "1e999",
    "-",
    "??",
    "/",
    "\n",
];

fn mutate(rng: &mut XorShift, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(3) {
            0 if !chars.is_empty() => {
                let end = (at + 1 + rng.below(6)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            _ => {
                let noise = NOISE[rng.below(NOISE.len())];
                for (i, c) in noise.chars().enumerate() {
                    chars.insert((at + i).min(chars.len()), c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

#[tokio::test]
async fn random_and_truncated_flows_fail_cleanly() {
    let integrations_src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/integrations.toml"
    ))
    .expect("fixture");
    let engine = Engine::new().with_integrations(
        Integrations::from_toml_str(&integrations_src, "i.toml").expect("loads"),
    );
    let store = Store::from_json(
        &serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/context.json"
            ))
            .expect("ctx"),
        )
        .expect("json"),
    )
    .expect("store");
    let mut rng = XorShift(0x5EED_1234_ABCD_0001);
    let mut inputs = Vec::new();
    for doc in corpus() {
        // Every truncation point of the document (stepping to stay fast on big files).
        let cuts: Vec<usize> = doc.char_indices().map(|(i, _)| i).collect();
        let step = (cuts.len() / 60).max(1);
        for &cut in cuts.iter().step_by(step) {
            inputs.push(doc[..cut].to_string());
        }
        for _ in 0..150 {
            inputs.push(mutate(&mut rng, &doc));
        }
    }
    let (mut loaded, mut refused) = (0, 0);
    for src in &inputs {
        let diags = engine.check(src, "fuzz.json", None);
        for d in &diags {
            assert!(
                d.span.0 <= src.len(),
                "span outside the document: {d:?}\n{src}"
            );
            assert!(d.line >= 1 && d.column >= 1, "{d:?}");
            assert!(!d.message.is_empty());
        }
        match engine.load(src, "fuzz.json") {
            Ok(flow) => {
                loaded += 1;
                for strict in [false, true] {
                    let out = engine
                        .run(
                            &flow,
                            store.clone(),
                            &RunOptions {
                                strict,
                                dry_run: true,
                                trace: true,
                                ..RunOptions::default()
                            },
                        )
                        .await;
                    assert_eq!(out.trace.len(), flow.action_count());
                }
            }
            Err(e) => {
                refused += 1;
                assert!(e
                    .diagnostics
                    .iter()
                    .any(|d| d.severity == transbordo::Severity::Error));
            }
        }
    }
    // The corpus mixes both outcomes: a test that never loads (or never refuses) proves little.
    assert!(
        loaded > 50 && refused > 500,
        "loaded {loaded}, refused {refused}"
    );
}
