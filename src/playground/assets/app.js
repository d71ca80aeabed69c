// transbordo playground: plain JavaScript, no dependencies, no build step.
// The server does all the work (check, dry run, run, sandbox control); this file
// only shows it.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

/** Creates an element: el("p", {class: "x"}, "text", child…). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const state = {
  info: null,
  checkSeq: 0,
  lastCheck: null,
  conversations: new Map(), // id → card elements
  polling: null,
};

function setStatus(text, kind = "") {
  const s = $("#status");
  s.textContent = text;
  s.className = "status " + kind;
}

async function api(path, body) {
  const opts = body === undefined
    ? {}
    : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw { code: "unreachable", message: "the playground server cannot be reached: " + e.message };
  }
  let data;
  try {
    data = await resp.json();
  } catch (e) {
    throw { code: "bad_answer", message: `answer ${resp.status} is not JSON` };
  }
  if (!resp.ok) throw (data && data.error) || { code: "error", message: `answer ${resp.status}` };
  return data;
}

// ---------------------------------------------------------------- JSON display

/** JSON as highlighted DOM: the type of each value is visible (the typing rule). */
function jsonNode(value, indent = "") {
  const frag = document.createDocumentFragment();
  const span = (cls, text) => el("span", { class: cls }, text);
  if (value === null) frag.append(span("j-z", "null"));
  else if (typeof value === "string") frag.append(span("j-s", JSON.stringify(value)));
  else if (typeof value === "number") frag.append(span("j-n", String(value)));
  else if (typeof value === "boolean") frag.append(span("j-b", String(value)));
  else if (Array.isArray(value)) {
    if (value.length === 0) frag.append("[]");
    else {
      frag.append("[\n");
      value.forEach((v, i) => {
        frag.append(indent + "  ", jsonNode(v, indent + "  "), i < value.length - 1 ? ",\n" : "\n");
      });
      frag.append(indent + "]");
    }
  } else {
    const keys = Object.keys(value);
    if (keys.length === 0) frag.append("{}");
    else {
      frag.append("{\n");
      keys.forEach((k, i) => {
        frag.append(indent + "  ", span("j-k", JSON.stringify(k)), ": ", jsonNode(value[k], indent + "  "),
          i < keys.length - 1 ? ",\n" : "\n");
      });
      frag.append(indent + "}");
    }
  }
  return frag;
}

function jsonPre(value, attrs = {}) {
  const pre = el("pre", Object.assign({ class: "json", tabindex: "0" }, attrs));
  pre.append(jsonNode(value));
  return pre;
}

function fillJson(pre, value) {
  pre.replaceChildren(jsonNode(value));
}

// ---------------------------------------------------------------- editors

class Editor {
  constructor(root, textarea) {
    this.root = root;
    this.ta = textarea;
    this.gutter = $(".gutter", root);
    this.backdrop = $(".backdrop", root);
    this.marks = []; // {from, to, severity, line, title}
    this.lineMarks = new Map(); // line → {severity, title}
    this.ta.addEventListener("scroll", () => this.syncScroll());
    this.ta.addEventListener("input", () => this.paint());
  }

  get value() { return this.ta.value; }
  set value(v) { this.ta.value = v; this.paint(); }

  syncScroll() {
    this.gutter.scrollTop = this.ta.scrollTop;
    this.backdrop.scrollTop = this.ta.scrollTop;
    this.backdrop.scrollLeft = this.ta.scrollLeft;
  }

  setMarks(marks) {
    this.marks = marks;
    this.lineMarks = new Map();
    for (const m of marks) {
      const prev = this.lineMarks.get(m.line);
      if (!prev || (prev.severity !== "error" && m.severity === "error")) {
        this.lineMarks.set(m.line, { severity: m.severity, title: m.title });
      } else {
        prev.title += "\n" + m.title;
      }
    }
    this.paint();
  }

