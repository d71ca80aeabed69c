//! Bytes a loaded flow keeps per compiled expression, counted by a global allocator
//! (live bytes after loading, minus live bytes before; the source text is excluded).
//!
//! `cargo bench --bench memory`; figures are reported in the README.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use transbordo::Engine;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now =
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let delta = new_size as isize - layout.size() as isize;
        let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The flows of `scripts/gen-flow.py`: `repeated` (three expressions repeated) and
/// `distinct` (every expression different).
fn flow(distinct: bool, actions: usize) -> (String, usize) {
    let mut s = String::from("[\n");
    let mut exprs = 0;
    for i in 0..actions {
        let a = match (distinct, i % 2) {
            (false, 0) => {
                exprs += 2;
                r#"{"name": "send_message", "parameters": {"text": "Olá <? contact.name ?>, plano <? contact.extra.plano ?> #17"}}"#.to_string()
            }
            (false, _) => {
                exprs += 3;
                r#"{"name": "set_variables", "parameters": {"context": {"a": "<? $a + 1 ?>", "t": "<? $tag ?>-<? contact.cpf ?>"}}}"#.to_string()
            }
            (true, 0) => {
                exprs += 1;
                format!(
                    r#"{{"name":"send_message","parameters":{{"text":"<? contact.name + ' #{i}' ?>"}}}}"#
                )
            }
            (true, _) => {
                exprs += 4;
                format!(
                    r#"{{"name":"set_variables","parameters":{{"context":{{"a":"<? $a + {i} ?>","b":"<? contact.cpf + '-{i}' ?>","c":"<? $tag + '-{i}' ?>","d":"<? contact.extra.plano + ' {i}' ?>"}}}}}}"#
                )
            }
        };
        s.push_str(&a);
        s.push_str(if i + 1 < actions { ",\n" } else { "\n" });
    }
    s.push(']');
    (s, exprs)
}

fn main() {
    let engine = Engine::new();
    println!(
        "{:<10} {:>8} {:>10} {:>12} {:>14} {:>16} {:>14}",
        "flow", "actions", "source", "expressions", "kept (MB)", "bytes/expression", "peak/source"
    );
    for distinct in [false, true] {
        for actions in [1_000usize, 40_000] {
            let (src, exprs) = flow(distinct, actions);
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let loaded = engine
                .load(&src, "flow.json")
                .expect("the generated flow loads");
            // The loaded flow keeps a copy of its source for diagnostics: not per expression.
            let kept = LIVE.load(Ordering::Relaxed) - before - src.len() as isize;
            let peak = PEAK.load(Ordering::Relaxed) - before;
            println!(
                "{:<10} {:>8} {:>8.2}MB {:>12} {:>14.1} {:>16.0} {:>13.1}x",
                if distinct { "distinct" } else { "repeated" },
                actions,
                src.len() as f64 / 1e6,
                exprs,
                kept as f64 / 1e6,
                kept as f64 / exprs as f64,
                peak as f64 / src.len() as f64,
            );
            drop(std::hint::black_box(loaded));
        }
    }
}
