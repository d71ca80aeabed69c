//! The README and the guides in `docs/` are held to the code: every fenced ```json and
//! ```toml block in them is loaded or parsed, and every relative link must resolve.
//!
//! A block says what it is on its fence line, after the language:
//! - ```json flow: a flow, loaded by `transbordo::Engine` with the integrations of
//!   `examples/sandbox-integrations.toml`; it must load without errors;
//! - ```json flow error: an intentional error example; it must NOT load;
//! - ```json flow-test name=FILE.test.json: a flow test file, run (as `transbordo test`
//!   does) from a copy of `examples/` under that name; every case must pass;
//! - ```json run-body: a `POST /v1/conversations/{id}/run` body: an object with the
//!   route's keys only, whose inline `flow` must load as above;
//! - ```json payload: one JSON document; ```json lines: one JSON document per line;
//! - ```toml integrations: an integrations file (`Integrations::from_toml_str`);
//! - ```toml service: a `transbordo serve` config (`ServiceConfig::from_toml_str`), its
//!   relative paths taken from `examples/`;
//! - ```json fragment, ```toml fragment: deliberately partial (`…` elisions); counted only.
//!
//! `"${NAME}"` values are given a placeholder in the environment first. A json or toml
//! block without a recognised tag fails, and so does a fence without any language (plain
//! text is ```text), so an example cannot slip past unchecked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use transbordo::authoring::flowtest::{self, TestOptions};
use transbordo::providers::Integrations;
use transbordo::service::ServiceConfig;
use transbordo::{Engine, RunOptions, Severity, Store};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One fenced block of a Markdown file.
struct Block {
    /// The Markdown file, relative to the crate root.
    file: String,
    /// `README.md:12` (the fence line), for messages.
    at: String,
    /// 1-based line of the block's first content line.
    first_line: usize,
    lang: String,
    tags: Vec<String>,
    text: String,
}

/// What a tagged block is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Flow,
    FlowError,
    FlowTest(String),
    RunBody,
    Payload,
    Lines,
    Integrations,
    Service,
    Fragment,
}

/// README.md and docs/*.md, relative to the crate root, sorted.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/ exists")
        .map(|e| {
            e.expect("a docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The fenced blocks of a file. A fence left open is a failure (everything after it
/// would silently be code).
fn blocks(rel: &str, src: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, Vec<String>, Vec<&str>)> = None;
    for (i, line) in src.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            None if fence => {
                let info = line.trim_start().trim_start_matches('`');
                let mut words = info.split_whitespace().map(str::to_string);
                let lang = words.next().unwrap_or_default();
                open = Some((i + 1, lang, words.collect(), Vec::new()));
            }
            None => {}
            Some((start, lang, tags, body)) if fence => out.push(Block {
                file: rel.to_string(),
                at: format!("{rel}:{start}"),
                first_line: start + 1,
                lang,
                tags,
                text: body.join("\n"),
            }),
            Some((start, lang, tags, mut body)) => {
                body.push(line);
                open = Some((start, lang, tags, body));
            }
        }
    }
    if let Some((start, ..)) = open {
        panic!("{rel}:{start}: this code fence is never closed");
    }
    out
}

impl Block {
    /// The block's text after as many empty lines as precede it in its file, so the
    /// parsers' line numbers are the Markdown file's.
    fn padded(&self) -> String {
        "\n".repeat(self.first_line - 1) + &self.text
    }
}