  paint() {
    const text = this.ta.value;
    let lines = 1;
    for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) lines++;
    // The gutter changes only with the line count or the marks: typing stays cheap.
    if (lines !== this.paintedLines || this.marks !== this.paintedMarks) {
      const g = document.createDocumentFragment();
      for (let i = 1; i <= lines; i++) {
        const m = this.lineMarks.get(i);
        g.append(el("div", { class: m ? "ln " + m.severity : "ln", "data-line": i, title: m ? m.title : null }, i));
      }
      this.gutter.replaceChildren(g);
      this.paintedLines = lines;
      this.paintedMarks = this.marks;
    }
    if (!this.marks.length) {
      if (this.backdrop.firstChild) this.backdrop.replaceChildren();
      this.syncScroll();
      return;
    }
    // Marks in the text: sorted, non-overlapping, at least one character wide.
    const ranges = this.marks
      .map((m) => ({ from: Math.min(m.from, text.length), to: Math.min(Math.max(m.to, m.from + 1), text.length + 1), severity: m.severity }))
      .sort((a, b) => a.from - b.from);
    const b = document.createDocumentFragment();
    let pos = 0;
    for (const r of ranges) {
      if (r.from < pos) continue;
      b.append(text.slice(pos, r.from));
      let piece = text.slice(r.from, r.to);
      if (piece === "" || piece === "\n") piece = " " + piece;
      else if (piece.endsWith("\n")) piece = piece.slice(0, -1) + " \n";
      b.append(el("mark", { class: r.severity }, piece));
      pos = Math.min(r.to, text.length);
    }
    b.append(text.slice(pos) + "\n ");
    this.backdrop.replaceChildren(b);
    this.syncScroll();
  }

  /** UTF-16 offset of a 1-based line and a 1-based column counted in characters. */
  offsetOf(line, column) {
    const text = this.ta.value;
    let off = 0;
    for (let l = 1; l < line; l++) {
      const nl = text.indexOf("\n", off);
      if (nl < 0) return text.length;
      off = nl + 1;
    }
    const end = text.indexOf("\n", off);
    const lineText = text.slice(off, end < 0 ? text.length : end);
    const chars = Array.from(lineText).slice(0, Math.max(column - 1, 0)).join("");
    return off + chars.length;
  }

  select(from, to, line) {
    this.ta.focus();
    this.ta.setSelectionRange(from, Math.max(to, from));
    const lh = parseFloat(getComputedStyle(this.ta).lineHeight) || 20;
    this.ta.scrollTop = Math.max(0, (line - 4) * lh);
    this.syncScroll();
  }
}

// ---------------------------------------------------------------- share (URL fragment)

