//! Integration tests for the position-tracking JSON parser (`transbordo::flow::json`).

use std::time::Instant;

use serde_json::Value;
use transbordo::flow::json::{line_col, parse, JsonError, Node, NodeKind, Span};

/// Renders an error the way a person sees it: `line:col: message`, the source line, and
/// carets under the offending characters (at least one, even for end-of-input errors).
fn render(src: &str, e: &JsonError) -> String {
    let (line, col) = line_col(src, e.span.start);
    let text = src.split('\n').nth(line - 1).unwrap_or("");
    let text = text.strip_suffix('\r').unwrap_or(text);
    // Keep tabs in the padding so the caret lines up under tab-indented source.
    let pad: String = text
        .chars()
        .take(col - 1)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let (end_line, end_col) = line_col(src, e.span.end);
    let width = if end_line == line {
        end_col.saturating_sub(col).max(1)
    } else {
        text.chars().count().saturating_sub(col - 1).max(1)
    };
    // Control characters would make the snapshot unreadable; show them escaped.
    let shown: String = text
        .chars()
        .map(|c| {
            if c == '\t' {
                '\t'
            } else if c.is_control() {
                '?'
            } else {
                c
            }
        })
        .collect();
    format!(
        "{line}:{col}: {}\n{shown}\n{pad}{}\n",
        e.message,
        "^".repeat(width)
    )
}

#[test]
fn syntax_errors() {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    let _g = s.bind_to_scope();
    insta::glob!("fixtures/json/*.json", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let rendered = match parse(&src) {
            Ok(node) => format!("unexpectedly valid: {}", node.to_value()),
            Err(e) => {
                assert!(e.span.start <= e.span.end && e.span.end <= src.len());
                render(&src, &e)
            }
        };
        insta::assert_snapshot!(rendered);
    });
}

/// Valid, flow-like documents used by the round-trip and fuzz tests.
fn corpus() -> Vec<String> {
    let mut docs: Vec<String> = [
        "null",
        "0",
        "-12.5e-3",
        "\"\"",
        "[]",
        "{}",
        "\u{feff}[1]",
        r#"{"a": [1, 2, {"b": null, "c": [true, false]}], "d": "x\ty\u00e9\ud83d\ude00"}"#,
        r#"[
  {
    "type": "set_variable",
    "parameters": {"name": "greeting", "value": "Olá, <? contact.first_name ?>!"}
  },
  {
    "type": "start_live_chat",
    "parameters": {
      "provider": "zendesk",
      "subject": "Pedido <? context.order_id ?> \"urgente\"",
      "tags": ["vip", "bot"],
      "priority": 3,
      "timeout": 1.5e2,
      "fallback": null
    }
  }
]"#,
        r#"{"big": 123456789012345678901234567890, "neg": -9223372036854775809, "f": 0.1}"#,
        r#"{"dup": 1, "other": [], "dup": {"x": "y"}}"#,
        r#"["\\", "\/", "\b\f\n\r\t", "a\"b", "日本語"]"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    docs.push(flow_document(200));
    docs
}

/// A generated flow document with `n` actions, similar in shape to real flow files.
fn flow_document(n: usize) -> String {
    let mut s = String::from("[\n");
    for i in 0..n {
        if i > 0 {
            s.push_str(",\n");
        }
        s.push_str(&format!(
            r#"  {{
    "id": "step-{i}",
    "type": "start_live_chat",
    "parameters": {{
      "provider": "liveperson",
      "skill": "atendimento_{i}",
      "message": "Olá <? contact.name ?>, seu protocolo é <? context.protocol ?>.\nAguarde \"um momento\".",
      "priority": {i},
      "weight": {w},
      "enabled": true,
      "tags": ["bot", "handoff", "vip-{i}"],
      "metadata": {{"origin": "whatsapp", "retries": null}}
    }}
  }}"#,
            w = i as f64 / 7.0
        ));
    }
    s.push_str("\n]\n");
    s
}

/// Checks the span invariants of a parsed tree: children nested inside parents, strings
/// start with a quote, containers with their bracket.
fn check_spans(src: &str, node: &Node) {
    let Span { start, end } = node.span;
    assert!(start < end && end <= src.len());
    let text = &src[start..end];
    match &node.kind {
        NodeKind::String(_) => assert!(text.starts_with('"') && text.ends_with('"')),
        NodeKind::Array(items) => {
            assert!(text.starts_with('[') && text.ends_with(']'));
            for item in items {
                assert!(item.span.start > start && item.span.end < end);
                check_spans(src, item);
            }
        }
        NodeKind::Object(members) => {
            assert!(text.starts_with('{') && text.ends_with('}'));
            for m in members {
                assert!(m.key_span.start > start && m.key_span.end <= m.value.span.start);
                assert!(src[m.key_span.start..m.key_span.end].starts_with('"'));
                check_spans(src, &m.value);
            }
        }
        NodeKind::Null => assert_eq!(text, "null"),
        NodeKind::Bool(b) => assert_eq!(text, b.to_string()),
        NodeKind::Number(_) => {}
    }
}