/// `Ok(None)`: a block of another language, not checked.
fn classify(b: &Block) -> Result<Option<Kind>, String> {
    let tags: Vec<&str> = b.tags.iter().map(String::as_str).collect();
    let kind = match (b.lang.as_str(), tags.as_slice()) {
        ("", _) => {
            return Err("a code fence without a language (write ```text for plain text)".into())
        }
        ("json", ["flow"]) => Kind::Flow,
        ("json", ["flow", "error"]) => Kind::FlowError,
        ("json", ["flow-test", name]) if name.starts_with("name=") => {
            Kind::FlowTest(name["name=".len()..].to_string())
        }
        ("json", ["run-body"]) => Kind::RunBody,
        ("json", ["payload"]) => Kind::Payload,
        ("json", ["lines"]) => Kind::Lines,
        ("toml", ["integrations"]) => Kind::Integrations,
        ("toml", ["service"]) => Kind::Service,
        ("json" | "toml", ["fragment"]) => Kind::Fragment,
        ("json" | "toml", _) => {
            return Err(format!(
                "```{} {} is not a recognised example tag (json: flow, flow error, \
                 flow-test name=…, run-body, payload, lines, fragment; toml: integrations, service, \
                 fragment)",
                b.lang,
                b.tags.join(" ")
            ))
        }
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// Every `"${NAME}"` of a TOML example gets a value that passes the parsers' checks
/// (tokens need 16 characters; a database variable must be a URL).
fn provide_env(text: &str) {
    let mut rest = text;
    while let Some(i) = rest.find("\"${") {
        let after = &rest[i + 3..];
        let Some(end) = after.find("}\"") else { break };
        let name = &after[..end];
        let value = if name.contains("DATABASE_URL") {
            "postgres://docs@127.0.0.1:5432/docs".to_string()
        } else {
            format!("docs-example-value-for-{name}")
        };
        // Only this test sets or reads these variables.
        std::env::set_var(name, value);
        rest = &after[end..];
    }
}

fn engine() -> Engine {
    let integrations =
        Integrations::load(&Path::new(ROOT).join("examples/sandbox-integrations.toml"))
            .expect("examples/sandbox-integrations.toml loads");
    Engine::new().with_integrations(integrations)
}

/// Runs a flow test example as `transbordo test` would, from a copy of `examples/`.
fn run_flow_test(b: &Block, name: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    copy_dir(&Path::new(ROOT).join("examples"), dir.path()).map_err(|e| e.to_string())?;
    let path = dir.path().join(name);
    std::fs::write(&path, b.padded()).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let reports = rt
        .block_on(flowtest::run(
            std::slice::from_ref(&path),
            &TestOptions::default(),
        ))
        .map_err(|e| e.to_string())?;
    let (passed, failed, errors) = flowtest::totals(&reports);
    if failed + errors > 0 || passed == 0 {
        let cases: Vec<String> = reports
            .iter()
            .flat_map(|r| &r.cases)
            .map(|c| {
                let failures: Vec<String> = c
                    .failures
                    .iter()
                    .map(|f| {
                        format!(
                            "\n    {}:{}:{}: {}: expected {:?}, got {:?} ({})",
                            b.file, f.line, f.column, f.pointer, f.expected, f.got, f.note
                        )
                    })
                    .collect();
                let why = c.message.as_deref().unwrap_or("");
                format!("{:?} `{}` {why}{}", c.status, c.name, failures.concat())
            })
            .collect();
        return Err(format!(
            "{passed} passed, {failed} failed, {errors} errors:\n{}",
            cases.join("\n")
        ));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn check_block(engine: &Engine, b: &Block, kind: &Kind) -> Result<(), String> {
    match kind {
        Kind::Flow | Kind::FlowError => {
            let loaded = engine.load(&b.padded(), &b.file);
            match (kind, loaded) {
                (Kind::Flow, Err(e)) => Err(e
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(|d| d.one_line())
                    .collect::<Vec<_>>()
                    .join("\n")),
                (Kind::FlowError, Ok(_)) => {
                    Err("tagged `flow error`, but the flow loads without errors".into())
                }
                _ => Ok(()),
            }
        }
        Kind::FlowTest(name) => run_flow_test(b, name),
        Kind::RunBody => {
            let body: serde_json::Value =
                serde_json::from_str(&b.text).map_err(|e| format!("not JSON: {e}"))?;
            let obj = body.as_object().ok_or("a run body is a JSON object")?;
            // The keys `POST …/run` accepts (src/service/api.rs refuses any other).
            if let Some(k) = obj
                .keys()
                .find(|k| !["flow", "flow_file", "context", "strict"].contains(&k.as_str()))
            {
                return Err(format!("`{k}` is not a key of a run body"));
            }
            let flow = obj.get("flow").ok_or("no inline `flow`")?;
            engine
                .load(&flow.to_string(), &b.at)
                .map(drop)
                .map_err(|e| {
                    e.diagnostics
                        .iter()
                        .map(|d| d.one_line())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
        }
        Kind::Payload => serde_json::from_str::<serde_json::Value>(&b.padded())
            .map(drop)
            .map_err(|e| format!("not JSON: {e}")),
        Kind::Lines => {
            for (i, line) in b
                .text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                serde_json::from_str::<serde_json::Value>(line)
                    .map_err(|e| format!("line {}: not JSON: {e}", b.first_line + i))?;
            }
            Ok(())
        }
        Kind::Integrations => {
            provide_env(&b.text);
            Integrations::from_toml_str(&b.padded(), &b.file)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Kind::Service => {
            provide_env(&b.text);
            ServiceConfig::from_toml_str(&b.padded(), &b.file, &Path::new(ROOT).join("examples"))
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Kind::Fragment => Ok(()),
    }
}

#[test]
fn every_json_and_toml_example_in_the_docs_loads() {
    let engine = engine();
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for rel in markdown_files() {
        for b in blocks(&rel, &read(&rel)) {
            match classify(&b) {
                Err(e) => problems.push(format!("{}: {e}", b.at)),
                Ok(None) => {}
                Ok(Some(kind)) => {
                    if let Err(e) = check_block(&engine, &b, &kind) {
                        problems.push(format!("{} ({kind:?}): {e}", b.at));
                    }
                    *counts.entry(kind).or_default() += 1;
                }
            }
        }
    }
    // The service config the guides point at is parsed too.
    let service = read("examples/service.toml");
    provide_env(&service);
    if let Err(e) = ServiceConfig::from_file(&Path::new(ROOT).join("examples/service.toml")) {
        problems.push(format!("examples/service.toml: {e}"));
    }
    println!("checked examples by kind: {counts:?}");
    assert!(
        problems.is_empty(),
        "examples that do not hold:\n{}",
        problems.join("\n\n")
    );
    // Every kind the guides rely on is really exercised (a tag typo would otherwise
    // turn a checked example into an unchecked one only through the error above).
    for kind in [
        Kind::Flow,
        Kind::FlowError,
        Kind::Payload,
        Kind::Integrations,
        Kind::Service,
    ] {
        assert!(
            counts.contains_key(&kind),
            "no {kind:?} example was found: {counts:?}"
        );
    }
    assert!(
        counts.keys().any(|k| matches!(k, Kind::FlowTest(_))),
        "{counts:?}"
    );
}

/// GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(src: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in src.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Link targets of `[text](target)` outside code blocks and inline code.
fn links(src: &str) -> Vec<(usize, String)> {
    let mut in_code = false;
    let mut out = Vec::new();
    for (i, line) in src.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop inline code spans: `[x](y)` inside backticks is not a link.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = text.as_str();
        while let Some(p) = rest.find("](") {
            let after = &rest[p + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for rel in markdown_files() {
        let src = read(&rel);
        let dir = Path::new(&rel)
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        for (line, target) in links(&src) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file: PathBuf = if path.is_empty() {
                PathBuf::from(&rel)
            } else {
                dir.join(path)
            };
            let full = Path::new(ROOT).join(&file);
            if !full.exists() {
                broken.push(format!(
                    "{rel}:{line}: `{target}`: {} does not exist",
                    file.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                if file.extension().is_some_and(|e| e == "md") {
                    let text = std::fs::read_to_string(&full).unwrap_or_default();
                    if !anchors(&text).iter().any(|a| a == anchor) {
                        broken.push(format!(
                            "{rel}:{line}: `{target}`: no heading with the anchor #{anchor} in {}",
                            file.display()
                        ));
                    }
                }
            }
        }
    }
    println!("checked {checked} relative links");
    assert!(checked > 0);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Repository paths the docs name (`examples/…`, `scripts/…`, `src/…`, …), globs and
/// placeholders (`*`, `<id>`, `{x}`) aside.
fn repository_paths(src: &str) -> Vec<String> {
    const ROOTS: &[&str] = &[
        "examples/",
        "scripts/",
        "tests/",
        "src/",
        "docs/",
        "schemas/",
        "migrations/",
        "benches/",
        "grammar/",
    ];
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_./-*{}<>".contains(c);
    src.split(|c: char| !path_char(c))
        .filter(|t| ROOTS.iter().any(|r| t.starts_with(r)))
        .filter(|t| !t.contains(['*', '<', '{']))
        .map(|t| t.trim_end_matches(['.', ',', ':', ';']).to_string())
        .collect()
}

#[test]
fn every_repository_path_the_docs_name_exists() {
    // Named on purpose though absent: a new provider's file in the how-to, and the
    // database the walkthrough's service creates.
    const NOT_IN_THE_REPOSITORY: &[&str] = &["src/providers/acme.rs", "examples/transbordo.db"];
    let mut missing = Vec::new();
    let mut checked = 0;
    for rel in markdown_files() {
        for path in repository_paths(&read(&rel)) {
            checked += 1;
            if !NOT_IN_THE_REPOSITORY.contains(&path.as_str())
                && !Path::new(ROOT).join(&path).exists()
            {
                missing.push(format!("{rel}: `{path}` does not exist"));
            }
        }
    }
    println!("checked {checked} repository paths");
    assert!(checked > 0);
    assert!(missing.is_empty(), "stale paths:\n{}", missing.join("\n"));
}

#[test]
fn the_flow_authors_guide_documents_every_parameter() {
    let guide = read("docs/flow-authors.md");
    let engine = Engine::new();
    let schema = engine.json_schema();
    let mut missing = Vec::new();
    for name in engine.action_names() {
        let Some(params) = schema["$defs"][format!("parameters.{name}")]["properties"].as_object()
        else {
            missing.push(format!("the schema of `{name}` has no parameters"));
            continue;
        };
        for p in params.keys() {
            if !guide.contains(&format!("`{p}`")) {
                missing.push(format!("`{p}` of `{name}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/flow-authors.md does not mention {missing:?}"
    );
}

/// The README's tour shows an abridged `render` of `examples/zendesk-ticket.json` with the
/// sandbox's integrations; what it shows must stay what the dry run gives.
#[test]
fn the_readme_render_excerpt_matches_a_dry_run() {
    let engine = engine();
    let flow = engine
        .load(
            &read("examples/zendesk-ticket.json"),
            "examples/zendesk-ticket.json",
        )
        .expect("the example flow loads");
    let ctx: serde_json::Value =
        serde_json::from_str(&read("examples/context.json")).expect("the example context is JSON");
    let store = Store::from_json(&ctx).expect("the example context is a context document");
    let opts = RunOptions {
        dry_run: true,
        ..RunOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let doc = rt.block_on(engine.run(&flow, store, &opts)).render_json();
    let readme = read("README.md");
    assert!(readme.contains("render examples/zendesk-ticket.json"));
    assert!(readme.contains("--integrations examples/sandbox-integrations.toml"));
    assert_eq!(
        doc["messages"][0]["message"]["text"],
        "Aguarde um minuto..."
    );
    let urls: Vec<&str> = doc["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["url"].as_str())
        .collect();
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(
        urls[0].ends_with("/api/v2/users/create_or_update.json"),
        "{urls:?}"
    );
    assert!(urls[1].ends_with("/api/v2/tickets.json"), "{urls:?}");
    let ticket = &doc["requests"][1]["body"]["ticket"];
    assert_eq!(ticket["subject"], "Pedido 123 atrasado");
    assert_eq!(ticket["tags"][0], "vip");
    let result = &doc["context"]["ticketResponse"]["response"];
    assert_eq!(result["status"], "ok");
    assert_eq!(result["body"]["ticket"]["id"], 0);
    assert_eq!(result["body"]["ticket"]["status"], "new");
}

/// The README's `check` output is an excerpt of the CLI's snapshot for the same command
/// (tests/cli.rs `check_lists_every_problem_and_exits_1`): every line it shows is there.
#[test]
fn the_readme_check_excerpt_is_the_cli_output() {
    let readme = read("README.md");
    let snapshot = read("snapshots/cli__check_lists_every_problem_and_exits_1.snap");
    let block = blocks("README.md", &readme)
        .into_iter()
        .find(|b| b.text.starts_with("$ transbordo check"))
        .expect("the README shows a `transbordo check` run");
    let mut lines = block.text.lines();
    let command = lines.next().unwrap_or_default();
    assert!(
        command.ends_with(
            "tests/fixtures/load_errors/unknown_action.json tests/fixtures/load_errors/trailing_comma.json"
        ),
        "the README's check command is not the snapshot's: {command}"
    );
    let missing: Vec<&str> = lines
        .filter(|l| *l != "…" && !snapshot.contains(l))
        .collect();
    assert!(missing.is_empty(), "not in the CLI's output: {missing:#?}");
}

#[test]
fn the_readme_is_a_front_door() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; move detail to a guide in docs/"
    );
}

#[test]
fn the_checker_catches_what_it_should() {
    // The checks above are only worth something if they can fail: an untagged json
    // block, a flow that does not load, and a broken link are each caught.
    let src = "# T\n\n```json\n{}\n```\n\n```json flow\n[{\"name\": \"send_mesage\"}]\n```\n\n```\nplain\n```\n";
    let bs = blocks("t.md", src);
    assert_eq!(bs.len(), 3);
    assert!(classify(&bs[0]).is_err());
    let kind = classify(&bs[1]).expect("tagged").expect("checked");
    assert!(check_block(&Engine::new(), &bs[1], &kind).is_err());
    assert!(classify(&bs[2]).is_err());
    assert_eq!(
        links("see [a](x.md#y) and `[b](z)`"),
        vec![(1, "x.md#y".to_string())]
    );
    assert_eq!(
        repository_paths("run `scripts/x.sh`, see examples/*.json and (src/a.rs)."),
        vec!["scripts/x.sh".to_string(), "src/a.rs".to_string()]
    );
    assert_eq!(
        slug(" `check`: every problem, with its place"),
        "check-every-problem-with-its-place"
    );
}
