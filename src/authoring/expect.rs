//! Matching a dry run against what a flow test expects.
//!
//! - **Objects** match as a subset: every expected key must be present and match; keys
//!   the expectation does not name are ignored.
//! - **Arrays** match element by element and must have the same length, except that an
//!   element `"…"` (or `"..."`) stands for any number of elements, none included:
//!   `[X, "…"]` starts with X, `["…", X]` ends with X, `["…", X, "…"]` contains X.
//! - **Scalars** are equal (numbers by value: `1` matches `1.0`).
//! - Wildcards as values: `"…"` (or `"..."`) is any value, present;
//!   `{"$regex": "^dry-run-"}` is a string that the regular expression matches;
//!   `{"$absent": true}` says the key must not be there.
//!
//! A string that merely contains `…` (`"Aguarde…"`) is an ordinary string.

use regex::Regex;
use serde_json::Value;

use crate::flow::json::escape_pointer_token;
use crate::providers::call::type_name;

/// One way the actual document differs from the expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// JSON pointer into the actual document (`/requests/3/body/skillId`).
    pub pointer: String,
    /// JSON pointer into the expectation (for its line:column in the test file).
    pub expected_pointer: String,
    /// What was expected, as the test file says it; `None` when nothing was (a new key
    /// or element in a snapshot comparison).
    pub expected: Option<Value>,
    /// What the dry run produced; `None` when the key or element is missing.
    pub got: Option<Value>,
    /// A short explanation (`missing key`, `2 elements, expected 3`, …).
    pub note: String,
}

/// Is `v` the "any value" wildcard?
pub fn is_wildcard(v: &Value) -> bool {
    matches!(v, Value::String(s) if s == "…" || s == "...")
}

/// Compares `actual` with `expected` and lists every difference (empty: it matches).
/// `actual_ptr` and `expected_ptr` are the pointers of the two values in their documents.
pub fn compare(
    expected: &Value,
    actual: &Value,
    expected_ptr: &str,
    actual_ptr: &str,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    walk(expected, Some(actual), expected_ptr, actual_ptr, &mut out);
    out
}

fn mismatch(
    out: &mut Vec<Mismatch>,
    expected: &Value,
    got: Option<&Value>,
    ep: &str,
    ap: &str,
    note: impl Into<String>,
) {
    out.push(Mismatch {
        pointer: ap.to_string(),
        expected_pointer: ep.to_string(),
        expected: Some(expected.clone()),
        got: got.cloned(),
        note: note.into(),
    });
}

/// The operator object (`{"$regex": …}`, `{"$absent": …}`), if `v` is one.
fn operator(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    let (k, x) = o.iter().next()?;
    matches!(k.as_str(), "$regex" | "$absent").then_some((k.as_str(), x))
}

fn walk(expected: &Value, actual: Option<&Value>, ep: &str, ap: &str, out: &mut Vec<Mismatch>) {
    if let Some((op, arg)) = operator(expected) {
        match op {
            "$absent" => {
                let want_absent = arg.as_bool().unwrap_or(true);
                if want_absent && actual.is_some() {
                    mismatch(out, expected, actual, ep, ap, "expected no value here");
                } else if !want_absent && actual.is_none() {
                    mismatch(out, expected, actual, ep, ap, "missing");
                }
            }
            _ => match (arg.as_str().map(Regex::new), actual) {
                (Some(Ok(re)), Some(Value::String(s))) if re.is_match(s) => {}
                (Some(Ok(_)), got) => {
                    mismatch(out, expected, got, ep, ap, "does not match the pattern")
                }
                (Some(Err(e)), got) => mismatch(
                    out,
                    expected,
                    got,
                    ep,
                    ap,
                    format!("invalid regular expression: {e}"),
                ),
                (None, got) => mismatch(
                    out,
                    expected,
                    got,
                    ep,
                    ap,
                    "`$regex` needs a string pattern",
                ),
            },
        }
        return;
    }
    let Some(actual) = actual else {
        mismatch(out, expected, None, ep, ap, "missing");
        return;
    };
    if is_wildcard(expected) {
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let tok = escape_pointer_token(k);
                walk(
                    ev,
                    a.get(k),
                    &format!("{ep}/{tok}"),
                    &format!("{ap}/{tok}"),
                    out,
                );
            }
        }
        (Value::Array(e), Value::Array(a)) => compare_arrays(e, a, ep, ap, out),
        (Value::Number(x), Value::Number(y)) => {
            let same = match (x.as_i64(), y.as_i64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            };
            if !same {
                mismatch(out, expected, Some(actual), ep, ap, "different value");
            }
        }
        (e, a) if e == a => {}
        (e, a) if type_name(e) != type_name(a) => mismatch(
            out,
            expected,
            Some(actual),
            ep,
            ap,
            format!("expected {}, got {}", type_name(e), type_name(a)),
        ),
        _ => mismatch(out, expected, Some(actual), ep, ap, "different value"),
    }
}

