//! An actions array past the pipelining size (512 KB) is parsed on a second thread
//! while the loader compiles: it must report exactly what the same problems report in
//! a small flow (loaded on one thread), at the same places, and stop cleanly on a
//! syntax error.

use transbordo::{Diagnostic, Engine};

const PLAIN: &str = r#"{"name":"send_message","parameters":{"text":"Olá <? contact.name ?>, plano <? contact.extra.plano ?>"}}"#;

/// A flow of `n` plain actions (one per line, from line 2) with `problems` put at
/// their indexes.
fn flow(n: usize, problems: &[(usize, &str)]) -> String {
    let mut items = vec![PLAIN; n];
    for (i, p) in problems {
        items[*i] = p;
    }
    format!("[\n{}\n]", items.join(",\n"))
}

/// What a person reads of each diagnostic, with the line made relative to the action.
fn seen(diags: &[Diagnostic], first: usize) -> Vec<(String, String, String, usize, usize)> {
    diags
        .iter()
        .map(|d| {
            let pointer = d
                .pointer
                .split_once('/')
                .and_then(|(_, rest)| rest.split_once('/'))
                .map_or(String::new(), |(_, rest)| format!("/{rest}"));
            (
                d.code.to_string(),
                d.message.clone(),
                pointer,
                d.line.saturating_sub(first),
                d.column,
            )
        })
        .collect()
}

#[test]
fn a_large_flow_reports_what_a_small_one_reports() {
    let engine = Engine::new();
    let unknown = r#"{"name":"send_mesage","parameters":{"text":"x"}}"#;
    let duplicate = r#"{"name":"x","name":"send_message","parameters":{"text":"<? $nunca ?>"}}"#;
    let bad_template = r#"{"name":"send_message","parameters":{"text":"<? contact.name + ?>"}}"#;

    let small = flow(10, &[(3, unknown), (5, duplicate), (7, bad_template)]);
    let large = flow(
        9000,
        &[(5000, unknown), (7000, duplicate), (8500, bad_template)],
    );
    assert!(large.len() > 512 * 1024, "{} bytes", large.len());

    let small_diags = engine.check(&small, "flow.json", None);
    let large_diags = engine.check(&large, "flow.json", None);
    assert_eq!(small_diags.len(), 4, "{small_diags:#?}");
    // Same problems, same messages and columns, each on its action's line.
    let codes: Vec<&str> = large_diags.iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        [
            "flow::unknown_action",
            "json::duplicate_key",
            "flow::unset_variable",
            "template::syntax"
        ]
    );
    let lines: Vec<usize> = large_diags.iter().map(|d| d.line).collect();
    assert_eq!(lines, [5002, 7002, 7002, 8502]);
    let pointers: Vec<&str> = large_diags.iter().map(|d| d.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/5000/name",
            "/7000/name",
            "/7000/parameters/text",
            "/8500/parameters/text"
        ]
    );
    let small_seen: Vec<_> = seen(&small_diags, 0)
        .into_iter()
        .zip([5, 7, 7, 9])
        .map(|(mut s, line)| {
            s.3 -= line;
            s
        })
        .collect();
    let large_seen: Vec<_> = seen(&large_diags, 0)
        .into_iter()
        .zip([5002, 7002, 7002, 8502])
        .map(|(mut s, line)| {
            s.3 -= line;
            s
        })
        .collect();
    assert_eq!(large_seen, small_seen);
}

#[test]
fn a_syntax_error_deep_in_a_large_flow_is_placed_like_in_a_small_one() {
    let engine = Engine::new();
    let broken = r#"{"name":"send_message","parameters":{"text":"x",}}"#;
    let small = flow(10, &[(6, broken)]);
    let large = flow(9000, &[(8000, broken)]);
    let small_diags = engine.check(&small, "flow.json", None);
    let large_diags = engine.check(&large, "flow.json", None);
    assert_eq!(large_diags.len(), 1, "{large_diags:#?}");
    assert_eq!(small_diags.len(), 1, "{small_diags:#?}");
    let (s, l) = (&small_diags[0], &large_diags[0]);
    assert_eq!(l.code, "json::syntax");
    assert_eq!(
        (l.code, &l.message, l.column),
        (s.code, &s.message, s.column)
    );
    assert_eq!((s.line, l.line), (8, 8002));
    // A load stops at the error: nothing after it is compiled or reported.
    let load = engine
        .load(&large, "flow.json")
        .expect_err("a syntax error");
    assert_eq!(load.diagnostics.len(), 1);
}

#[test]
fn a_large_flow_loads_every_action_in_order() {
    let engine = Engine::new();
    let item = |i: usize| {
        if i.is_multiple_of(2) {
            format!(
                r#"{{"name":"send_message","parameters":{{"text":"<? contact.name + ' #{i}' ?>"}}}}"#
            )
        } else {
            format!(
                r#"{{"name":"set_variables","parameters":{{"context":{{"n":"<? $n + {i} ?>"}}}}}}"#
            )
        }
    };
    let src = format!("[{}]", (0..9000).map(item).collect::<Vec<_>>().join(","));
    assert!(src.len() > 512 * 1024);
    let flow = engine.load(&src, "flow.json").expect("loads");
    assert_eq!(flow.action_count(), 9000);
    let store = transbordo::Store::from_json(&serde_json::json!({
        "contact": {"name": "Ana"},
        "context": {"n": 1}
    }))
    .expect("store");
    let mut missing = Vec::new();
    let rendered = flow.render_parameters(&store, true, &mut missing);
    for (i, r) in rendered.iter().enumerate() {
        let want = if i.is_multiple_of(2) {
            serde_json::json!({"text": format!("Ana #{i}")})
        } else {
            serde_json::json!({"context": {"n": 1 + i}})
        };
        assert_eq!(r.as_ref().ok(), Some(&want), "action {i}");
    }
    assert!(missing.is_empty());
}
