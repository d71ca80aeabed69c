//! Loading a flow document: parse JSON with positions, recognise the two shapes
//! (actions array, node), compile every template once, and validate everything that
//! can be known before anything runs. All problems are collected, not just the first.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::actions::{Action, CheckCx, Registry};
use crate::flow::json::{self, Node, NodeKind};
use crate::flow::{Diagnostic, Severity};
use crate::interp::Services;
use crate::template::{
    did_you_mean, pointer, push_index, ExprCache, LocatedError, PathStep, TValue, TemplateErrorKind,
};
use indexmap::IndexMap;

/// A loaded, compiled flow: ready to run any number of times.
pub struct Flow {
    /// The file name given at load.
    pub file: String,
    /// The source text (kept for diagnostics).
    pub source: Arc<String>,
    /// Warnings found while loading.
    pub warnings: Vec<Diagnostic>,
    pub(crate) node: CompiledNode,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("file", &self.file)
            .field("actions", &self.node.actions.len())
            .finish()
    }
}

impl Flow {
    /// Number of actions.
    pub fn action_count(&self) -> usize {
        self.node.actions.len()
    }

    /// Names of the actions, in order.
    pub fn action_names(&self) -> Vec<&str> {
        self.node.actions.iter().map(|a| a.name.as_str()).collect()
    }

    /// Renders every action's parameters against one store, without running anything
    /// (a preview; also what the render benchmark measures). Missing values are appended
    /// to `missing` as (JSON pointer, read).
    pub fn render_parameters(
        &self,
        store: &crate::interp::Store,
        strict: bool,
        missing: &mut Vec<(String, crate::template::MissingRead)>,
    ) -> Vec<Result<Value, LocatedError>> {
        // A preview is bounded like a run: one default budget for the whole node.
        let budget = crate::template::Budget::new(crate::template::RunLimits::default());
        let scope = store.scope(strict).with_budget(budget);
        self.node
            .actions
            .iter()
            .map(|a| a.params.render(&scope, missing))
            .collect()
    }
}

/// A flow that could not be loaded: every problem found (errors and warnings).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} cannot be loaded: {} error(s)", file, diagnostics.iter().filter(|d| d.severity == Severity::Error).count())]
pub struct LoadError {
    /// The file name given at load.
    pub file: String,
    /// The source text.
    pub source_text: Arc<String>,
    /// Every problem, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

pub(crate) struct CompiledNode {
    pub(crate) context: Vec<(String, TValue, String)>,
    pub(crate) contact: Vec<(String, TValue, String)>,
    pub(crate) actions: Vec<CompiledAction>,
    pub(crate) output: Vec<(TValue, String)>,
}

pub(crate) struct CompiledAction {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) action: Arc<dyn Action>,
    pub(crate) params: TValue,
    pub(crate) result_variable: Option<String>,
    pub(crate) pointer: String,
}

/// What loading may consult.
pub struct LoadOptions<'a> {
    /// Known actions.
    pub registry: &'a Registry,
    /// Services (integrations) for provider checks.
    pub services: &'a Services,
    /// Whether an integrations file was supplied.
    pub has_integrations: bool,
    /// A sample context document: variables present there are not reported as unset.
    pub sample: Option<&'a Value>,
}

struct Loader<'a> {
    src: &'a str,
    file: &'a str,
    /// The whole document, when it was parsed as one tree (node documents).
    root: Option<&'a Node>,
    /// The action being loaded, when an actions array is read one item at a time: its
    /// index and where it starts. Its tree is taken apart as it compiles, and parsed
    /// again only where a problem or a first read must be placed (`current_node`).
    current: Option<(usize, usize)>,
    current_node: std::cell::OnceCell<Option<Node>>,
    diags: Vec<Diagnostic>,
    written: BTreeSet<String>,
    /// The first read of each context variable: pointer and source position (start,
    /// end, column inside the string), resolved while its action is at hand.
    read: IndexMap<String, (String, usize, usize, Option<usize>), foldhash::fast::RandomState>,
    cache: ExprCache,
}

