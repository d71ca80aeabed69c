//! Evaluation: the one minijinja [`Environment`] every expression is compiled in, the
//! JavaScript-semantics functions that lowered expressions call, and the zero-copy
//! view of the JSON store that expressions read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use minijinja::value::{Enumerator, Object, ObjectRepr, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

use super::ast::BinOp;
use super::budget::{self, NODE_BYTES, REGEX_WORK_PER_BYTE};

/// Fuel for one expression evaluation (minijinja instructions): ample for any real
/// flow expression, small enough that a runaway one fails in well under a millisecond.
pub const FUEL: u64 = 20_000;

/// The longest string an expression may build, in bytes.
pub const MAX_STRING_BYTES: usize = 1 << 20;

/// The shared environment: compiled expressions borrow it for `'static`.
pub(crate) static ENV: LazyLock<Environment<'static>> = LazyLock::new(build_env);

thread_local! {
    static STATE: RefCell<EvalState> = RefCell::new(EvalState::default());
    static REGEX_CACHE: RefCell<HashMap<(String, String), Arc<regex::Regex>>> = RefCell::new(HashMap::new());
}

/// Per-evaluation bookkeeping shared with the `js_read` function.
#[derive(Default)]
struct EvalState {
    strict: bool,
    missing: Vec<u32>,
    failed_read: Option<u32>,
}

/// Prepares the thread for one evaluation.
pub(crate) fn begin(strict: bool) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.strict = strict;
        s.missing.clear();
        s.failed_read = None;
    });
}

/// Collects what `js_read` recorded: the ids of missing reads, and the read that
/// failed in strict mode.
pub(crate) fn finish(missing: &mut Vec<u32>) -> Option<u32> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        for id in s.missing.drain(..) {
            if !missing.contains(&id) {
                missing.push(id);
            }
        }
        s.failed_read.take()
    })
}

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// The error of a spent run budget (its message names the budget).
pub(crate) fn budget_error() -> Error {
    err(budget::spent_message()
        .unwrap_or_else(|| format!("{}evaluation stopped", budget::BUDGET_PREFIX)))
}

/// Charges a value of `n` bytes about to be built by copying (bytes and work).
#[inline]
fn charge_build(n: usize) -> Result<(), Error> {
    if budget::build(n as u64 + NODE_BYTES) {
        Ok(())
    } else {
        Err(budget_error())
    }
}

/// Charges `n` bytes about to be built without a copy of as many bytes (the work is
/// charged separately).
#[inline]
fn charge_bytes(n: u64) -> Result<(), Error> {
    if budget::bytes(n) {
        Ok(())
    } else {
        Err(budget_error())
    }
}

/// Charges `n` units of work (bytes scanned) about to be done.
#[inline]
fn charge_work(n: u64) -> Result<(), Error> {
    if budget::work(n) {
        Ok(())
    } else {
        Err(budget_error())
    }
}

/// Fails when the run budget was spent while `f` ran (conversions such as [`to_json`]
/// stop building when it is, and leave the failure to be found here).
fn unless_spent(v: Value) -> Result<Value, Error> {
    if budget::is_spent() {
        Err(budget_error())
    } else {
        Ok(v)
    }
}