function b64url(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(text) {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

async function pipe(bytes, stream) {
  const out = new Blob([bytes]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(out).arrayBuffer());
}

/** `#z=` deflated JSON when the browser can compress, else `#j=` plain JSON, base64url. */
async function encodeShare(doc) {
  const bytes = new TextEncoder().encode(JSON.stringify(doc));
  if (typeof CompressionStream === "function") {
    return "z=" + b64url(await pipe(bytes, new CompressionStream("deflate-raw")));
  }
  return "j=" + b64url(bytes);
}

async function decodeShare(fragment) {
  const m = /^#?([zj])=(.*)$/.exec(fragment);
  if (!m) return null;
  let bytes = unb64url(m[2]);
  if (m[1] === "z") bytes = await pipe(bytes, new DecompressionStream("deflate-raw"));
  const doc = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof doc.flow !== "string") throw new Error("no flow in the link");
  return doc;
}

let shareTimer = null;
function scheduleShare() {
  clearTimeout(shareTimer);
  shareTimer = setTimeout(async () => {
    // The same document as the Share button's, so a late timer cannot change the link.
    const frag = await encodeShare(source());
    history.replaceState(null, "", "#" + frag);
  }, 300);
}

// ---------------------------------------------------------------- check and dry run

let flowEditor, contextEditor;
let checkTimer = null;

function scheduleCheck() {
  clearTimeout(checkTimer);
  $("#flow-summary").textContent = "Checking…";
  checkTimer = setTimeout(runCheck, 250);
  scheduleShare();
}

function source() {
  return { flow: flowEditor.value, context: contextEditor.value, strict: $("#strict").checked, now: $("#now").value.trim() || null };
}

async function runCheck() {
  const seq = ++state.checkSeq;
  const src = source();
  let result;
  try {
    result = await api("/api/check", src);
  } catch (e) {
    if (seq === state.checkSeq) setStatus("Check failed: " + e.message, "bad");
    return;
  }
  if (seq !== state.checkSeq) return;
  state.lastCheck = result;
  showDiagnostics(result);
  showContextError(result.context_error);
  if (result.errors === 0 && !result.context_error) {
    await runRender(seq, src);
  } else {
    $("#dry-state").textContent = result.context_error
      ? "Fix the context to see the dry run."
      : "Fix the errors to see the dry run.";
    $("#dry-state").className = "summary bad";
    $("#run").disabled = true;
  }
}

function showDiagnostics(result) {
  const list = $("#diagnostics");
  list.replaceChildren();
  const marks = [];
  for (const d of result.diagnostics) {
    const where = [d.pointer ? "at " + d.pointer : "", d.string_column ? "column " + d.string_column + " of the string" : ""]
      .filter(Boolean).join(", ");
    marks.push({ from: d.from, to: d.to, line: d.line, severity: d.severity, title: `${d.severity}: ${d.message}` });
    const li = el("li", { class: "diag " + d.severity, "data-line": d.line },
      el("button", {
        type: "button", class: "goto",
        "aria-label": `Go to line ${d.line}, column ${d.column}`,
        onclick: () => flowEditor.select(d.from, d.to, d.line),
      }, `Line ${d.line}, column ${d.column}`),
      " ", el("span", { class: "sev" }, d.severity), " ", el("code", {}, d.code),
      el("p", { class: "msg" }, d.message),
      d.help ? el("p", { class: "help" }, "help: " + d.help) : null,
      where ? el("p", { class: "where" }, where) : null);
    list.append(li);
  }
  flowEditor.setMarks(marks);
  $("#human").textContent = result.human || "no problems";
  const s = $("#flow-summary");
  if (result.errors === 0 && result.warnings === 0) {
    s.textContent = "No problems.";
    s.className = "summary ok";
  } else {
    s.textContent = `${result.errors} error(s), ${result.warnings} warning(s).`;
    s.className = "summary " + (result.errors ? "bad" : "warn");
  }
}

function showContextError(ce) {
  const s = $("#context-summary");
  if (!ce) {
    contextEditor.setMarks([]);
    s.textContent = contextEditor.value.trim() ? "Context OK." : "No context: every value is missing.";
    s.className = "summary ok";
    return;
  }
  const from = contextEditor.offsetOf(ce.line, ce.column);
  contextEditor.setMarks([{ from, to: from + 1, line: ce.line, severity: "error", title: ce.message }]);
  s.replaceChildren(
    el("button", {
      type: "button", class: "goto",
      onclick: () => contextEditor.select(from, from + 1, ce.line),
    }, `Line ${ce.line}, column ${ce.column}`),
    " " + ce.message);
  s.className = "summary bad";
}

async function runRender(seq, src) {
  let doc;
  try {
    doc = await api("/api/render", src);
  } catch (e) {
    if (seq === state.checkSeq) {
      $("#dry-state").textContent = "The dry run failed: " + e.message;
      $("#dry-state").className = "summary bad";
    }
    return;
  }
  if (seq !== state.checkSeq) return;
  $("#run").disabled = false;
  const d = $("#dry-state");
  d.textContent = `${doc.messages.length} message(s), ${doc.requests.length} request(s), ${doc.warnings.length} warning(s).`;
  d.className = "summary ok";
  showMessages($("#messages"), doc.messages);
  showRequests(doc.requests);
  showWarnings($("#warnings"), doc.warnings);
  fillJson($("#out-context"), doc.context);
  fillJson($("#out-contact"), doc.contact);
  showTrace(doc.trace || []);
}

function messageText(m) {
  if (m && typeof m === "object" && m.type === "text" && typeof m.text === "string") return m.text;
  return null;
}

function showMessages(list, messages) {
  list.replaceChildren();
  if (!messages.length) list.append(el("li", { class: "empty" }, "No message."));
  for (const m of messages) {
    const label = m.action_index === null || m.action_index === undefined
      ? m.source
      : `${m.source} · action ${m.action_index}`;
    const text = messageText(m.message);
    list.append(el("li", { class: "bubble bot" },
      el("span", { class: "src" }, label),
      text !== null ? el("span", { class: "text" }, text) : jsonPre(m.message)));
  }
}

function showRequests(requests) {
  const box = $("#requests");
  box.replaceChildren();
  if (!requests.length) box.append(el("p", { class: "empty" }, "No request."));
  requests.forEach((r, i) => {
    const headers = r.headers && typeof r.headers === "object" ? r.headers : {};
    const table = el("table", { class: "headers" },
      el("caption", { class: "sr-only" }, `Headers of request ${i + 1}`),
      ...Object.entries(headers).map(([k, v]) =>
        el("tr", {}, el("th", { scope: "row" }, k), el("td", { class: v === "[redacted]" ? "redacted" : "" }, typeof v === "string" ? v : JSON.stringify(v)))));
    box.append(el("article", { class: "request", "data-provider": r.provider },
      el("h4", {},
        el("span", { class: "badge " + r.provider }, r.provider),
        " ", el("span", { class: "method" }, typeof r.method === "string" ? r.method : JSON.stringify(r.method)),
        " ", el("code", { class: "url" }, typeof r.url === "string" ? r.url : JSON.stringify(r.url))),
      el("p", { class: "note" }, `action ${r.action_index}` + (r.integration_id ? ` · integration ${r.integration_id}` : "")),
      Object.keys(headers).length ? table : null,
      r.body === null ? el("p", { class: "note" }, "No body.") : jsonPre(r.body, { "aria-label": `Body of request ${i + 1}` })));
  });
}

function showWarnings(list, warnings) {
  list.replaceChildren();
  if (!warnings.length) list.append(el("li", { class: "empty" }, "No warning."));
  for (const w of warnings) {
    const where = [w.action_index === null || w.action_index === undefined ? "" : `action ${w.action_index}`, w.pointer || ""]
      .filter(Boolean).join(" · ");
    list.append(el("li", {}, where ? el("span", { class: "where" }, where + ": ") : null, w.message));
  }
}

function showTrace(trace) {
  const box = $("#trace");
  box.replaceChildren();
  for (const t of trace) {
    box.append(el("article", { class: "trace" },
      el("h4", {}, `${t.index}. ${t.name}`, el("span", { class: "note" }, ` ${t.duration_ms} ms`)),
      el("p", { class: "note" }, "parameters"), jsonPre(t.parameters),
      el("p", { class: "note" }, "result"), jsonPre(t.result),
      t.warnings.length ? el("ul", { class: "warnings" }, ...t.warnings.map((w) => el("li", {}, w))) : null));
  }
}

// ---------------------------------------------------------------- integrations

const START_PARAMS = {
  liveperson: { skill_id: "1589664150", start_message: "Cliente <? contact.name ?> pediu atendimento" },
  zendesk: { subject: "<? $zendeskSubject ?>", tags: ["<? $zendeskTag ?>"], start_message: "Cliente <? contact.name ?> pediu atendimento" },
  altu_sdk: { skill_id: "suporte", start_message: "Cliente <? contact.name ?> pediu atendimento" },
};

function insertStart(integration) {
  let doc;
  try {
    doc = JSON.parse(flowEditor.value || "[]");
  } catch (e) {
    setStatus("The flow is not valid JSON yet: fix it before inserting an action.", "bad");
    flowEditor.ta.focus();
    return;
  }
  const action = {
    name: "start_live_chat",
    parameters: Object.assign({ integration_id: Number(integration.id) || integration.id }, START_PARAMS[integration.provider] || {}),
    result_variable: "handoff",
  };
  if (Array.isArray(doc)) doc.push(action);
  else if (doc && typeof doc === "object") {
    if (!Array.isArray(doc.actions)) doc.actions = [];
    doc.actions.push(action);
  } else {
    setStatus("The flow must be an array or a node object.", "bad");
    return;
  }
  flowEditor.value = JSON.stringify(doc, null, 2);
  scheduleCheck();
  setStatus(`Added a start_live_chat for integration ${integration.id} (${integration.provider}).`, "ok");
}

function showIntegrations(list) {
  const ul = $("#integrations");
  ul.replaceChildren();
  for (const i of list) {
    const settings = Object.entries(i.settings).map(([k, v]) => `${k} = ${v}`).join(", ");
    const timers = `wait_timeout_s = ${i.wait_timeout_s}` + (i.user_inactivity_timeout_s ? `, user_inactivity_timeout_s = ${i.user_inactivity_timeout_s}` : "");
    ul.append(el("li", { class: "integration" },
      el("p", {}, el("span", { class: "badge " + i.provider }, i.provider), " ", el("strong", {}, `integration_id ${i.id}`)),
      el("p", { class: "note" }, settings, el("br"), timers),
      el("p", { class: "note" }, "parameters: ",
        ...i.parameters.required.map((p) => el("code", { class: "req" }, p + " (required) ")),
        ...i.parameters.supported.filter((p) => !i.parameters.required.includes(p)).map((p) => el("code", {}, p + " ")),
        ...i.parameters.common.map((p) => el("code", {}, p + " "))),
      el("button", { type: "button", onclick: () => insertStart(i) }, `Add a start_live_chat for ${i.id}`)));
  }
}

// ---------------------------------------------------------------- run and the agent console

async function run() {
  const btn = $("#run");
  btn.disabled = true;
  setStatus("Running the flow against the sandbox…");
  try {
    const { conversation } = await api("/api/run", source());
    const card = upsertCard(conversation);
    const lc = conversation.live_chat;
    setStatus(lc
      ? `Conversation ${conversation.conversation_id} started on ${lc.provider} (${lc.provider_conversation_id}).`
      : `Conversation ${conversation.conversation_id} ran; no live chat started.`, lc ? "ok" : "warn");
    card.scrollIntoView({ block: "nearest" });
    startPolling();
  } catch (e) {
    setStatus(`The run failed (${e.code}): ${e.message}`, "bad");
  } finally {
    btn.disabled = !(state.lastCheck && state.lastCheck.errors === 0 && !state.lastCheck.context_error);
  }
}

function isOpen(c) {
  return c.live_chat && c.live_chat.state !== "ended";
}

function waitingForReentry(c) {
  return c.live_chat && c.live_chat.state === "ended" && !c.reentry;
}

function upsertCard(c) {
  $("#no-conversations").hidden = true;
  let card = state.conversations.get(c.conversation_id);
  if (!card) {
    card = buildCard(c);
    state.conversations.set(c.conversation_id, card);
    $("#conversations").prepend(card.root);
  }
  updateCard(card, c);
  return card.root;
}

function buildCard(c) {
  const id = c.conversation_id;
  const uid = "c-" + id.replace(/[^A-Za-z0-9_-]/g, "_");
  const lc = c.live_chat;
  const provider = lc ? lc.provider : "none";
  const card = { id, data: c };
  const act = (path, body, what) => async () => {
    card.error.textContent = "";
    try {
      const { conversation } = await api(`/api/conversations/${encodeURIComponent(id)}/${path}`, body ? body() : {});
      updateCard(card, conversation);
      setStatus(`${id}: ${what}.`, "ok");
      startPolling();
      return true;
    } catch (e) {
      card.error.textContent = `${what} failed (${e.code}): ${e.message}`;
      return false;
    }
  };
  const sayForm = (who, path) => {
    const input = el("input", { type: "text", id: `${uid}-${who}-text`, autocomplete: "off" });
    const file = el("input", { type: "file", id: `${uid}-${who}-file`, class: "file" });
    const button = el("button", { type: "submit" }, `Send as ${who}`);
    const form = el("form", { class: "say " + who },
      el("label", { for: input.id }, `Message as the ${who}`), input,
      el("label", { for: file.id, class: "file-label" }, "File"), file, button);
    // "typing…" goes to the other side while the field has text (5 s without a key: stopped).
    let typingOn = false;
    let typingTimer = null;
    const setTyping = async (on) => {
      if (on === typingOn) return;
      typingOn = on;
      try {
        await api(`/api/conversations/${encodeURIComponent(id)}/typing`, { who, typing: on });
      } catch (e) {
        // Best-effort, like the relay itself.
      }
    };
    input.addEventListener("input", () => {
      setTyping(input.value.length > 0);
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => setTyping(false), 5000);
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = file.files && file.files[0];
      if (!input.value.trim() && !f) { input.focus(); return; }
      const body = {};
      if (input.value.trim()) body.text = input.value;
      if (f) {
        try {
          body.attachments = [await readFile(f)];
        } catch (e) {
          card.error.textContent = `cannot read ${f.name}: ${e}`;
          return;
        }
      }
      const what = f ? `the ${who} sent ${f.name}` : `the ${who} wrote`;
      if (await act(path, () => body, what)()) {
        input.value = "";
        file.value = "";
        clearTimeout(typingTimer);
        setTyping(false);
      }
    });
    return { form, input, file, button };
  };
  card.join = el("button", { type: "button", class: "join", onclick: act("join", null, "an agent joined") }, "Join as agent");
  card.agentSay = sayForm("agent", "agent_message");
  card.closeAgent = el("button", { type: "button", class: "close-agent", onclick: act("close", () => ({ by: "agent" }), "the agent closed") }, "Close as agent");
  card.userSay = sayForm("user", "user_message");
  card.closeUser = el("button", { type: "button", class: "close-user", onclick: act("close", () => ({ by: "user" }), "the user closed") }, "Close as user");
  card.controls = el("div", { class: "controls", role: "group", "aria-label": `Agent and user actions for ${id}` },
    el("div", { class: "row" }, card.join, card.closeAgent, card.closeUser),
    card.agentSay.form, card.userSay.form);
  card.facts = el("dl", { class: "facts" });
  card.botMessages = el("ol", { class: "bubbles" });
  card.runWarnings = el("ul", { class: "warnings" });
  card.transcript = el("ol", { class: "bubbles transcript", "aria-live": "polite", "aria-label": `Transcript of ${id}` });
  card.files = el("ul", { class: "files", "aria-label": `Files shared in ${id}` });
  card.typing = el("p", { class: "typing", "aria-live": "polite" });
  card.events = el("ol", { class: "events", "aria-label": `Events sent to the builder for ${id}` });
  card.reentryJson = el("pre", { class: "json", tabindex: "0" });
  card.useInput = el("button", { type: "button", onclick: () => useAsInput(card.data.reentry) }, "Use as the context's input");
  card.reentry = el("section", { class: "reentry", hidden: true, "aria-label": `Re-entry input of ${id}` },
    el("h4", {}, "Re-entry input"),
    el("p", { class: "note" }, "What the builder passes as input when it runs the flow again:"),
    card.reentryJson, card.useInput);
  card.error = el("p", { class: "error", role: "alert" });
  card.root = el("article", { class: "card", id: uid, "data-conversation": id, "data-provider": provider, "aria-labelledby": uid + "-title" },
    el("header", {},
      el("h3", { id: uid + "-title" }, id),
      el("span", { class: "badge " + provider }, lc ? `${lc.provider} · integration ${lc.integration_id}` : "no live chat")),
    card.facts,
    el("details", { class: "bot" }, el("summary", {}, "What the run sent the user"), card.botMessages, card.runWarnings),
    lc ? el("h4", {}, "Transcript on the provider") : null,
    lc ? card.transcript : null,
    lc ? card.typing : null,
    lc ? card.files : null,
    lc ? card.controls : null,
    card.error,
    lc ? el("h4", {}, "Events to the builder") : null,
    lc ? card.events : null,
    card.reentry);
  return card;
}