impl Loader<'_> {
    /// The node at `pointer`: in the whole tree, or in the current action of a
    /// document read item by item.
    fn lookup(&self, pointer: &str) -> Option<&Node> {
        if let Some(root) = self.root {
            return root.pointer(pointer);
        }
        let &(i, start) = self.current.as_ref()?;
        let item = self
            .current_node
            .get_or_init(|| json::parse_at(self.src, start))
            .as_ref()?;
        let rest = pointer.strip_prefix('/')?;
        let (index, rest) = match rest.find('/') {
            Some(k) => (&rest[..k], &rest[k..]),
            None => (rest, ""),
        };
        (index.parse::<usize>().ok()? == i).then_some(())?;
        item.pointer(rest)
    }

    /// Source start, end and column inside the string of a span of the string at
    /// `pointer` (the whole value when it is not a string).
    fn string_position(&self, pointer: &str, s: usize, e: usize) -> (usize, usize, Option<usize>) {
        match self.lookup(pointer) {
            Some(n) => match &n.kind {
                NodeKind::String(v) => {
                    let a = json::string_source_offset(self.src, n.span, s);
                    let b = json::string_source_offset(self.src, n.span, e);
                    (a, b, Some(v.get(..s).map_or(0, |p| p.chars().count()) + 1))
                }
                _ => (n.span.start, n.span.end, None),
            },
            None => (0, 1, None),
        }
    }

    fn at(
        &mut self,
        severity: Severity,
        code: &'static str,
        pointer: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let node = self.lookup(pointer);
        let (start, end) = node.map_or((0, 0), |n| (n.span.start, n.span.end));
        self.push(
            severity,
            code,
            pointer,
            message.into(),
            help,
            start,
            end.saturating_sub(start).max(1),
            None,
        );
    }

    /// Points at the key of a member rather than its value (unknown keys).
    fn at_key(
        &mut self,
        severity: Severity,
        code: &'static str,
        parent: &str,
        key: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let member = self.lookup(parent).and_then(|n| match &n.kind {
            NodeKind::Object(ms) => ms.iter().rev().find(|m| m.key == key).map(|m| m.key_span),
            _ => None,
        });
        let ptr = format!("{parent}/{}", json::escape_pointer_token(key));
        let (start, len) = member.map_or((0, 1), |s| (s.start, s.end - s.start));
        self.push(severity, code, &ptr, message.into(), help, start, len, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        pointer: &str,
        message: String,
        help: Option<String>,
        start: usize,
        len: usize,
        string_column: Option<usize>,
    ) {
        let (line, column) = json::line_col(self.src, start);
        self.diags.push(Diagnostic {
            severity,
            code,
            message,
            help,
            file: self.file.to_string(),
            line,
            column,
            pointer: pointer.to_string(),
            string_column,
            span: (start, len),
        });
    }

    fn template_errors(&mut self, base: &str, errors: Vec<LocatedError>) {
        for e in errors {
            let pointer = format!("{base}{}", e.pointer);
            let code = match e.error.kind {
                TemplateErrorKind::Syntax => "template::syntax",
                TemplateErrorKind::Unknown => "template::unknown",
                TemplateErrorKind::Limit => "template::limit",
                _ => "template::error",
            };
            let node = self.lookup(&pointer);
            let (start, end, col) = match node {
                Some(n) if matches!(n.kind, NodeKind::String(_)) => {
                    let s = json::string_source_offset(self.src, n.span, e.error.span.start);
                    let t = json::string_source_offset(self.src, n.span, e.error.span.end);
                    let decoded = match &n.kind {
                        NodeKind::String(v) => {
                            v.get(..e.error.span.start).map_or(0, |p| p.chars().count())
                        }
                        _ => 0,
                    };
                    (s, t.max(s + 1), Some(decoded + 1))
                }
                Some(n) => (n.span.start, n.span.end, None),
                None => (0, 1, None),
            };
            self.push(
                Severity::Error,
                code,
                &pointer,
                e.error.message,
                e.error.help,
                start,
                end - start,
                col,
            );
        }
    }

    /// Compiles a value, reporting template errors under `pointer`, and notes the
    /// variables it reads.
    fn compile(&mut self, v: Value, pointer: &str) -> TValue {
        // The first read of each variable, in document order, is the one reported:
        // later ones need no pointer built.
        let read = &self.read;
        let mut first: Vec<(String, String, std::ops::Range<usize>)> = Vec::new();
        let compiled = TValue::compile_noting_reads(v, &mut self.cache, &mut |p, e| {
            for (name, span) in e.context_reads() {
                if !read.contains_key(name) && !first.iter().any(|(n, ..)| n == name) {
                    first.push((name.to_string(), format!("{pointer}{p}"), span));
                }
            }
        });
        match compiled {
            Ok(t) => {
                for (name, ptr, span) in first {
                    let (a, b, col) = self.string_position(&ptr, span.start, span.end);
                    self.read.insert(name, (ptr, a, b, col));
                }
                t
            }
            Err(errors) => {
                self.template_errors(pointer, errors);
                TValue::Static(Box::new(Value::Null))
            }
        }
    }
}