fn build_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(100);
    env.set_debug(false);

    env.add_function("js_read", |v: Value, id: u32| -> Result<Value, Error> {
        if v.is_undefined() {
            let strict = STATE.with(|s| {
                let mut s = s.borrow_mut();
                if s.strict {
                    s.failed_read = Some(id);
                } else {
                    s.missing.push(id);
                }
                s.strict
            });
            if strict {
                return Err(err("undefined value"));
            }
        }
        Ok(v)
    });
    env.add_function("js_undefined", || Value::UNDEFINED);
    env.add_function("js_charged", |v: Value| -> Result<Value, Error> {
        match v.kind() {
            ValueKind::String => charge_build(v.as_str().map_or(0, str::len))?,
            ValueKind::Seq | ValueKind::Map => {
                charge_build(v.len().unwrap_or(0).saturating_mul(NODE_BYTES as usize))?
            }
            _ => {}
        }
        Ok(v)
    });
    env.add_function("js_truthy", |v: Value| truthy(&v));
    env.add_function("js_present", |v: Value| !v.is_undefined() && !v.is_none());
    env.add_function("js_tv", |v: Value| {
        Value::from_object(Tested {
            pass: truthy(&v),
            value: v,
        })
    });
    env.add_function("js_tp", |v: Value| {
        Value::from_object(Tested {
            pass: !v.is_undefined() && !v.is_none(),
            value: v,
        })
    });
    env.add_function("js_unwrap", |v: Value| {
        match v.downcast_object_ref::<Tested>() {
            Some(t) => t.value.clone(),
            None => v,
        }
    });
    env.add_function("js_get", |v: Value, k: Value| get(&v, &k));
    env.add_function("js_length", |v: Value| length(&v));

    // operators; `js_add` takes a whole left-associative chain (`a + b + c` is one call),
    // so a long sum is flat in the lowered source and only real nesting counts.
    env.add_function("js_add", |operands: Rest<Value>| add_chain(&operands));
    env.add_function("js_sub", |a: Value, b: Value| binary(BinOp::Sub, &a, &b));
    env.add_function("js_mul", |a: Value, b: Value| binary(BinOp::Mul, &a, &b));
    env.add_function("js_div", |a: Value, b: Value| binary(BinOp::Div, &a, &b));
    env.add_function("js_rem", |a: Value, b: Value| binary(BinOp::Rem, &a, &b));
    env.add_function("js_neg", |a: Value| num(-to_number(&a)));
    env.add_function("js_eq", |a: Value, b: Value| binary(BinOp::Eq, &a, &b));
    env.add_function("js_ne", |a: Value, b: Value| binary(BinOp::Ne, &a, &b));
    env.add_function("js_seq", |a: Value, b: Value| {
        binary(BinOp::StrictEq, &a, &b)
    });
    env.add_function("js_sne", |a: Value, b: Value| {
        binary(BinOp::StrictNe, &a, &b)
    });
    env.add_function("js_lt", |a: Value, b: Value| binary(BinOp::Lt, &a, &b));
    env.add_function("js_le", |a: Value, b: Value| binary(BinOp::Le, &a, &b));
    env.add_function("js_gt", |a: Value, b: Value| binary(BinOp::Gt, &a, &b));
    env.add_function("js_ge", |a: Value, b: Value| binary(BinOp::Ge, &a, &b));

    // methods
    env.add_function("js_upper", |v: Value| {
        str_method(&v, "toUpperCase", |s| {
            charge_build(s.len())?;
            Ok(Value::from(s.to_uppercase()))
        })
    });
    env.add_function("js_lower", |v: Value| {
        str_method(&v, "toLowerCase", |s| {
            charge_build(s.len())?;
            Ok(Value::from(s.to_lowercase()))
        })
    });
    env.add_function("js_trim", |v: Value| {
        str_method(&v, "trim", |s| {
            charge_build(s.trim().len())?;
            Ok(Value::from(s.trim()))
        })
    });
    env.add_function("js_starts_with", |v: Value, x: Value| {
        str_method(&v, "startsWith", |s| {
            let x = to_js_string(&x);
            charge_work(x.len() as u64)?;
            Ok(Value::from(s.starts_with(x.as_str())))
        })
    });
    env.add_function("js_ends_with", |v: Value, x: Value| {
        str_method(&v, "endsWith", |s| {
            let x = to_js_string(&x);
            charge_work(x.len() as u64)?;
            Ok(Value::from(s.ends_with(x.as_str())))
        })
    });
    env.add_function(
        "js_includes",
        |v: Value, x: Value| -> Result<Value, Error> {
            match v.kind() {
                ValueKind::String => {
                    let s = v.as_str().unwrap_or("");
                    charge_work(s.len() as u64)?;
                    Ok(Value::from(s.contains(to_js_string(&x).as_str())))
                }
                ValueKind::Seq => Ok(Value::from(seq(&v)?.iter().any(|e| same_value_zero(e, &x)))),
                _ => Err(not_a_function(&v, "includes")),
            }
        },
    );
    env.add_function(
        "js_index_of",
        |v: Value, x: Value| -> Result<Value, Error> {
            match v.kind() {
                ValueKind::String => {
                    let s = v.as_str().unwrap_or("");
                    charge_work(s.len() as u64)?;
                    let needle = to_js_string(&x);
                    Ok(Value::from(match s.find(needle.as_str()) {
                        Some(byte) => utf16_len(&s[..byte]) as i64,
                        None => -1,
                    }))
                }
                ValueKind::Seq => Ok(Value::from(
                    seq(&v)?
                        .iter()
                        .position(|e| strict_eq(e, &x))
                        .map_or(-1, |p| p as i64),
                )),
                _ => Err(not_a_function(&v, "indexOf")),
            }
        },
    );
    env.add_function("js_split", |v: Value, rest: Rest<Value>| {
        let sep = opt_arg(&rest, 0);
        str_method(&v, "split", |s| {
            // Counted first (work), so the parts are charged before any is built.
            charge_work(s.len() as u64)?;
            let sep = sep
                .filter(|sep| !sep.is_undefined())
                .map(|sep| to_js_string(&sep));
            let count = match &sep {
                None => 1,
                Some(sep) if sep.is_empty() => s.chars().count(),
                Some(sep) => s.matches(sep.as_str()).count() + 1,
            };
            charge_build(s.len())?;
            charge_bytes(count as u64 * NODE_BYTES)?;
            let parts: Vec<Value> = match &sep {
                None => vec![Value::from(s)],
                Some(sep) => {
                    if sep.is_empty() {
                        s.chars().map(|c| Value::from(c.to_string())).collect()
                    } else {
                        s.split(sep.as_str()).map(Value::from).collect()
                    }
                }
            };
            Ok(Value::from(parts))
        })
    });
    env.add_function(
        "js_join",
        |v: Value, rest: Rest<Value>| -> Result<Value, Error> {
            let sep = opt_arg(&rest, 0);
            if v.kind() != ValueKind::Seq {
                return Err(not_a_function(&v, "join"));
            }
            let sep = match &sep {
                Some(s) if !s.is_undefined() => to_js_string(s),
                _ => ",".to_string(),
            };
            let mut out = String::new();
            for (i, e) in seq(&v)?.iter().enumerate() {
                charge_work(sep.len() as u64 + 1)?;
                if i > 0 {
                    out.push_str(&sep);
                }
                if !e.is_undefined() && !e.is_none() {
                    let piece = to_js_string(e);
                    charge_build(piece.len() + sep.len())?;
                    out.push_str(&piece);
                }
                if out.len() > MAX_STRING_BYTES {
                    return Err(limit_error());
                }
            }
            Ok(Value::from(out))
        },
    );
    env.add_function("js_replace", |v: Value, a: Value, b: Value| {
        str_method(&v, "replace", |s| {
            let (a, b) = (to_js_string(&a), to_js_string(&b));
            charge_work(s.len() as u64)?;
            // One occurrence at most: the output is never longer than this.
            charge_build(s.len() + b.len())?;
            let out = s.replacen(a.as_str(), &b, 1);
            if out.len() > MAX_STRING_BYTES {
                return Err(limit_error());
            }
            Ok(Value::from(out))
        })
    });
    env.add_function("js_substring", |v: Value, a: Value, rest: Rest<Value>| {
        let b = opt_arg(&rest, 0);
        str_method(&v, "substring", |s| {
            charge_work(s.len() as u64)?;
            let units = Utf16::of(s);
            let len = units.len() as f64;
            let clamp = |x: f64| {
                if x.is_nan() {
                    0.0
                } else {
                    x.trunc().clamp(0.0, len)
                }
            };
            let start = clamp(to_number(&a));
            let end = match &b {
                Some(b) if !b.is_undefined() => clamp(to_number(b)),
                _ => len,
            };
            let (lo, hi) = if start <= end {
                (start, end)
            } else {
                (end, start)
            };
            units.slice(lo as usize, hi as usize)
        })
    });
    env.add_function(
        "js_slice",
        |v: Value, rest: Rest<Value>| -> Result<Value, Error> {
            let (a, b) = (opt_arg(&rest, 0), opt_arg(&rest, 1));
            let resolve = |x: &Option<Value>, len: f64, default: f64| -> f64 {
                match x {
                    Some(x) if !x.is_undefined() => {
                        let n = to_number(x);
                        let n = if n.is_nan() { 0.0 } else { n.trunc() };
                        if n < 0.0 {
                            (len + n).max(0.0)
                        } else {
                            n.min(len)
                        }
                    }
                    _ => default,
                }
            };
            match v.kind() {
                ValueKind::String => {
                    let text = v.as_str().unwrap_or("");
                    charge_work(text.len() as u64)?;
                    let units = Utf16::of(text);
                    let len = units.len() as f64;
                    let (s, e) = (resolve(&a, len, 0.0), resolve(&b, len, len));
                    if s < e {
                        units.slice(s as usize, e as usize)
                    } else {
                        Ok(Value::from(""))
                    }
                }
                ValueKind::Seq => {
                    let items = seq(&v)?;
                    let len = items.len() as f64;
                    let (s, e) = (resolve(&a, len, 0.0), resolve(&b, len, len));
                    charge_bytes((e - s).max(0.0) as u64 * NODE_BYTES)?;
                    let out: Vec<Value> = if s < e {
                        items[s as usize..e as usize].to_vec()
                    } else {
                        Vec::new()
                    };
                    Ok(Value::from(out))
                }
                _ => Err(not_a_function(&v, "slice")),
            }
        },
    );
    env.add_function("js_to_string", |v: Value| -> Result<Value, Error> {
        if v.is_undefined() || v.is_none() {
            return Err(not_a_function(&v, "toString"));
        }
        unless_spent(Value::from(to_js_string(&v)))
    });
    env.add_function(
        "js_to_fixed",
        |v: Value, rest: Rest<Value>| -> Result<Value, Error> {
            if v.kind() != ValueKind::Number {
                return Err(not_a_function(&v, "toFixed"));
            }
            // ToIntegerOrInfinity: undefined and NaN are 0, fractions truncate.
            let d = opt_arg(&rest, 0).map_or(0.0, |d| to_number(&d));
            let d = if d.is_nan() { 0.0 } else { d.trunc() };
            if !(0.0..=100.0).contains(&d) {
                return Err(err("toFixed() digits argument must be between 0 and 100"));
            }
            Ok(Value::from(to_fixed(to_number(&v), d as usize)))
        },
    );

    // globals
    env.add_function("js_json_stringify", |v: Value| -> Result<Value, Error> {
        if v.is_undefined() {
            return Ok(Value::UNDEFINED);
        }
        let j = to_json(&v);
        if budget::is_spent() {
            return Err(budget_error());
        }
        charge_build(json_text_len(&j, u64::MAX) as usize)?;
        let s = serde_json::to_string(&j).map_err(|e| err(e.to_string()))?;
        if s.len() > MAX_STRING_BYTES {
            return Err(limit_error());
        }
        Ok(Value::from(s))
    });
    env.add_function("js_json_parse", |v: Value| -> Result<Value, Error> {
        let s = to_js_string(&v);
        // Every value parsed is a node: one per `,` `:` `[` `{` at most, plus one.
        charge_work(s.len() as u64)?;
        let nodes = s
            .bytes()
            .filter(|b| matches!(b, b',' | b':' | b'[' | b'{'))
            .count()
            + 1;
        charge_bytes(s.len() as u64 + nodes as u64 * NODE_BYTES)?;
        let parsed: serde_json::Value =
            serde_json::from_str(&s).map_err(|e| err(format!("JSON.parse: {e}")))?;
        Ok(from_json_owned(parsed))
    });
    // `Rest` rather than `Option`: minijinja's `Option` folds undefined and null into
    // "absent", but `Number(undefined)` is NaN, `String(null)` is "null".
    env.add_function("js_number", |v: Rest<Value>| {
        num(v.first().map_or(0.0, to_number))
    });
    env.add_function("js_string", |v: Rest<Value>| {
        unless_spent(Value::from(v.first().map_or(String::new(), to_js_string)))
    });
    env.add_function("js_parse_int", |v: Value, radix: Rest<Value>| {
        num(parse_int(
            &to_js_string(&v),
            opt_arg(&radix, 0).map_or(0.0, |r| to_number(&r)),
        ))
    });
    env.add_function("js_parse_float", |v: Value| {
        num(parse_float(&to_js_string(&v)))
    });
    env.add_function("js_math_round", |v: Value| num(js_round(to_number(&v))));
    env.add_function("js_math_floor", |v: Value| num(to_number(&v).floor()));
    env.add_function("js_math_ceil", |v: Value| num(to_number(&v).ceil()));
    env.add_function("js_math_abs", |v: Value| num(to_number(&v).abs()));
    env.add_function("js_math_min", |v: Rest<Value>| {
        num(v.iter().map(to_number).fold(f64::INFINITY, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        }))
    });
    env.add_function("js_math_max", |v: Rest<Value>| {
        num(v.iter().map(to_number).fold(f64::NEG_INFINITY, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        }))
    });

    // regular expressions
    env.add_function(
        "js_regex_test",
        |pattern: String, flags: String, v: Value| -> Result<Value, Error> {
            let re = cached_regex(&pattern, &flags)?;
            // A string is tested where it is: no copy.
            let owned;
            let s = match v.as_str() {
                Some(s) => s,
                None => {
                    owned = to_js_string(&v);
                    owned.as_str()
                }
            };
            charge_work(s.len() as u64 * REGEX_WORK_PER_BYTE)?;
            Ok(Value::from(re.is_match(s)))
        },
    );
    env.add_function(
        "js_regex_replace",
        |v: Value, pattern: String, flags: String, r: Value| {
            str_method(&v, "replace", |s| {
                let re = cached_regex(&pattern, &flags)?;
                let rep = to_js_string(&r).replace("$&", "${0}");
                charge_work(s.len() as u64 * REGEX_WORK_PER_BYTE)?;
                let out = regex_replace(&re, s, &rep, flags.contains('g'))?;
                if out.len() > MAX_STRING_BYTES {
                    return Err(limit_error());
                }
                Ok(Value::from(out))
            })
        },
    );
    env.add_function(
        "js_regex_split",
        |v: Value, pattern: String, flags: String| {
            str_method(&v, "split", |s| {
                let re = cached_regex(&pattern, &flags)?;
                // Counted first, so the parts are charged before any is built.
                charge_work(2 * s.len() as u64 * REGEX_WORK_PER_BYTE)?;
                let count = re.find_iter(s).count() + 1;
                charge_build(s.len())?;
                charge_bytes(count as u64 * NODE_BYTES)?;
                Ok(Value::from(
                    re.split(s).map(Value::from).collect::<Vec<_>>(),
                ))
            })
        },
    );

    // builder shorthands
    env.add_function("js_intent", |intent: Value, name: String| {
        let matches = |v: &Value| v.as_str() == Some(name.as_str());
        matches(&intent)
            || get(&intent, &Value::from("name"))
                .ok()
                .is_some_and(|n| matches(&n))
    });
    env.add_function(
        "js_entity",
        |entities: Value, name: String, value: Option<String>| -> bool {
            let Ok(iter) = entities.try_iter() else {
                return false;
            };
            if entities.kind() != ValueKind::Seq {
                return false;
            }
            iter.into_iter().any(|e| {
                let field = |k: &str| e.get_attr(k).ok().filter(|v| !v.is_undefined());
                let ename = field("entity").or_else(|| field("name"));
                if ename.as_ref().and_then(|n| n.as_str().map(str::to_string)) != Some(name.clone())
                {
                    return false;
                }
                match &value {
                    None => true,
                    Some(want) => field("value")
                        .is_some_and(|v| to_js_string(&v).to_lowercase() == want.to_lowercase()),
                }
            })
        },
    );
    env
}

