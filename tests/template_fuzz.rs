//! Fuzz-style robustness test of the template language: thousands of random,
//! truncated and mutated templates (seeded from the fixtures) go through
//! `Template::compile` and, when they compile, `render` in lenient and strict mode.
//! Nothing may panic, and every error or warning span must lie inside the string,
//! on character boundaries. Deterministic: a fixed xorshift seed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use transbordo::template::{Scope, Template};

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
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[char] = &[
    '<', '?', '>', '(', ')', '[', ']', '{', '}', '\'', '"', '\\', '/', '.', '$', '#', '@', ':',
    '|', '?', '!', '&', '=', '+', '-', '*', '%', ',', ' ', 'a', 'e', 'x', '0', '1', '9', 'é', '😀',
    '`', ';', '\n',
];

const EXTRA_SEEDS: &[&str] = &[
    "<? contact.name ?>",
    "<? $tries + 1 ?>",
    "Olá <? contact.name.toUpperCase() ?>, <? $x ?? 'y' ?>!",
    "<? contact.tags.join(', ') | upper ?>",
    "<? /^[0-9]+$/i.test(input.text) ? 'n' : 's' ?>",
    "<? contact.cpf.replace(/[.-]/g, '').substring(0, 3) ?>",
    "<? #intent && @cidade:(São Paulo) || @cor:azul ?>",
    "<? {a: [1, 2, {b: 'c'}], 'd e': null}['d e'] ?>",
    "<? JSON.parse(JSON.stringify($obj)).a[0] ?>",
    "<? Math.max(parseInt('12px'), parseFloat('3.5'), Number('1e3')) ?>",
    "\\<? literal ?> <? '?>' ?>",
    "<? (contact?.extra?.cidade ?? '').length ?>",
    "<? !(!$a || $b) && ($c ?? $d) ?>",
];