/// Loads `source` (named `file` in messages).
pub fn load(source: Arc<String>, file: &str, opts: &LoadOptions<'_>) -> Result<Flow, LoadError> {
    let src = source.as_str();
    let fail = |diagnostics: Vec<Diagnostic>| LoadError {
        file: file.to_string(),
        source_text: source.clone(),
        diagnostics,
    };
    let syntax = |e: json::JsonError| {
        let (line, column) = json::line_col(src, e.span.start);
        fail(vec![Diagnostic {
            severity: Severity::Error,
            code: "json::syntax",
            message: e.message,
            help: None,
            file: file.to_string(),
            line,
            column,
            pointer: String::new(),
            string_column: None,
            span: (
                e.span.start,
                (e.span.end.saturating_sub(e.span.start)).max(1),
            ),
        }])
    };
    let loader = |root| Loader {
        src,
        file,
        root,
        current: None,
        current_node: std::cell::OnceCell::new(),
        diags: Vec::new(),
        written: BTreeSet::new(),
        read: IndexMap::default(),
        cache: ExprCache::new(),
    };
    let mut node = CompiledNode {
        context: Vec::new(),
        contact: Vec::new(),
        actions: Vec::new(),
        output: Vec::new(),
    };
    // An actions array, the shape of large flows, is read one action at a time: each
    // action's tree is dropped once compiled, so the document never exists whole.
    if json::array_items(src).is_some() {
        let mut l = loader(None);
        let mut i = 0;
        let mut failed = None;
        // Each item is parsed straight into a plain value; its positioned tree is built
        // only where a problem or a first read must be placed (`Loader::lookup`).
        for_each_item(src, |item| {
            let (value, start, duplicates) = match item {
                Ok(item) => item,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            };
            l.current = Some((i, start));
            l.current_node = std::cell::OnceCell::new();
            // Rare: the item is parsed again to place each duplicate (and kept for the
            // lookups that follow).
            if duplicates {
                if let Some(item) = json::parse_at(src, start) {
                    report_duplicate_keys(&mut l, &item, Some(i));
                    l.current_node = std::cell::OnceCell::from(Some(item));
                }
            }
            compile_action(&mut l, i, value, "", opts, &mut node);
            i += 1;
            true
        });
        if let Some(e) = failed {
            // The whole-document parser words the problem and places it.
            return Err(syntax(json::parse(src).err().unwrap_or(e)));
        }
        l.current = None;
        return finish(l, node, opts, source.clone(), fail);
    }
    let root = json::parse(src).map_err(syntax)?;
    let mut l = loader(Some(&root));
    report_duplicate_keys(&mut l, &root, None);

    // Each part is converted to a plain value on its own, never the whole document:
    // a large flow would otherwise exist three times over while it loads.
    match &root.kind {
        NodeKind::Array(actions) => compile_actions(&mut l, actions, "", opts, &mut node),
        NodeKind::Object(members) => {
            let mut seen: Vec<&str> = Vec::new();
            for k in members.iter().map(|m| m.key.as_str()) {
                if seen.contains(&k) {
                    continue;
                }
                seen.push(k);
                if !matches!(k, "context" | "contact" | "actions" | "output") {
                    let help = did_you_mean(k, ["context", "contact", "actions", "output"]).map(|s| format!("did you mean `{s}`?"));
                    l.at_key(Severity::Warning, "flow::unknown_key", "", k, format!("unknown key `{k}` in the node (kept, not used)"), help);
                }
            }
            for block in ["context", "contact"] {
                match root.get(block).map(json::Node::to_value) {
                    None => {}
                    Some(Value::Object(vars)) => {
                        for (k, v) in vars {
                            let ptr = format!("/{block}/{}", json::escape_pointer_token(&k));
                            let t = l.compile(v, &ptr);
                            if block == "context" {
                                l.written.insert(k.clone());
                                node.context.push((k, t, ptr));
                            } else {
                                node.contact.push((k, t, ptr));
                            }
                        }
                    }
                    Some(_) => l.at(Severity::Error, "flow::shape", &format!("/{block}"), format!("`{block}` must be an object of variables"), None),
                }
            }
            match root.get("actions").map(|n| &n.kind) {
                None => {}
                Some(NodeKind::Array(actions)) => compile_actions(&mut l, actions, "/actions", opts, &mut node),
                Some(_) => l.at(Severity::Error, "flow::shape", "/actions", "`actions` must be an array", None),
            }
            match root.get("output").map(json::Node::to_value) {
                None => {}
                Some(Value::Array(items)) => {
                    for (i, it) in items.into_iter().enumerate() {
                        let ptr = format!("/output/{i}");
                        if !it.is_object() {
                            l.at(Severity::Error, "flow::shape", &ptr, "an output item must be an object like {\"default\":{\"type\":\"text\",\"text\":\"…\"}}", None);
                            continue;
                        }
                        let t = l.compile(it, &ptr);
                        node.output.push((t, ptr));
                    }
                }
                Some(_) => l.at(Severity::Error, "flow::shape", "/output", "`output` must be an array of output items", None),
            }
        }
        _ => l.at(
            Severity::Error,
            "flow::shape",
            "",
            "a flow is an array of actions or a node object {\"context\",\"contact\",\"actions\",\"output\"}",
            None,
        ),
    }

    finish(l, node, opts, source.clone(), fail)
}