/// An operand of `||`, `&&` or `??` with the outcome of its JavaScript test as its
/// minijinja truthiness, so minijinja's short-circuit `or`/`and` decide as JavaScript does.
#[derive(Debug)]
struct Tested {
    value: Value,
    pass: bool,
}

impl Object for Tested {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn is_true(self: &Arc<Self>) -> bool {
        self.pass
    }
}

fn limit_error() -> Error {
    err(format!("string longer than {MAX_STRING_BYTES} bytes"))
}

fn not_a_function(v: &Value, m: &str) -> Error {
    err(format!("{m}() is not a method of {}", js_type(v)))
}

/// The JavaScript type name of a value, for error messages.
pub(crate) fn js_type(v: &Value) -> &'static str {
    match v.kind() {
        ValueKind::Undefined => "undefined",
        ValueKind::None => "null",
        ValueKind::Bool => "a boolean",
        ValueKind::Number => "a number",
        ValueKind::String => "a string",
        ValueKind::Seq => "an array",
        ValueKind::Map => "an object",
        _ => "a value",
    }
}

/// `.length`: UTF-16 units of a string, items of an array, a map's own `length` member.
pub(crate) fn length(v: &Value) -> Result<Value, Error> {
    match v.kind() {
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            charge_work(s.len() as u64)?;
            Ok(Value::from(utf16_len(s)))
        }
        ValueKind::Seq => Ok(Value::from(v.len().unwrap_or(0))),
        ValueKind::Map => Ok(v.get_attr("length").unwrap_or(Value::UNDEFINED)),
        _ => Ok(Value::UNDEFINED),
    }
}