function fact(dl, name, value, cls) {
  dl.append(el("dt", {}, name), el("dd", { class: cls || "" }, value === null || value === undefined || value === "" ? "—" : String(value)));
}

/** True (and remembered) when `value` differs from what the card last showed under `key`. */
function changed(card, key, value) {
  const sig = JSON.stringify(value);
  card.shown = card.shown || {};
  if (card.shown[key] === sig) return false;
  card.shown[key] = sig;
  return true;
}

function updateCard(card, c) {
  card.data = c;
  const lc = c.live_chat;
  const pv = c.provider_conversation;
  card.facts.replaceChildren();
  if (lc) {
    fact(card.facts, "Provider conversation", lc.provider_conversation_id);
    fact(card.facts, "Live chat", lc.state + (lc.status ? ` (${lc.status})` : ""), "state");
    fact(card.facts, "On the provider", pv ? pv.status.replace("_", " ") + (pv.close_reason ? ` (closed by ${pv.close_reason})` : "") : "—", "provider-state");
    fact(card.facts, "Agent", pv && pv.agent ? `${pv.agent.name} (${pv.agent.id})` : null);
    const dl = lc.deadlines || {};
    if (lc.state !== "ended" && (dl.wait_ms || dl.inactivity_ms)) {
      const left = (ms) => `in ${Math.max(0, Math.round((ms - Date.now()) / 1000))} s`;
      fact(card.facts, "Timers", [
        dl.wait_ms ? `timeout if no agent joins ${left(dl.wait_ms)}` : "",
        dl.inactivity_ms ? `user_inactivity_timeout ${left(dl.inactivity_ms)}` : "",
      ].filter(Boolean).join("; "));
    }
    if (pv && pv.skill_id) fact(card.facts, "Skill", pv.skill_id);
  } else {
    const failed = (c.run.warnings || []).map((w) => w.message).join("; ");
    fact(card.facts, "Live chat", "none started" + (failed ? ": " + failed : ""), "state");
  }
  card.root.dataset.state = lc ? lc.state : "none";
  if (changed(card, "run", c.run)) {
    showMessages(card.botMessages, c.run.messages || []);
    showWarnings(card.runWarnings, c.run.warnings || []);
  }
  if (lc) {
    // Redrawn only when they change: the transcript is a live region, and a screen
    // reader would otherwise read it again at every refresh.
    const entries = pv ? pv.transcript : [];
    if (changed(card, "transcript", entries)) {
      card.transcript.replaceChildren();
      if (!entries.length) card.transcript.append(el("li", { class: "empty" }, "Nothing yet."));
      for (const t of entries) {
        card.transcript.append(el("li", { class: "bubble " + t.role }, el("span", { class: "src" }, t.role), el("span", { class: "text" }, t.text)));
      }
    }
    if (changed(card, "events", c.events)) {
      card.events.replaceChildren();
      if (!c.events.length) card.events.append(el("li", { class: "empty" }, "None yet."));
      for (const e of c.events) {
        const detail = e.type === "agent_message" ? `: ${e.text}`
          : e.type === "agent_typing" ? (e.typing ? ": typing…" : ": stopped typing")
          : e.type === "live_chat_ended" ? `: ${JSON.stringify(e.input)}` : "";
        const li = el("li", { "data-type": e.type }, el("code", {}, e.type), detail);
        // The agent's files, as the builder gets them: images shown, others linked.
        for (const a of e.attachments || []) {
          const src = "/api/attachment?u=" + encodeURIComponent(a.url);
          li.append(a.content_type.startsWith("image/")
            ? el("img", { class: "attachment", src, alt: a.name })
            : el("a", { class: "attachment", href: src, download: a.name }, `📎 ${a.name}`));
        }
        card.events.append(li);
      }
    }
    const files = (pv && pv.files) || [];
    if (changed(card, "files", files)) {
      card.files.replaceChildren();
      for (const f of files) {
        card.files.append(el("li", { class: "file " + f.role },
          `${f.role === "agent" ? "agent" : "user"} sent ${f.name} (${f.content_type}, ${f.size} bytes)`));
      }
    }
    // Typing: the user's as the provider shows it, the agent's from the last event.
    const lastAgent = [...c.events].reverse().find((e) => e.type === "agent_typing" || e.type === "agent_message");
    const agentTyping = !!(lastAgent && lastAgent.type === "agent_typing" && lastAgent.typing);
    const userTyping = !!(pv && pv.typing && pv.typing.consumer);
    card.typing.textContent = [agentTyping ? "the agent is typing…" : "", userTyping ? "the user is typing… (the agent sees it)" : ""].filter(Boolean).join(" · ");
    const open = lc.state === "waiting" || lc.state === "with_agent";
    const providerOpen = pv && pv.status !== "closed";
    card.join.disabled = !(open && pv && pv.status === "waiting");
    card.agentSay.button.disabled = !(open && pv && pv.status === "with_agent");
    card.agentSay.input.disabled = card.agentSay.button.disabled;
    card.agentSay.file.disabled = card.agentSay.button.disabled;
    card.closeAgent.disabled = !(open && providerOpen);
    card.userSay.button.disabled = !open;
    card.userSay.input.disabled = !open;
    card.userSay.file.disabled = !open;
    card.closeUser.disabled = !open;
    // Once ended there is nothing left to do on either side.
    card.controls.hidden = lc.state === "ended";
  }
  if (c.reentry) {
    card.reentry.hidden = false;
    fillJson(card.reentryJson, c.reentry);
    card.root.dataset.reentry = c.reentry.live_chat ? c.reentry.live_chat.status : "";
  }
}