/// Documents at least this large are parsed on a second thread while this one compiles
/// (parsing is about 40 % of a load); below it a thread costs more than it saves.
const PIPELINE_BYTES: usize = 512 * 1024;

/// Items handed over from the parsing thread at a time.
const BATCH: usize = 64;

/// One item of an actions array: its value, where it starts, whether it held a key twice.
type Item = Result<(Value, usize, bool), json::JsonError>;

/// Calls `f` with each item of the actions array `src`, in order, until it returns
/// `false` or an item fails to parse (that error is the last item). A large document is
/// parsed on a second thread, a few batches ahead; the items are the same either way.
fn for_each_item(src: &str, mut f: impl FnMut(Item) -> bool) {
    let sequential = |f: &mut dyn FnMut(Item) -> bool| {
        let Some(mut items) = json::array_items(src) else {
            return;
        };
        while let Some(item) = items.next_value() {
            if !f(item) {
                return;
            }
        }
    };
    if src.len() < PIPELINE_BYTES {
        return sequential(&mut f);
    }
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(4);
        let parser = std::thread::Builder::new()
            .name("flow-parse".into())
            .spawn_scoped(s, move || {
                let Some(mut items) = json::array_items(src) else {
                    return;
                };
                let mut batch = Vec::with_capacity(BATCH);
                while let Some(item) = items.next_value() {
                    batch.push(item);
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // The loader stopped early: nothing more is wanted.
                        if tx.send(full).is_err() {
                            return;
                        }
                    }
                }
                let _ = tx.send(batch);
            });
        if parser.is_err() {
            // No thread to be had: parse here.
            return sequential(&mut f);
        }
        for batch in rx {
            for item in batch {
                if !f(item) {
                    return;
                }
            }
        }
    });
}

/// The checks that need the whole flow seen, then the result.
fn finish(
    mut l: Loader<'_>,
    node: CompiledNode,
    opts: &LoadOptions<'_>,
    source: Arc<String>,
    fail: impl FnOnce(Vec<Diagnostic>) -> LoadError,
) -> Result<Flow, LoadError> {
    check_unset_variables(&mut l, opts.sample);
    l.diags
        .sort_by_key(|d| (d.span.0, d.severity == Severity::Warning));
    let errors = l.diags.iter().any(|d| d.severity == Severity::Error);
    if errors {
        return Err(fail(l.diags));
    }
    Ok(Flow {
        file: l.file.to_string(),
        source,
        warnings: l.diags,
        node,
    })
}