/// JavaScript `a + b`: concatenation when either side is a string, array or object,
/// addition otherwise.
pub(crate) fn add(a: &Value, b: &Value) -> Result<Value, Error> {
    let stringy = |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::String | ValueKind::Seq | ValueKind::Map
        )
    };
    if stringy(a) || stringy(b) {
        // Two strings (the common case) concatenate without copying either first.
        if let (Some(a), Some(b)) = (a.as_str(), b.as_str()) {
            if a.len() + b.len() > MAX_STRING_BYTES {
                return Err(limit_error());
            }
            charge_build(a.len() + b.len())?;
            let mut out = String::with_capacity(a.len() + b.len());
            out.push_str(a);
            out.push_str(b);
            return Ok(Value::from(out));
        }
        let (a, b) = (to_js_string(a), to_js_string(b));
        if budget::is_spent() {
            return Err(budget_error());
        }
        if a.len() + b.len() > MAX_STRING_BYTES {
            return Err(limit_error());
        }
        charge_build(a.len() + b.len())?;
        Ok(Value::from(a + &b))
    } else {
        Ok(num(to_number(a) + to_number(b)))
    }
}

/// `a + b + c …`, left to right, as JavaScript groups it.
pub(crate) fn add_chain(operands: &[Value]) -> Result<Value, Error> {
    let mut it = operands.iter();
    let Some(first) = it.next() else {
        return Ok(Value::UNDEFINED);
    };
    let mut acc = first.clone();
    for v in it {
        acc = add(&acc, v)?;
    }
    Ok(acc)
}

/// Every binary operator but `+` chains, with JavaScript meaning.
pub(crate) fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, Error> {
    Ok(match op {
        BinOp::Add => return add(a, b),
        BinOp::Sub => num(to_number(a) - to_number(b)),
        BinOp::Mul => num(to_number(a) * to_number(b)),
        BinOp::Div => num(to_number(a) / to_number(b)),
        BinOp::Rem => num(to_number(a) % to_number(b)),
        BinOp::Eq => Value::from(loose_eq(a, b)),
        BinOp::Ne => Value::from(!loose_eq(a, b)),
        BinOp::StrictEq => Value::from(strict_eq(a, b)),
        BinOp::StrictNe => Value::from(!strict_eq(a, b)),
        BinOp::Lt => Value::from(compare(a, b, |o| o.is_lt())),
        BinOp::Le => Value::from(compare(a, b, |o| o.is_le())),
        BinOp::Gt => Value::from(compare(a, b, |o| o.is_gt())),
        BinOp::Ge => Value::from(compare(a, b, |o| o.is_ge())),
    })
}