/** A file as the service's `/messages` takes it: `{name, content_type, data_base64}`. */
function readFile(f) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => {
      const url = String(r.result);
      resolve({ name: f.name, content_type: f.type || "application/octet-stream", data_base64: url.slice(url.indexOf(",") + 1) });
    };
    r.onerror = () => reject(r.error);
    r.readAsDataURL(f);
  });
}

function useAsInput(input) {
  let ctx;
  try {
    ctx = contextEditor.value.trim() ? JSON.parse(contextEditor.value) : {};
  } catch (e) {
    setStatus("The context is not valid JSON: fix it first.", "bad");
    return;
  }
  if (!ctx || typeof ctx !== "object" || Array.isArray(ctx)) ctx = {};
  ctx.input = input;
  contextEditor.value = JSON.stringify(ctx, null, 2);
  scheduleCheck();
  setStatus("The context's input is now the re-entry input: the dry run shows the next turn.", "ok");
  contextEditor.ta.focus();
}

async function poll() {
  let data;
  try {
    data = await api("/api/conversations");
  } catch (e) {
    setStatus("Cannot refresh the conversations: " + e.message, "bad");
    return;
  }
  let busy = false;
  for (const c of data.conversations) {
    const card = state.conversations.get(c.conversation_id);
    if (card) updateCard(card, c);
    else upsertCard(c);
    if (isOpen(c) || waitingForReentry(c)) busy = true;
  }
  if (!busy) stopPolling();
}

