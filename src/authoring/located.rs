//! A JSON or TOML document that remembers where each value came from, so a test failure
//! can name the line and column of the expectation that did not hold.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use toml::de::{DeTable, DeValue};

use crate::flow::json::{self, escape_pointer_token, Node, NodeKind};

/// A parsed document: its value and the byte offset of every value by JSON pointer.
#[derive(Debug, Clone)]
pub struct Located {
    /// The document as JSON.
    pub value: Value,
    /// The source text.
    pub source: String,
    offsets: HashMap<String, usize>,
}

/// Why a document could not be read: message and 1-based line:column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
}

impl Located {
    /// Parses JSON (with positions).
    pub fn json(source: &str) -> Result<Located, SyntaxError> {
        let node = json::parse(source).map_err(|e| {
            let (line, column) = json::line_col(source, e.span.start);
            SyntaxError {
                message: e.message,
                line,
                column,
            }
        })?;
        let mut offsets = HashMap::new();
        index_json(&node, String::new(), &mut offsets);
        Ok(Located {
            value: node.to_value(),
            source: source.to_string(),
            offsets,
        })
    }

    /// Parses TOML (with positions); dates become their RFC 3339 text.
    pub fn toml(source: &str) -> Result<Located, SyntaxError> {
        let table = DeTable::parse(source).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let (line, column) = json::line_col(source, at);
            SyntaxError {
                message: e.message().to_string(),
                line,
                column,
            }
        })?;
        let mut offsets = HashMap::new();
        offsets.insert(String::new(), table.span().start);
        let value = toml_table(table.get_ref(), "", &mut offsets)?;
        Ok(Located {
            value,
            source: source.to_string(),
            offsets,
        })
    }

    /// Line and column (1-based) of the value at `pointer`, or of its closest ancestor
    /// that exists in the source.
    pub fn line_col(&self, pointer: &str) -> (usize, usize) {
        let mut p = pointer;
        loop {
            if let Some(&at) = self.offsets.get(p) {
                return json::line_col(&self.source, at);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return (1, 1),
            }
        }
    }
}

fn index_json(node: &Node, ptr: String, out: &mut HashMap<String, usize>) {
    match &node.kind {
        NodeKind::Array(items) => {
            for (i, n) in items.iter().enumerate() {
                index_json(n, format!("{ptr}/{i}"), out);
            }
        }
        NodeKind::Object(members) => {
            for m in members {
                index_json(
                    &m.value,
                    format!("{ptr}/{}", escape_pointer_token(&m.key)),
                    out,
                );
            }
        }
        _ => {}
    }
    out.insert(ptr, node.span.start);
}

fn toml_table(
    t: &DeTable<'_>,
    ptr: &str,
    out: &mut HashMap<String, usize>,
) -> Result<Value, SyntaxError> {
    let mut m = Map::new();
    for (k, v) in t.iter() {
        let p = format!("{ptr}/{}", escape_pointer_token(k.get_ref()));
        out.insert(p.clone(), v.span().start);
        m.insert(k.get_ref().to_string(), toml_value(v.get_ref(), &p, out)?);
    }
    Ok(Value::Object(m))
}

fn toml_value(
    v: &DeValue<'_>,
    ptr: &str,
    out: &mut HashMap<String, usize>,
) -> Result<Value, SyntaxError> {
    let bad = |what: &str| SyntaxError {
        message: format!("{what} at {ptr} cannot be represented in JSON"),
        line: 1,
        column: 1,
    };
    Ok(match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| bad("an integer"))?;
            Value::Number(n.into())
        }
        DeValue::Float(f) => {
            let x: f64 = f.as_str().parse().map_err(|_| bad("a float"))?;
            Value::Number(Number::from_f64(x).ok_or_else(|| bad("a non-finite float"))?)
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(a) => {
            let mut items = Vec::new();
            for (i, x) in a.iter().enumerate() {
                let p = format!("{ptr}/{i}");
                out.insert(p.clone(), x.span().start);
                items.push(toml_value(x.get_ref(), &p, out)?);
            }
            Value::Array(items)
        }
        DeValue::Table(t) => toml_table(t, ptr, out)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_positions() {
        let d = Located::json("{\n  \"a\": [1, {\"b\": true}]\n}").unwrap();
        assert_eq!(d.line_col("/a/1/b"), (2, 18));
        assert_eq!(d.line_col("/a/1/missing"), (2, 12));
    }

    #[test]
    fn toml_positions_and_values() {
        let d = Located::toml("flow = \"f.json\"\n[[cases]]\nname = \"x\"\nn = 1_000\n").unwrap();
        assert_eq!(d.value["cases"][0]["n"], 1000);
        assert_eq!(d.line_col("/cases/0/name"), (3, 8));
    }
}