fn str_method(
    v: &Value,
    m: &str,
    f: impl FnOnce(&str) -> Result<Value, Error>,
) -> Result<Value, Error> {
    match v.as_str() {
        Some(s) => f(s),
        None => Err(not_a_function(v, m)),
    }
}

fn seq(v: &Value) -> Result<Vec<Value>, Error> {
    charge_build(v.len().unwrap_or(0).saturating_mul(NODE_BYTES as usize))?;
    Ok(v.try_iter()?.collect())
}

/// Compiles a JavaScript regular expression with its flags (load-time validation and
/// run-time use share this, so what `check` accepts is what runs).
pub(crate) fn compile_regex(pattern: &str, flags: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(flags.contains('i'))
        .multi_line(flags.contains('m'))
        .dot_matches_new_line(flags.contains('s'))
        .size_limit(1 << 20)
        .build()
}

fn cached_regex(pattern: &str, flags: &str) -> Result<Arc<regex::Regex>, Error> {
    REGEX_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let key = (pattern.to_string(), flags.to_string());
        if let Some(re) = c.get(&key) {
            return Ok(re.clone());
        }
        let re = Arc::new(compile_regex(pattern, flags).map_err(|e| err(e.to_string()))?);
        if c.len() > 256 {
            c.clear();
        }
        c.insert(key, re.clone());
        Ok(re)
    })
}

/// JavaScript truthiness: `undefined`, `null`, `false`, `0`, `NaN` and `""` are false;
/// everything else, empty arrays and objects included, is true.
pub(crate) fn truthy(v: &Value) -> bool {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => false,
        ValueKind::Bool => v.is_true(),
        ValueKind::Number => {
            let n = to_number(v);
            n != 0.0 && !n.is_nan()
        }
        ValueKind::String => !v.as_str().unwrap_or("").is_empty(),
        _ => true,
    }
}

/// A number result: integral values within 2^53 stay integers, so JSON shows `3`, not `3.0`.
pub(crate) fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 && !(f == 0.0 && f.is_sign_negative())
    {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

/// JavaScript `ToNumber`.
pub(crate) fn to_number(v: &Value) -> f64 {
    match v.kind() {
        ValueKind::Undefined => f64::NAN,
        ValueKind::None => 0.0,
        ValueKind::Bool => {
            if v.is_true() {
                1.0
            } else {
                0.0
            }
        }
        ValueKind::Number => match v.as_i64() {
            Some(i) if v.is_integer() => i as f64,
            _ => f64::try_from(v.clone()).unwrap_or(f64::NAN),
        },
        ValueKind::String => string_to_number(v.as_str().unwrap_or("")),
        // ToPrimitive: an array is its joined string (`[]` → 0, `['7']` → 7, `[1, 2]` → NaN).
        ValueKind::Seq => string_to_number(&to_js_string(v)),
        _ => f64::NAN,
    }
}

fn string_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    let lower = t.to_ascii_lowercase();
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return u64::from_str_radix(rest, radix).map_or(f64::NAN, |n| n as f64);
        }
    }
    // Rust accepts "inf"/"nan" spellings JavaScript does not.
    if t.chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

