//! Property test of the run budget: generated amplification flows (doubling strings,
//! arrays and objects, nested `JSON.stringify`, `replace`/`split`/`join` chains, deep
//! ternaries) either complete or fail with kind `limit`, and a counting global
//! allocator bounds the peak memory a run adds (≤ 64 MiB for the 16 MiB budget).
//!
//! One test in this binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use transbordo::{Engine, RunLimits, RunOptions, Store};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is to the system allocator.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` with layout `l`.
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded as is to the system allocator.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = CURRENT.fetch_add(new - l.size(), Relaxed) + (new - l.size());
                PEAK.fetch_max(now, Relaxed);
            } else {
                CURRENT.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Str,
    Arr,
    Obj,
}

/// One amplifying expression over the keys defined so far (by type).
fn step(rng: &mut StdRng, keys: &[(String, Ty)]) -> (String, Ty) {
    let pick = |rng: &mut StdRng, want: Option<Ty>| -> Option<String> {
        let c: Vec<&(String, Ty)> = keys
            .iter()
            .filter(|(_, t)| want.is_none_or(|w| *t == w))
            .collect();
        if c.is_empty() {
            return None;
        }
        // Mostly the latest: that is what doubles.
        let i = if rng.random_bool(0.7) {
            c.len() - 1
        } else {
            rng.random_range(0..c.len())
        };
        Some(format!("${}", c[i].0))
    };
    let s = pick(rng, Some(Ty::Str)).unwrap_or_else(|| "'xyxy'".into());
    let any = pick(rng, None).unwrap_or_else(|| s.clone());
    // Arrays and objects are not capped per expression as strings are (1 MiB): only
    // the run budget stops their doubling, so they come up more often.
    match rng.random_range(0..18) {
        12..=14 => {
            let a = pick(rng, Some(Ty::Arr)).unwrap_or_else(|| format!("[{s}]"));
            (format!("[{a}, {a}]"), Ty::Arr)
        }
        15..=16 => {
            let o = pick(rng, Some(Ty::Obj)).unwrap_or_else(|| format!("{{s: {s}}}"));
            (format!("{{l: {o}, r: {o}}}"), Ty::Obj)
        }
        0 => (format!("{s} + {s}"), Ty::Str),
        1 => (format!("{s} + {s} + {s} + {s}"), Ty::Str),
        2 => (format!("[{any}, {any}]"), Ty::Arr),
        3 => (format!("{{a: {any}, b: {any}, c: [{any}]}}"), Ty::Obj),
        4 => (format!("JSON.stringify({any})"), Ty::Str),
        5 => (
            format!("JSON.stringify([{any}, JSON.stringify({any})])"),
            Ty::Str,
        ),
        6 => (format!("{s}.replace(/x/g, 'xxxx')"), Ty::Str),
        7 => (format!("{s}.split('').join({s})"), Ty::Str),
        8 => (format!("{s}.split('x').join('yy') + {s}"), Ty::Str),
        9 => (format!("{s}.toUpperCase() + {s}.toLowerCase()"), Ty::Str),
        10 => {
            // A deep ternary: every branch the same doubling.
            let mut e = format!("{s} + {s}");
            for _ in 0..rng.random_range(3..12) {
                e = format!("({s}.length > 3 ? {e} : {s})");
            }
            (e, Ty::Str)
        }
        _ => (
            format!("{s}.substring(1) + {s}.slice(0, -1) + {s}.trim()"),
            Ty::Str,
        ),
    }
}