#[test]
fn round_trip_matches_serde_json() {
    for doc in corpus() {
        let node = parse(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
        check_spans(&doc, &node);
        let theirs: Value = serde_json::from_str(doc.trim_start_matches('\u{feff}')).unwrap();
        let ours = node.to_value();
        assert_eq!(ours, theirs);
        // Same key order and number formatting, too.
        assert_eq!(ours.to_string(), theirs.to_string());
    }
}

#[test]
fn pointers_into_a_flow() {
    let doc = corpus()[8].clone();
    let root = parse(&doc).unwrap();
    let subject = root.pointer("/1/parameters/subject").unwrap();
    let (line, col) = line_col(&doc, subject.span.start);
    assert_eq!((line, col), (10, 18));
    let tag = root.pointer("/1/parameters/tags/1").unwrap();
    assert_eq!(tag.as_str(), Some("bot"));
    assert!(root.pointer("/1/parameters/tags/2").is_none());
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses arbitrary text: must not panic, errors must be in bounds, and acceptance must
/// agree with serde_json (same values when both accept).
fn check_any(src: &str) {
    match parse(src) {
        Ok(node) => {
            check_spans(src, &node);
            if !src.starts_with('\u{feff}') {
                let theirs: Value = serde_json::from_str(src)
                    .unwrap_or_else(|e| panic!("we accept what serde_json rejects ({e}): {src:?}"));
                assert_eq!(node.to_value(), theirs, "{src:?}");
            }
        }
        Err(e) => {
            assert!(
                e.span.start <= e.span.end && e.span.end <= src.len(),
                "span {:?} out of bounds for {src:?}",
                e.span
            );
            assert!(!e.message.is_empty());
            let _ = line_col(src, e.span.start);
            if !src.starts_with('\u{feff}') {
                assert!(
                    serde_json::from_str::<Value>(src).is_err(),
                    "we reject ({e}) what serde_json accepts: {src:?}"
                );
            }
        }
    }
}

#[test]
fn truncations_never_panic() {
    for doc in corpus().iter().take(12) {
        for cut in 0..=doc.len() {
            if let Some(prefix) = doc.get(..cut) {
                check_any(prefix);
            }
        }
    }
}

#[test]
fn mutations_never_panic() {
    const ALPHABET: &[u8] = b"{}[],:\"\\/ \n\tabefilnrstuTNx0123456789+-.eE'*\x00\x7f\xc3\xa9\xff";
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let docs = corpus();
    for round in 0..6_000 {
        let doc = &docs[round % 12];
        let mut bytes = doc.as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            let op = rng.below(3);
            let at = rng.below(bytes.len() + 1);
            let b = ALPHABET[rng.below(ALPHABET.len())];
            match op {
                0 if at < bytes.len() => bytes[at] = b,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        check_any(&text);
    }
    // Pure noise, too.
    for _ in 0..2_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        check_any(&String::from_utf8_lossy(&bytes));
    }
}

/// Throughput on a ~1 MB flow-like document. Run with
/// `cargo test --release --test json_parser -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let mut doc = flow_document(1);
    let mut n = 1;
    while doc.len() < 1_000_000 {
        n *= 2;
        doc = flow_document(n);
    }
    let doc = flow_document(n * 1_000_000 / doc.len());
    let runs = 50;
    // Warm up.
    let _ = parse(&doc).unwrap();
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(parse(std::hint::black_box(&doc)).unwrap());
    }
    let ours = t.elapsed().as_secs_f64() / runs as f64;
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(serde_json::from_str::<Value>(std::hint::black_box(&doc)).unwrap());
    }
    let theirs = t.elapsed().as_secs_f64() / runs as f64;
    let mb = doc.len() as f64 / 1e6;
    println!(
        "document {:.2} MB: flow::json {:.2} ms ({:.0} MB/s); serde_json::Value {:.2} ms ({:.0} MB/s)",
        mb,
        ours * 1e3,
        mb / ours,
        theirs * 1e3,
        mb / theirs
    );
}