fn parse_float(s: &str) -> f64 {
    let t = s.trim_start();
    let b = t.as_bytes();
    let mut end = 0;
    let mut seen_dot = false;
    let mut seen_digit = false;
    if end < b.len() && (b[end] == b'+' || b[end] == b'-') {
        end += 1;
    }
    if t[end..].starts_with("Infinity") {
        return if t.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    while end < b.len() {
        match b[end] {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        end += 1;
    }
    if seen_digit && end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let mut e = end + 1;
        if e < b.len() && (b[e] == b'+' || b[e] == b'-') {
            e += 1;
        }
        let digits = b[e..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            end = e + digits;
        }
    }
    if !seen_digit {
        return f64::NAN;
    }
    t[..end].parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript `parseInt(s, radix)`; `radix` 0 (or absent, or NaN) means "10, or 16
/// after a `0x` prefix". Any other radix outside 2..=36 gives NaN; only radix 16
/// (explicit or implied) strips a `0x` prefix.
fn parse_int(s: &str, radix: f64) -> f64 {
    let t = s.trim_start();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    // ToInt32 of the radix (NaN and infinities become 0).
    let r = if radix.is_finite() {
        radix.trunc().rem_euclid(4_294_967_296.0) as u32 as i32
    } else {
        0
    };
    let radix: u32 = match r {
        0 => 10,
        2..=36 => r as u32,
        _ => return f64::NAN,
    };
    let hex_prefix = t.starts_with("0x") || t.starts_with("0X");
    let (radix, t) = if hex_prefix && (r == 0 || r == 16) {
        (16, &t[2..])
    } else {
        (radix, t)
    };
    let digits: &str = &t[..t
        .char_indices()
        .find(|(_, c)| !c.is_digit(radix))
        .map_or(t.len(), |(i, _)| i)];
    if digits.is_empty() {
        return f64::NAN;
    }
    let n = if radix == 10 {
        // Decimal digits convert exactly rounded, as JavaScript requires.
        digits.parse::<f64>().unwrap_or(f64::NAN)
    } else {
        digits.chars().fold(0f64, |n, c| {
            n * f64::from(radix) + f64::from(c.to_digit(radix).unwrap_or(0))
        })
    };
    if neg {
        -n
    } else {
        n
    }
}

/// JavaScript `Math.round`: halves round towards +Infinity (`-2.5` → `-2`).
fn js_round(x: f64) -> f64 {
    if !x.is_finite() || x.fract() == 0.0 {
        return x;
    }
    let f = x.floor();
    // `x - f` is exact for every non-integral double, unlike `x + 0.5`.
    if x - f >= 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// JavaScript `Number.prototype.toFixed`: rounds the exact binary value, ties away
/// from zero (`(2.5).toFixed(0)` is `"3"`, where Rust's formatting gives `"2"`).
fn to_fixed(x: f64, digits: usize) -> String {
    if !x.is_finite() || x.abs() >= 1e21 {
        return format_number(x);
    }
    // Every double has a finite decimal expansion of at most 1074 fraction digits.
    let exact = format!("{:.1100}", x.abs());
    let (int, frac) = exact.split_once('.').unwrap_or((&exact, ""));
    let mut out: Vec<u8> = int.bytes().chain(frac.bytes().take(digits)).collect();
    if frac.as_bytes().get(digits).is_some_and(|d| *d >= b'5') {
        let mut i = out.len();
        loop {
            if i == 0 {
                out.insert(0, b'1');
                break;
            }
            i -= 1;
            if out[i] == b'9' {
                out[i] = b'0';
            } else {
                out[i] += 1;
                break;
            }
        }
    }
    let split = out.len() - digits;
    let mut s = String::with_capacity(out.len() + 2);
    if x < 0.0 {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(&out[..split]).unwrap_or("0"));
    if digits > 0 {
        s.push('.');
        s.push_str(std::str::from_utf8(&out[split..]).unwrap_or(""));
    }
    s
}

/// Argument `i` of a `Rest`, keeping `undefined` and `null` distinct from "not given".
fn opt_arg(rest: &Rest<Value>, i: usize) -> Option<Value> {
    rest.get(i).cloned()
}

/// Formats a number the way JavaScript's `String(n)` does.
pub(crate) fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if n == 0.0 {
        return "0".into();
    }
    let abs = n.abs();
    // Rust's `Display` writes the shortest round-trip digits, padded with zeros for
    // large integers (`1152921504606847000`), as JavaScript does; `{:.0}` would
    // write the exact binary value instead.
    if (1e-6..1e21).contains(&abs) {
        return format!("{n}");
    }
    // Exponent form: Rust writes `1e21` / `1.5e-7`; JavaScript writes `1e+21` / `1.5e-7`.
    let s = format!("{n:e}");
    match s.split_once('e') {
        Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
        _ => s,
    }
}

/// JavaScript `ToString` (used by `+`, `String()`, methods): arrays join with `,`,
/// objects are `[object Object]`, `null`/`undefined` spell themselves.
///
/// Copies are charged to the run budget; once it is spent the result is cut short
/// (empty), and the caller reports the budget (see [`unless_spent`]).
pub(crate) fn to_js_string(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => "undefined".into(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => if v.is_true() { "true" } else { "false" }.into(),
        ValueKind::Number => format_number(to_number(v)),
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            if charge_build(s.len()).is_err() {
                return String::new();
            }
            s.to_string()
        }
        ValueKind::Seq => {
            let parts: Vec<String> = seq(v)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    if e.is_undefined() || e.is_none() || budget::is_spent() {
                        String::new()
                    } else {
                        to_js_string(e)
                    }
                })
                .collect();
            let total = parts.iter().map(String::len).sum::<usize>() + parts.len();
            if charge_build(total).is_err() {
                return String::new();
            }
            parts.join(",")
        }
        ValueKind::Map => "[object Object]".into(),
        _ => v.to_string(),
    }
}

fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a.kind(), b.kind()) {
        (ValueKind::Number, ValueKind::Number) => to_number(a) == to_number(b),
        (ValueKind::Seq | ValueKind::Map, ValueKind::Seq | ValueKind::Map) => {
            to_json(a) == to_json(b)
        }
        (ka, kb) if ka != kb => false,
        _ => a == b,
    }
}

fn same_value_zero(a: &Value, b: &Value) -> bool {
    if a.kind() == ValueKind::Number && b.kind() == ValueKind::Number {
        let (x, y) = (to_number(a), to_number(b));
        return x == y || x.is_nan() && y.is_nan();
    }
    strict_eq(a, b)
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    let nullish = |v: &Value| v.is_undefined() || v.is_none();
    match (nullish(a), nullish(b)) {
        (true, true) => return true,
        (true, false) | (false, true) => return false,
        _ => {}
    }
    let (ka, kb) = (a.kind(), b.kind());
    if ka == kb {
        return strict_eq(a, b);
    }
    let prim = |k: ValueKind| matches!(k, ValueKind::Number | ValueKind::String | ValueKind::Bool);
    if prim(ka) && prim(kb) {
        return to_number(a) == to_number(b);
    }
    if !prim(ka) && !prim(kb) {
        return false; // an array and an object
    }
    // An object against a primitive: its ToPrimitive (string form), compared again
    // (`[] == 0` and `[] == false` are true, `[1] == '1'` too).
    loose_eq(&to_primitive(a), &to_primitive(b))
}

/// ToPrimitive: arrays and objects become their string form, as `valueOf` of a
/// plain array or object is the value itself.
fn to_primitive(v: &Value) -> Value {
    match v.kind() {
        ValueKind::Seq | ValueKind::Map => Value::from(to_js_string(v)),
        _ => v.clone(),
    }
}

fn compare(a: &Value, b: &Value, f: impl Fn(std::cmp::Ordering) -> bool) -> bool {
    let (a, b) = (&to_primitive(a), &to_primitive(b));
    if a.kind() == ValueKind::String && b.kind() == ValueKind::String {
        return f(a.as_str().cmp(&b.as_str()));
    }
    match to_number(a).partial_cmp(&to_number(b)) {
        Some(o) => f(o),
        None => false,
    }
}