/// Warns about duplicate object keys. Pointers are built only for the duplicates: this
/// walks every node of the document, so it must not allocate per member.
fn report_duplicate_keys(l: &mut Loader<'_>, root: &Node, item: Option<usize>) {
    fn walk<'n>(l: &mut Loader<'_>, n: &'n Node, path: &mut Vec<PathStep<'n>>) {
        match &n.kind {
            NodeKind::Object(ms) => {
                let mut seen: Vec<&str> = Vec::with_capacity(ms.len());
                for m in ms {
                    path.push(PathStep::Key(&m.key));
                    if seen.contains(&m.key.as_str()) {
                        let (line, column) = json::line_col(l.src, m.key_span.start);
                        l.diags.push(Diagnostic {
                            severity: Severity::Warning,
                            code: "json::duplicate_key",
                            message: format!("duplicate key `{}`: the last one wins", m.key),
                            help: None,
                            file: l.file.to_string(),
                            line,
                            column,
                            pointer: pointer(path),
                            string_column: None,
                            span: (m.key_span.start, m.key_span.end - m.key_span.start),
                        });
                    } else {
                        seen.push(&m.key);
                    }
                    walk(l, &m.value, path);
                    path.pop();
                }
            }
            NodeKind::Array(items) => {
                for (i, it) in items.iter().enumerate() {
                    path.push(PathStep::Index(i));
                    walk(l, it, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut path: Vec<PathStep<'_>> = item.map(PathStep::Index).into_iter().collect();
    walk(l, root, &mut path);
}

fn compile_actions(
    l: &mut Loader<'_>,
    actions: &[json::Node],
    base: &str,
    opts: &LoadOptions<'_>,
    node: &mut CompiledNode,
) {
    for (i, a) in actions.iter().enumerate() {
        compile_action(l, i, a.to_value(), base, opts, node);
    }
}

/// Compiles action `i` (its plain value `a`) of the array at `base`.
fn compile_action(
    l: &mut Loader<'_>,
    i: usize,
    a: Value,
    base: &str,
    opts: &LoadOptions<'_>,
    node: &mut CompiledNode,
) {
    let mut ptr = String::with_capacity(base.len() + 8);
    ptr.push_str(base);
    push_index(&mut ptr, i);
    let Value::Object(obj) = a else {
        l.at(
            Severity::Error,
            "flow::shape",
            &ptr,
            "an action must be an object {\"name\",\"parameters\",\"result_variable\"}",
            None,
        );
        return;
    };
    // Taken apart in one pass: no key is hashed again.
    let (mut name, mut parameters, mut result_variable) = (None, None, None);
    for (k, v) in obj {
        match k.as_str() {
            "name" => name = Some(v),
            "parameters" => parameters = Some(v),
            "result_variable" => result_variable = Some(v),
            _ => {
                let help = did_you_mean(&k, ["name", "parameters", "result_variable"])
                    .map(|s| format!("did you mean `{s}`?"));
                l.at_key(
                    Severity::Warning,
                    "flow::unknown_key",
                    &ptr,
                    &k,
                    format!("unknown key `{k}` in the action (kept, not used)"),
                    help,
                );
            }
        }
    }
    let name = match name {
        Some(Value::String(n)) => n,
        Some(_) => {
            l.at(
                Severity::Error,
                "flow::shape",
                &format!("{ptr}/name"),
                "`name` must be a string",
                None,
            );
            return;
        }
        None => {
            l.at(
                Severity::Error,
                "flow::missing_name",
                &ptr,
                "the action has no `name`",
                Some(format!(
                    "known actions: {}",
                    opts.registry.names().join(", ")
                )),
            );
            return;
        }
    };
    let result_variable = match &result_variable {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => {
            l.at(
                Severity::Error,
                "flow::shape",
                &format!("{ptr}/result_variable"),
                "`result_variable` is empty",
                None,
            );
            None
        }
        Some(Value::String(s)) => {
            let s = s.strip_prefix('$').unwrap_or(s);
            l.written.insert(s.to_string());
            Some(s.to_string())
        }
        Some(_) => {
            l.at(
                Severity::Error,
                "flow::shape",
                &format!("{ptr}/result_variable"),
                "`result_variable` must be a string (a context variable name)",
                None,
            );
            None
        }
    };
    let has_parameters = parameters.is_some();
    let params_value = match parameters {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            l.at(
                Severity::Error,
                "flow::shape",
                &format!("{ptr}/parameters"),
                "`parameters` must be an object",
                None,
            );
            return;
        }
    };
    let Value::Object(params) = &params_value else {
        return;
    };
    let Some(action) = opts.registry.get(&name).cloned() else {
        let names = opts.registry.names();
        let help = match did_you_mean(&name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? known actions: {}", names.join(", ")),
            None => format!("known actions: {}", names.join(", ")),
        };
        l.at(
            Severity::Error,
            "flow::unknown_action",
            &format!("{ptr}/name"),
            format!("unknown action `{name}`"),
            Some(help),
        );
        return;
    };
    let pptr = [ptr.as_str(), "/parameters"].concat();
    let params_ptr = if has_parameters {
        pptr.as_str()
    } else {
        ptr.as_str()
    };
    for req in action.required() {
        if !params.contains_key(*req) {
            l.at(
                Severity::Error,
                "flow::missing_parameter",
                params_ptr,
                format!("`{name}` needs the parameter `{req}`"),
                None,
            );
        }
    }
    check_before_action_messages(l, params, &pptr);
    let cx = CheckCx {
        services: opts.services,
        has_integrations: opts.has_integrations,
    };
    for p in action.check(params, &cx) {
        let target = format!("{pptr}{}", p.pointer);
        let exists = l.lookup(&target).is_some();
        let code = if p.severity == Severity::Error {
            "flow::parameter"
        } else {
            "flow::parameter_warning"
        };
        // Point at the parameter when it exists, else at the parameters object.
        let target = if exists { target.as_str() } else { params_ptr };
        l.at(p.severity, code, target, p.message, p.help);
    }
    if name == "set_variables" {
        if let Some(Value::Object(vars)) = params.get("context") {
            for k in vars.keys() {
                if !l.written.contains(k) {
                    l.written.insert(k.clone());
                }
            }
        }
    }
    let compiled = l.compile(params_value, &pptr);
    node.actions.push(CompiledAction {
        index: i,
        name,
        action,
        params: compiled,
        result_variable,
        pointer: ptr,
    });
}

fn check_before_action_messages(l: &mut Loader<'_>, params: &Map<String, Value>, pptr: &str) {
    let Some(m) = params.get("before_action_messages") else {
        return;
    };
    let ptr = format!("{pptr}/before_action_messages");
    match m {
        Value::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                if !it.is_string() && !it.is_object() {
                    l.at(
                        Severity::Error,
                        "flow::parameter",
                        &format!("{ptr}/{i}"),
                        "a before_action_message must be a string (or an output item)",
                        None,
                    );
                }
            }
        }
        _ => l.at(
            Severity::Error,
            "flow::parameter",
            &ptr,
            "`before_action_messages` must be an array of strings",
            None,
        ),
    }
}

/// Variables read (`$x`, `context.x`) that nothing in this flow writes and the sample
/// context does not hold: likely typos, or set by another node.
fn check_unset_variables(l: &mut Loader<'_>, sample: Option<&Value>) {
    let reads = std::mem::take(&mut l.read);
    let mut reported = BTreeSet::new();
    for (name, (pointer, start, end, col)) in reads {
        if l.written.contains(&name)
            || sample
                .and_then(|v| v.pointer(&format!("/context/{}", json::escape_pointer_token(&name))))
                .is_some()
        {
            continue;
        }
        if !reported.insert(name.clone()) {
            continue;
        }
        let candidates: Vec<String> = l.written.iter().cloned().collect();
        let help = did_you_mean(&name, candidates.iter().map(String::as_str))
            .map(|c| format!("did you mean `${c}`?"))
            .or_else(|| Some("set it in a `context` block, a `result_variable`, or pass a sample with --context".to_string()));
        l.push(
            Severity::Warning,
            "flow::unset_variable",
            &pointer,
            format!("`${name}` is read but never written by this flow"),
            help,
            start,
            (end - start).max(1),
            col,
        );
    }
}