/// Arrays with `"…"` runs: the first alignment that matches wins; when none does, the
/// differences reported are those of the element-by-element alignment (or a length note).
fn compare_arrays(e: &[Value], a: &[Value], ep: &str, ap: &str, out: &mut Vec<Mismatch>) {
    if !e.iter().any(is_wildcard) {
        if e.len() != a.len() {
            mismatch(
                out,
                &Value::Array(e.to_vec()),
                Some(&Value::Array(a.to_vec())),
                ep,
                ap,
                format!(
                    "{} element(s), expected {} (use \"…\" for any number of elements)",
                    a.len(),
                    e.len()
                ),
            );
            return;
        }
        for (i, (x, y)) in e.iter().zip(a).enumerate() {
            walk(x, Some(y), &format!("{ep}/{i}"), &format!("{ap}/{i}"), out);
        }
        return;
    }
    if matches_from(e, 0, a, 0) {
        return;
    }
    explain_runs(e, a, ep, ap, out);
}

/// Why an array with `"…"` runs does not match, as precisely as can be told: the fixed
/// elements before the first run and after the last are compared by position; a single
/// element between runs is compared with the closest actual element.
fn explain_runs(e: &[Value], a: &[Value], ep: &str, ap: &str, out: &mut Vec<Mismatch>) {
    let before = out.len();
    let first = e.iter().position(is_wildcard).unwrap_or(e.len());
    let last = e.iter().rposition(is_wildcard).unwrap_or(0);
    let (head, tail) = (&e[..first], &e[last + 1..]);
    if head.len() + tail.len() <= a.len() {
        for (i, x) in head.iter().enumerate() {
            walk(x, a.get(i), &format!("{ep}/{i}"), &format!("{ap}/{i}"), out);
        }
        for (k, x) in tail.iter().enumerate() {
            let (ei, ai) = (last + 1 + k, a.len() - tail.len() + k);
            walk(
                x,
                a.get(ai),
                &format!("{ep}/{ei}"),
                &format!("{ap}/{ai}"),
                out,
            );
        }
        let middle: Vec<(usize, &Value)> = e
            .iter()
            .enumerate()
            .take(last)
            .skip(first)
            .filter(|(_, x)| !is_wildcard(x))
            .collect();
        if out.len() == before {
            if let [(ei, x)] = middle[..] {
                let window = &a[head.len()..a.len() - tail.len()];
                let closest = window
                    .iter()
                    .enumerate()
                    .map(|(j, y)| {
                        let aj = head.len() + j;
                        (
                            compare(x, y, &format!("{ep}/{ei}"), &format!("{ap}/{aj}")),
                            aj,
                        )
                    })
                    // Fewest differences, then the deepest ones: an element that
                    // differs only in a leaf is closer than one of another shape.
                    .min_by_key(|(m, _)| {
                        let depth: usize = m.iter().map(|x| x.pointer.matches('/').count()).sum();
                        (m.len(), std::cmp::Reverse(depth))
                    });
                if let Some((ms, _)) = closest {
                    for mut m in ms {
                        m.note = format!("{} (closest element)", m.note);
                        out.push(m);
                    }
                }
            }
        }
    }
    if out.len() == before {
        mismatch(
            out,
            &Value::Array(e.to_vec()),
            Some(&Value::Array(a.to_vec())),
            ep,
            ap,
            "no elements match the expected sequence",
        );
    }
}

/// Does `e[i..]` (with `"…"` runs) match `a[j..]` exactly?
fn matches_from(e: &[Value], i: usize, a: &[Value], j: usize) -> bool {
    if i == e.len() {
        return j == a.len();
    }
    if is_wildcard(&e[i]) {
        return (j..=a.len()).any(|k| matches_from(e, i + 1, a, k));
    }
    j < a.len() && compare(&e[i], &a[j], "", "").is_empty() && matches_from(e, i + 1, a, j + 1)
}