fn flow(rng: &mut StdRng) -> Value {
    let mut context = Map::new();
    // A doubled base string of 4 KiB to 1 MiB, what the operations then amplify.
    context.insert("b0".into(), json!("xyxyxyxyxyxyxyxy"));
    let doublings = rng.random_range(8..=16);
    for i in 1..=doublings {
        context.insert(
            format!("b{i}"),
            json!(format!("<? $b{} + $b{} ?>", i - 1, i - 1)),
        );
    }
    context.insert("k0".into(), json!(format!("<? $b{doublings} ?>")));
    let mut keys: Vec<(String, Ty)> = vec![("k0".into(), Ty::Str)];
    let n = rng.random_range(16..60);
    let in_context = rng.random_range(0..n);
    let mut actions = Vec::new();
    for i in 1..n {
        let (e, ty) = step(rng, &keys);
        let name = format!("k{i}");
        if i <= in_context {
            context.insert(name.clone(), json!(format!("<? {e} ?>")));
        } else {
            actions.push(json!({"name": "set_variables", "parameters": {"context": {name.clone(): format!("<? {e} ?>")}}}));
        }
        keys.push((name, ty));
    }
    let last = &keys[keys.len() - 1].0;
    actions.push(json!({"name": "send_message", "parameters": {"text": format!("<? ${last} ?>")}}));
    json!({
        "context": context,
        "actions": actions,
        "output": [{"type": "text", "text": format!("end <? ${last} ?>")}],
    })
}

/// Whether a failure message is a bound (the run budget, or a per-expression bound).
fn is_bound(message: &str) -> bool {
    message.contains("run budget exceeded")
        || message.contains("longer than")
        || message.contains("out of fuel")
}

#[tokio::test(flavor = "current_thread")]
async fn amplification_flows_stay_within_their_budgets() {
    let engine = Engine::new();
    let opts = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let mut limited = 0;
    let mut worst_peak = 0usize;
    let mut worst_time = Duration::ZERO;
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(0x15_b0d6e7 ^ seed);
        let src = flow(&mut rng).to_string();
        // What a failure prints of the flow.
        let shown: String = src.chars().take(3000).collect();
        let loaded = engine
            .load(&src, "fuzz.json")
            .expect("generated flows load");
        let base = CURRENT.load(Relaxed);
        PEAK.store(base, Relaxed);
        let started = Instant::now();
        let outcome = engine
            .run_with_limits(&loaded, Store::default(), &opts, RunLimits::default())
            .await;
        let took = started.elapsed();
        let peak = PEAK.load(Relaxed).saturating_sub(base);
        worst_peak = worst_peak.max(peak);
        worst_time = worst_time.max(took);
        assert!(
            peak <= 64 << 20,
            "seed {seed}: peak growth {peak} bytes over 64 MiB\n{shown}"
        );
        assert!(took < Duration::from_secs(20), "seed {seed}: {took:?}");
        // The first failure of a run is a bound (the run budget, or a per-expression
        // bound); what fails after it may follow from it (a key left unset reads as
        // undefined), and budget failures of actions are kind `limit`.
        let first = outcome
            .warnings
            .iter()
            .find(|w| !w.message.contains("is undefined"));
        if let Some(w) = first {
            assert!(
                is_bound(&w.message),
                "seed {seed}: first failure is not a bound: {w:?}\n{shown}"
            );
        }
        for t in &outcome.trace {
            let msg = t
                .result
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            if is_bound(msg) {
                let kind = t.result.pointer("/error/kind").and_then(Value::as_str);
                assert_eq!(kind, Some("limit"), "seed {seed}: {}", t.result);
            }
        }
        let hit = outcome
            .warnings
            .iter()
            .any(|w| w.message.contains("run budget exceeded"));
        // The response stays small: nothing near the budget is sent.
        for m in &outcome.messages {
            assert!(m.message.to_string().len() <= 2 << 20, "seed {seed}");
        }
        limited += usize::from(hit);
        drop(outcome);
    }
    eprintln!(
        "40 flows: {limited} hit a run budget; worst peak growth {} KiB, worst time {worst_time:?}",
        worst_peak >> 10
    );
    // The generator amplifies: most flows must reach a budget, or this proves nothing.
    assert!(limited >= 10, "only {limited} of 40 flows hit a run budget");
}