fn seeds() -> Vec<String> {
    let mut out: Vec<String> = EXTRA_SEEDS.iter().map(|s| s.to_string()).collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/templates");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
        for t in v["templates"].as_array().into_iter().flatten() {
            if let Some(s) = t.as_str() {
                if s.len() < 400 {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}

fn mutate(rng: &mut XorShift, seeds: &[String]) -> String {
    let base = &seeds[rng.below(seeds.len())];
    let mut chars: Vec<char> = base.chars().collect();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(6) {
            // truncate to a prefix
            0 => {
                let n = rng.below(chars.len() + 1);
                chars.truncate(n);
            }
            // insert a character
            1 | 2 => {
                let at = rng.below(chars.len() + 1);
                let c = if rng.below(4) == 0 {
                    char::from(b'a' + rng.below(26) as u8)
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                };
                chars.insert(at, c);
            }
            // delete a character
            3 => {
                if !chars.is_empty() {
                    let at = rng.below(chars.len());
                    chars.remove(at);
                }
            }
            // splice in a slice of another seed
            4 => {
                let other: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
                let a = rng.below(other.len() + 1);
                let b = a + rng.below(other.len() - a + 1);
                let at = rng.below(chars.len() + 1);
                chars.splice(at..at, other[a..b].iter().copied());
            }
            // duplicate a run
            _ => {
                let a = rng.below(chars.len() + 1);
                let b = a + rng.below((chars.len() - a).min(12) + 1);
                let run: Vec<char> = chars[a..b].to_vec();
                chars.splice(b..b, run);
            }
        }
    }
    chars.into_iter().collect()
}

/// Pure noise over the alphabet, wrapped in a segment half of the time.
fn noise(rng: &mut XorShift) -> String {
    let len = rng.below(24);
    let body: String = (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect();
    if rng.below(2) == 0 {
        format!("<? {body} ?>")
    } else {
        body
    }
}

fn check_span(src: &str, span: &std::ops::Range<usize>, what: &str) {
    assert!(
        span.start <= span.end && span.end <= src.len(),
        "{what}: span {span:?} out of bounds for {src:?} (len {})",
        src.len()
    );
    assert!(
        src.get(span.clone()).is_some(),
        "{what}: span {span:?} not on char boundaries in {src:?}"
    );
}

fn scopes() -> (Scope, Scope) {
    let roots = || {
        vec![
            (
                "contact",
                Arc::new(serde_json::json!({
                    "name": "ana", "cpf": "123.456.789-00", "tags": ["a", "b"],
                    "extra": {"cidade": "Recife"}, "age": 30
                })),
            ),
            (
                "context",
                Arc::new(serde_json::json!({
                    "tries": 2, "obj": {"a": [1]}, "a": true, "b": 0, "list": [1, 2, 3]
                })),
            ),
            ("input", Arc::new(serde_json::json!({"text": "12345"}))),
            ("intent", Arc::new(serde_json::json!("saudacao"))),
            ("intents", Arc::new(serde_json::json!([]))),
            ("confidence", Arc::new(serde_json::json!(0.9))),
            ("score_level", Arc::new(serde_json::json!("high"))),
            (
                "entities",
                Arc::new(serde_json::json!([{"entity": "cor", "value": "azul"}])),
            ),
        ]
    };
    (Scope::new(roots(), false), Scope::new(roots(), true))
}

fn exercise(src: &str, lenient: &Scope, strict: &Scope) -> bool {
    match Template::compile(src) {
        Err(errors) => {
            assert!(!errors.is_empty(), "compile failed without errors: {src:?}");
            for e in &errors {
                check_span(src, &e.span, "load error");
                assert!(!e.message.is_empty());
            }
            false
        }
        Ok(t) => {
            for scope in [lenient, strict] {
                let mut missing = Vec::new();
                if let Err(e) = t.render(scope, &mut missing) {
                    check_span(src, &e.span, "run error");
                }
                for m in &missing {
                    check_span(src, &m.span, "missing read");
                }
            }
            true
        }
    }
}

#[test]
fn random_and_mutated_templates_never_panic() {
    let seeds = seeds();
    assert!(seeds.len() > 100, "the fixtures feed the corpus");
    let (lenient, strict) = scopes();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let (mut compiled, mut total) = (0usize, 0usize);
    for s in &seeds {
        compiled += usize::from(exercise(s, &lenient, &strict));
        total += 1;
    }
    for i in 0..6000 {
        let src = if i % 5 == 0 {
            noise(&mut rng)
        } else {
            mutate(&mut rng, &seeds)
        };
        compiled += usize::from(exercise(&src, &lenient, &strict));
        total += 1;
    }
    // Both paths were exercised: plenty compile, plenty fail.
    assert!(compiled > total / 10, "{compiled} of {total} compiled");
    assert!(compiled < total * 9 / 10, "{compiled} of {total} compiled");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fuzzing took {:?}",
        started.elapsed()
    );
}

#[test]
fn nested_logic_compiles_in_linear_time() {
    // Each level used to duplicate its left operand in the lowered source: 20 levels
    // meant a million copies. Now the source grows linearly.
    let nest = |levels: usize| {
        let mut e = String::from("$a");
        for _ in 0..levels {
            e = format!("!({e} || $b) && ($c ?? $d)");
        }
        format!("<? {e} ?>")
    };
    let started = Instant::now();
    let t = Template::compile(&nest(10)).expect("compiles");
    assert!(started.elapsed() < Duration::from_secs(1));
    let (lenient, _) = scopes();
    assert_eq!(
        t.render(&lenient, &mut Vec::new()).unwrap(),
        serde_json::Value::Null,
        "as JavaScript: `!(false || 0) && (undefined ?? undefined)` is undefined"
    );
    // Forty levels of operators alone are evaluated from the tree, with no minijinja
    // source to nest: they compile and render.
    let deep = Template::compile(&nest(40)).expect("operators alone evaluate from the tree");
    assert_eq!(
        deep.render(&lenient, &mut Vec::new()).unwrap(),
        serde_json::Value::Null
    );
    // With a method call at each level the expression is lowered to minijinja, and
    // deeper than the lowered-depth bound is a load error, not a stack overflow.
    let mut src = String::from("$a");
    for _ in 0..40 {
        src = format!("!({src} || $b.trim()) && ($c ?? $d)");
    }
    let src = format!("<? {src} ?>");
    let errs = Template::compile(&src).expect_err("too deep");
    assert!(
        errs[0].message.contains("nested too deeply"),
        "{:?}",
        errs[0]
    );
    check_span(&src, &errs[0].span, "deep logic");
}

#[test]
fn long_chains_are_bounded_not_overflowing() {
    for src in [
        format!("<? {}1 ?>", "1+".repeat(3000)),
        format!("<? 'x'{} ?>", ".trim()".repeat(1500)),
        format!("<? {}0 ?>", "1 ? 2 : ".repeat(1500)),
        format!("<? {}$x ?>", "$x.a.".repeat(1000)),
    ] {
        let errs = Template::compile(&src).expect_err("bounded");
        assert_eq!(
            errs[0].kind,
            transbordo::template::TemplateErrorKind::Limit,
            "{:?}",
            errs[0]
        );
        check_span(&src, &errs[0].span, "long chain");
    }
    // Realistic lengths still work: a 30-term concatenation.
    let src = format!("<? {}'end' ?>", "contact.name + ' ' + ".repeat(15));
    let (lenient, _) = scopes();
    let v = Template::compile(&src)
        .expect("compiles")
        .render(&lenient, &mut Vec::new())
        .unwrap();
    assert_eq!(v, serde_json::json!(format!("{}end", "ana ".repeat(15))));
}

#[test]
fn size_and_depth_limits_are_load_errors() {
    let long = format!("<? {}1 ?>", "1+".repeat(9000));
    let errs = Template::compile(&long).expect_err("too long");
    assert!(errs[0].message.contains("longer than"), "{:?}", errs[0]);
    check_span(&long, &errs[0].span, "long");

    let deep = format!("<? {}1{} ?>", "[".repeat(200), "]".repeat(200));
    let errs = Template::compile(&deep).expect_err("too deep");
    assert!(errs[0].message.contains("nested deeper"), "{:?}", errs[0]);

    let nots = format!("<? {}1 ?>", "- ".repeat(200));
    let errs = Template::compile(&nots).expect_err("too many prefix operators");
    assert!(errs[0].message.contains("in a row"), "{:?}", errs[0]);

    // Just under the nesting limit still works.
    let ok = format!("<? {}1{} ?>", "(".repeat(40), ")".repeat(40));
    let (lenient, _) = scopes();
    let t = Template::compile(&ok).expect("40 levels compile");
    assert_eq!(
        t.render(&lenient, &mut Vec::new()).unwrap(),
        serde_json::json!(1)
    );
}

/// Long flat chains of one left-associative operator are not nesting: they compile and
/// evaluate on either evaluator (a method call forces the minijinja one), where 70 `+`
/// terms used to be refused as "nested too deeply". The operator bound still holds.
#[test]
fn long_flat_chains_compile_and_evaluate() {
    let (lenient, _) = scopes();
    for (op, term) in [("+", "1"), ("&&", "true"), ("||", "false"), ("??", "null")] {
        for (term, n) in [(term, 200), ("'s'.trim()", 150)] {
            let body = vec![term; n].join(&format!(" {op} "));
            let src = format!("<? {body} ?>");
            let t = Template::compile(&src).unwrap_or_else(|e| panic!("{op} {term}: {e:?}"));
            t.render(&lenient, &mut Vec::new())
                .unwrap_or_else(|e| panic!("{op} {term}: {e:?}"));
        }
    }
    let sum = Template::compile(&format!("<? {} ?>", vec!["1"; 300].join(" + "))).unwrap();
    assert_eq!(
        sum.render(&lenient, &mut Vec::new()).unwrap(),
        serde_json::json!(300)
    );
    let text = Template::compile(&format!("<? {} ?>", vec!["'a'"; 70].join(" + "))).unwrap();
    assert_eq!(
        text.render(&lenient, &mut Vec::new()).unwrap(),
        serde_json::json!("a".repeat(70))
    );
    // Past the operator bound: a load error, never a stack overflow.
    let errs = Template::compile(&format!("<? {} ?>", vec!["1"; 600].join(" + "))).unwrap_err();
    assert!(errs[0].message.contains("operators"), "{:?}", errs[0]);
}