/// Every difference between a stored document and the actual one, exactly (no subset,
/// no wildcards): changed values, keys or elements missing on either side.
pub fn diff_exact(stored: &Value, actual: &Value, ptr: &str, out: &mut Vec<Mismatch>) {
    match (stored, actual) {
        (Value::Object(s), Value::Object(a)) => {
            for (k, sv) in s {
                let p = format!("{ptr}/{}", escape_pointer_token(k));
                match a.get(k) {
                    Some(av) => diff_exact(sv, av, &p, out),
                    None => mismatch(out, sv, None, &p, &p, "no longer produced"),
                }
            }
            for (k, av) in a {
                if !s.contains_key(k) {
                    let p = format!("{ptr}/{}", escape_pointer_token(k));
                    out.push(Mismatch {
                        pointer: p.clone(),
                        expected_pointer: ptr.to_string(),
                        expected: None,
                        got: Some(av.clone()),
                        note: "new key, not in the snapshot".into(),
                    });
                }
            }
        }
        (Value::Array(s), Value::Array(a)) => {
            for (i, sv) in s.iter().enumerate() {
                let p = format!("{ptr}/{i}");
                match a.get(i) {
                    Some(av) => diff_exact(sv, av, &p, out),
                    None => mismatch(out, sv, None, &p, &p, "no longer produced"),
                }
            }
            for (i, av) in a.iter().enumerate().skip(s.len()) {
                out.push(Mismatch {
                    pointer: format!("{ptr}/{i}"),
                    expected_pointer: ptr.to_string(),
                    expected: None,
                    got: Some(av.clone()),
                    note: "new element, not in the snapshot".into(),
                });
            }
        }
        (s, a) if s == a => {}
        (s, a) => mismatch(out, s, Some(a), ptr, ptr, "changed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(e: Value, a: Value) -> bool {
        compare(&e, &a, "", "").is_empty()
    }

    #[test]
    fn objects_are_subsets() {
        assert!(ok(json!({"a": 1}), json!({"a": 1.0, "b": 2})));
        let m = compare(&json!({"a": {"c": 3}}), &json!({"a": {"c": 4}}), "/x", "");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].pointer, "/a/c");
        assert_eq!(m[0].expected_pointer, "/x/a/c");
        assert_eq!(m[0].got, Some(json!(4)));
    }

    #[test]
    fn arrays_by_position_with_runs() {
        assert!(ok(json!([1, 2]), json!([1, 2])));
        assert!(!ok(json!([1]), json!([1, 2])));
        assert!(ok(json!([1, "…"]), json!([1, 2, 3])));
        assert!(ok(json!(["…", 3]), json!([1, 2, 3])));
        assert!(ok(
            json!(["...", {"k": 2}, "…"]),
            json!([{"k": 1}, {"k": 2, "z": 0}, 5])
        ));
        assert!(!ok(json!(["…", 9, "…"]), json!([1, 2, 3])));
        assert!(ok(json!(["…"]), json!([])));
    }

    #[test]
    fn runs_explain_the_closest_element() {
        let m = compare(
            &json!(["…", {"k": 2, "z": 1}, "…"]),
            &json!([{"k": 1}, {"k": 2, "z": 0}, 5]),
            "/e",
            "",
        );
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(
            (m[0].pointer.as_str(), m[0].expected_pointer.as_str()),
            ("/1/z", "/e/1/z")
        );
        assert!(m[0].note.contains("closest"));
        let m = compare(&json!([{"t": "a"}, "…"]), &json!([{"t": "b"}, 1]), "", "");
        assert_eq!(m[0].pointer, "/0/t");
    }

    #[test]
    fn wildcards_and_operators() {
        assert!(ok(json!({"a": "…"}), json!({"a": null})));
        assert!(!ok(json!({"a": "…"}), json!({})));
        assert!(ok(json!({"a": "Aguarde…"}), json!({"a": "Aguarde…"})));
        assert!(!ok(json!({"a": "Aguarde…"}), json!({"a": "Aguarde"})));
        assert!(ok(
            json!({"id": {"$regex": "^dry-run-"}}),
            json!({"id": "dry-run-0"})
        ));
        assert!(!ok(json!({"id": {"$regex": "^x"}}), json!({"id": 1})));
        assert!(ok(json!({"x": {"$absent": true}}), json!({"y": 1})));
        assert!(!ok(json!({"x": {"$absent": true}}), json!({"x": 1})));
    }
}