/// `v[k]` with JavaScript meaning: arrays by numeric index, objects by string key.
fn get(v: &Value, k: &Value) -> Result<Value, Error> {
    match v.kind() {
        ValueKind::Seq => {
            let n = to_number(k);
            if n >= 0.0 && n.fract() == 0.0 {
                return Ok(v.get_item_by_index(n as usize).unwrap_or(Value::UNDEFINED));
            }
            if k.as_str() == Some("length") {
                return Ok(Value::from(v.len().unwrap_or(0)));
            }
            Ok(Value::UNDEFINED)
        }
        ValueKind::Map => {
            let key = to_js_string(k);
            Ok(v.get_attr(&key).unwrap_or(Value::UNDEFINED))
        }
        ValueKind::String => {
            let n = to_number(k);
            let s = v.as_str().unwrap_or("");
            if n >= 0.0 && n.fract() == 0.0 {
                charge_work(s.len() as u64)?;
                let units = Utf16::of(s);
                let i = n as usize;
                if i >= units.len() {
                    return Ok(Value::UNDEFINED);
                }
                return units.slice(i, i + 1);
            }
            Ok(Value::UNDEFINED)
        }
        _ => Ok(Value::UNDEFINED),
    }
}

/// Converts an evaluated value to JSON. `undefined` becomes `null`; non-finite
/// numbers become `null` as in `JSON.stringify`.
///
/// Every node is charged to the run budget before it is built; once the budget is
/// spent the rest becomes `null`, and the caller reports the budget.
pub(crate) fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    if !budget::bytes(NODE_BYTES) {
        return J::Null;
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => J::Null,
        ValueKind::Bool => J::Bool(v.is_true()),
        ValueKind::Number => {
            if v.is_integer() {
                if let Some(i) = v.as_i64() {
                    return J::from(i);
                }
                if let Ok(u) = u64::try_from(v.clone()) {
                    return J::from(u);
                }
            }
            let f = to_number(v);
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                J::from(f as i64)
            } else {
                serde_json::Number::from_f64(f).map_or(J::Null, J::Number)
            }
        }
        ValueKind::String => {
            let s = v.as_str().unwrap_or("");
            if charge_build(s.len()).is_err() {
                return J::Null;
            }
            J::String(s.to_string())
        }
        ValueKind::Seq => {
            if let Some(view) = v.downcast_object_ref::<JsonView>() {
                return charged_clone(view.node());
            }
            J::Array(
                v.try_iter()
                    .map(|it| it.map(|e| to_json(&e)).collect())
                    .unwrap_or_default(),
            )
        }
        ValueKind::Map => {
            if let Some(view) = v.downcast_object_ref::<JsonView>() {
                return charged_clone(view.node());
            }
            let mut m = serde_json::Map::new();
            if let Ok(keys) = v.try_iter() {
                for k in keys {
                    let val = v.get_item(&k).unwrap_or(Value::UNDEFINED);
                    if val.is_undefined() {
                        continue; // JSON.stringify drops undefined members
                    }
                    if budget::is_spent() {
                        break;
                    }
                    m.insert(to_js_string(&k), to_json(&val));
                }
            }
            J::Object(m)
        }
        _ => J::String(v.to_string()),
    }
}

/// A deep copy of a stored JSON node, charged (size first, by a walk that stops at
/// what is left) before anything is copied; `null` when it does not fit.
fn charged_clone(node: &serde_json::Value) -> serde_json::Value {
    let left = budget_left();
    let size = json_mem_size(node, left);
    if !budget::build(size) {
        return serde_json::Value::Null;
    }
    node.clone()
}

/// Bytes left in the installed budget (`u64::MAX` without one).
fn budget_left() -> u64 {
    budget::left()
}

/// The charge of a JSON value: its string bytes plus [`NODE_BYTES`] per value and per
/// key. The walk stops once past `cap` (what is left does not matter then).
pub(crate) fn json_mem_size(v: &serde_json::Value, cap: u64) -> u64 {
    use serde_json::Value as J;
    let mut total = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(NODE_BYTES);
        match v {
            J::String(s) => total = total.saturating_add(s.len() as u64),
            J::Array(a) => stack.extend(a.iter()),
            J::Object(m) => {
                for (k, x) in m {
                    total = total.saturating_add(k.len() as u64 + NODE_BYTES);
                    stack.push(x);
                }
            }
            _ => {}
        }
        if total > cap {
            break;
        }
    }
    total
}

/// About how long the JSON text of `v` is (escapes not counted), stopping past `cap`.
pub(crate) fn json_text_len(v: &serde_json::Value, cap: u64) -> u64 {
    use serde_json::Value as J;
    let mut total = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            J::Null | J::Bool(_) => 5,
            J::Number(_) => 24,
            J::String(s) => s.len() as u64 + 2,
            J::Array(a) => {
                stack.extend(a.iter());
                a.len() as u64 + 2
            }
            J::Object(m) => {
                for (k, x) in m {
                    stack.push(x);
                    total = total.saturating_add(k.len() as u64 + 4);
                }
                2
            }
        });
        if total > cap {
            break;
        }
    }
    total
}

/// A string seen as UTF-16 code units, for `substring`, `slice` and `s[i]`: ASCII
/// text (nearly all of it) indexes its bytes directly, without a copy.
enum Utf16<'a> {
    Ascii(&'a str),
    Units(Vec<u16>),
}