function startPolling() {
  if (!state.polling) state.polling = setInterval(poll, 600);
}

function stopPolling() {
  clearInterval(state.polling);
  state.polling = null;
}

// ---------------------------------------------------------------- start

function loadExample(id) {
  const ex = state.info.examples.find((e) => e.id === id) || state.info.examples[0];
  flowEditor.value = ex.flow;
  contextEditor.value = state.info.example_context;
  scheduleCheck();
}

async function share() {
  // A pending fragment update would rewrite the address after the link is shown.
  clearTimeout(shareTimer);
  const frag = await encodeShare(source());
  history.replaceState(null, "", "#" + frag);
  const link = $("#share-link");
  link.value = location.href;
  link.hidden = false;
  let copied = false;
  try {
    await navigator.clipboard.writeText(location.href);
    copied = true;
  } catch (e) { /* not allowed here: the link is shown to copy by hand */ }
  link.select();
  setStatus(copied ? "Link copied: it reproduces this flow and context." : "Copy the link shown: it reproduces this flow and context.", "ok");
}

async function main() {
  flowEditor = new Editor($("#flow-editor"), $("#flow"));
  contextEditor = new Editor($("#context-editor"), $("#context"));
  try {
    state.info = await api("/api/info");
  } catch (e) {
    setStatus("The playground server cannot be reached: " + e.message, "bad");
    return;
  }
  const sel = $("#example");
  for (const ex of state.info.examples) sel.append(el("option", { value: ex.id }, ex.title));
  showIntegrations(state.info.integrations);
  flowEditor.ta.addEventListener("input", scheduleCheck);
  contextEditor.ta.addEventListener("input", scheduleCheck);
  $("#strict").addEventListener("change", scheduleCheck);
  $("#now").addEventListener("input", scheduleCheck);
  $("#load-example").addEventListener("click", () => loadExample(sel.value));
  $("#share").addEventListener("click", share);
  $("#run").addEventListener("click", run);
  flowEditor.ta.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      if (!$("#run").disabled) run();
    }
  });
  let shared = null;
  if (location.hash.length > 1) {
    try {
      shared = await decodeShare(location.hash);
    } catch (e) {
      setStatus("The link's flow cannot be read (" + e.message + "); showing an example instead.", "bad");
    }
  }
  if (shared) {
    flowEditor.value = shared.flow;
    contextEditor.value = typeof shared.context === "string" ? shared.context : "";
    $("#strict").checked = !!shared.strict;
    $("#now").value = typeof shared.now === "string" ? shared.now : "";
    runCheck();
    setStatus("Loaded the flow and context from the link.", "ok");
  } else {
    loadExample(sel.value);
  }
  // Conversations started before a reload are still there.
  poll().then(() => { if (state.conversations.size) startPolling(); });
}

document.addEventListener("DOMContentLoaded", main);