impl<'a> Utf16<'a> {
    fn of(s: &'a str) -> Utf16<'a> {
        if s.is_ascii() {
            Utf16::Ascii(s)
        } else {
            Utf16::Units(s.encode_utf16().collect())
        }
    }

    fn len(&self) -> usize {
        match self {
            Utf16::Ascii(s) => s.len(),
            Utf16::Units(u) => u.len(),
        }
    }

    /// Units `lo..hi` (in range, `lo <= hi`) as a new string, charged first.
    fn slice(&self, lo: usize, hi: usize) -> Result<Value, Error> {
        charge_build(hi - lo)?;
        Ok(match self {
            Utf16::Ascii(s) => Value::from(&s[lo..hi]),
            Utf16::Units(u) => Value::from(String::from_utf16_lossy(&u[lo..hi])),
        })
    }
}

/// Work units a match with capture groups costs (see [`regex_replace`]).
const WORK_PER_CAPTURE: u64 = 128;

/// `s.replace(re, rep)` (all matches with `global`), built match by match and charged
/// as it grows, so an output larger than what is left fails before it is built.
fn regex_replace(re: &regex::Regex, s: &str, rep: &str, global: bool) -> Result<String, Error> {
    let mut out = String::new();
    let mut last = 0;
    let mut charged = 0usize;
    // Without `$` the replacement is literal: matches need no capture groups, which
    // the regex engines find several times faster.
    let literal = !rep.contains('$');
    let mut groups = 0u64;
    let mut matches = re.captures_iter(s);
    let mut found = re.find_iter(s);
    loop {
        let m = if literal {
            let Some(m) = found.next() else { break };
            out.push_str(&s[last..m.start()]);
            out.push_str(rep);
            m
        } else {
            let Some(caps) = matches.next() else { break };
            let Some(m) = caps.get(0) else { continue };
            // Capture groups cost ~100 ns a match, whatever the bytes: work per match.
            groups += 1;
            if groups.is_multiple_of(1024) {
                charge_work(1024 * WORK_PER_CAPTURE)?;
            }
            out.push_str(&s[last..m.start()]);
            caps.expand(rep, &mut out);
            m
        };
        last = m.end();
        if out.len() > MAX_STRING_BYTES {
            return Err(limit_error());
        }
        // Charged in steps of at least 4 KiB: a charge per match would cost more
        // than the copy itself.
        if out.len() - charged >= 4096 {
            charge_bytes((out.len() - charged) as u64)?;
            charged = out.len();
        }
        if !global {
            break;
        }
    }
    let rest = s.len() - last;
    charge_bytes((out.len() + rest - charged) as u64 + NODE_BYTES)?;
    out.push_str(&s[last..]);
    Ok(out)
}

fn from_json_owned(v: serde_json::Value) -> Value {
    let root = Arc::new(v);
    wrap(&root, Vec::new())
}

/// A read-only view into a node of a JSON document, so the store is handed to
/// minijinja without converting it (conversion would cost as much as several evaluations).
#[derive(Debug)]
pub struct JsonView {
    root: Arc<serde_json::Value>,
    path: Vec<JsonSeg>,
}

#[derive(Debug, Clone)]
pub(crate) enum JsonSeg {
    Key(Arc<str>),
    Idx(usize),
}

impl JsonView {
    fn node(&self) -> &serde_json::Value {
        let mut cur = &*self.root;
        for s in &self.path {
            cur = match (s, cur) {
                (JsonSeg::Key(k), serde_json::Value::Object(m)) => {
                    m.get(&**k).unwrap_or(&serde_json::Value::Null)
                }
                (JsonSeg::Idx(i), serde_json::Value::Array(a)) => {
                    a.get(*i).unwrap_or(&serde_json::Value::Null)
                }
                _ => &serde_json::Value::Null,
            };
        }
        cur
    }

    fn child(&self, seg: JsonSeg) -> Vec<JsonSeg> {
        let mut p = Vec::with_capacity(self.path.len() + 1);
        p.extend(self.path.iter().cloned());
        p.push(seg);
        p
    }
}

/// Wraps the node at `path` of `root` as a minijinja value: scalars directly,
/// containers as views.
fn wrap(root: &Arc<serde_json::Value>, path: Vec<JsonSeg>) -> Value {
    let view = JsonView {
        root: root.clone(),
        path,
    };
    scalar_or_view(view)
}

/// The node at `path` inside `root` as a value: a scalar, or a view of a container.
pub(crate) fn json_value(root: &Arc<serde_json::Value>, path: &[JsonSeg]) -> Value {
    wrap(root, path.to_vec())
}

/// A JSON scalar as a value (containers become undefined: use [`json_value`]).
pub(crate) fn json_scalar(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => {
            // A read copies the string: charged as work, not as a value built.
            if !budget::work(s.len() as u64) {
                return Value::UNDEFINED;
            }
            Value::from(s.as_str())
        }
        J::Array(_) | J::Object(_) => Value::UNDEFINED,
    }
}

fn scalar_or_view(view: JsonView) -> Value {
    use serde_json::Value as J;
    match view.node() {
        J::Array(_) | J::Object(_) => Value::from_object(view),
        scalar => json_scalar(scalar),
    }
}

impl Object for JsonView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node() {
            serde_json::Value::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.node() {
            serde_json::Value::Object(m) => {
                // `obj[0]` reads the key "0", as in JavaScript.
                let owned;
                let k = match key.as_str() {
                    Some(k) => k,
                    None if key.kind() == ValueKind::Number => {
                        owned = format_number(to_number(key));
                        owned.as_str()
                    }
                    None => return None,
                };
                let (k, _) = m.get_key_value(k)?;
                Some(scalar_or_view(JsonView {
                    root: self.root.clone(),
                    path: self.child(JsonSeg::Key(Arc::from(k.as_str()))),
                }))
            }
            serde_json::Value::Array(a) => {
                // `arr['1']` is `arr[1]`: a canonical index string reads the element.
                let i = key.as_usize().or_else(|| {
                    let s = key.as_str()?;
                    s.parse::<usize>().ok().filter(|i| i.to_string() == s)
                })?;
                a.get(i)?;
                Some(scalar_or_view(JsonView {
                    root: self.root.clone(),
                    path: self.child(JsonSeg::Idx(i)),
                }))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            serde_json::Value::Object(m) => {
                Enumerator::Values(m.keys().map(|k| Value::from(k.as_str())).collect())
            }
            serde_json::Value::Array(a) => Enumerator::Seq(a.len()),
            _ => Enumerator::Empty,
        }
    }
}

/// The root object expressions see: `contact`, `context`, `input`, … by name.
#[derive(Debug)]
pub(crate) struct RootView {
    pub(crate) roots: Vec<(&'static str, Arc<serde_json::Value>)>,
}

impl RootView {
    /// The document of a root, when the store has it.
    pub(crate) fn root(&self, name: &str) -> Option<&Arc<serde_json::Value>> {
        self.roots.iter().find(|(n, _)| *n == name).map(|(_, r)| r)
    }
}

impl Object for RootView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        self.get_value_by_str(k)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let (_, root) = self.roots.iter().find(|(n, _)| *n == key)?;
        Some(wrap(root, Vec::new()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.roots.iter().map(|(n, _)| Value::from(*n)).collect())
    }
}
