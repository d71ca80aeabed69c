// Side doors, in a real browser (Debian's Chromium, playwright-core): a page on another
// site posts to (a) the playground, (b) the playground's own lifecycle service and
// (c) a `transbordo serve` without tokens, the ways a page can without a CORS preflight:
// `fetch(…, {mode: "no-cors"})` with `text/plain`, and a `text/plain` form whose body is
// JSON. Then (d) DNS rebinding: a page whose own name points at 127.0.0.1 posts JSON
// "same-origin". Afterwards the servers are asked whether anything ran:
//   - the playground lists no conversation, the sandbox has none;
//   - the loopback "internal admin" endpoint the serve flow would call got no request.
// Controls, so the test can fail: the same page's post to a loopback witness does arrive
// (the browser sends cross-site posts), and the same flows sent properly (JSON, from
// here) do run.
//
// Run alone (`node cross-site.test.mjs`) or after playground.test.mjs, which calls
// `crossSite()`. Environment: TRANSBORDO_BIN, CHROMIUM as in playground.test.mjs.

import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.TRANSBORDO_BIN || join(ROOT, "target/debug/transbordo");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

function log(...a) { console.log("[cross-site]", ...a); }

/** Starts `transbordo ARGS`; resolves with the child and the first match of `re` on
 * stderr (at once when `re` is null). */
function startBin(args, re, cwd) {
  return new Promise((ok, fail) => {
    const child = spawn(BIN, args, { cwd, stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let err = "";
    if (!re) { child.stderr.on("data", (d) => { err += d; }); ok({ child, m: null }); return; }
    const timer = setTimeout(() => fail(new Error(`${args[0]} did not start in 30 s:\n${err}`)), 30_000);
    child.stderr.on("data", (d) => {
      err += d;
      const m = re.exec(err);
      if (m) { clearTimeout(timer); ok({ child, m }); }
    });
    child.on("exit", (code) => { clearTimeout(timer); fail(new Error(`${args[0]} exited with ${code}:\n${err}`)); });
    child.on("error", (e) => { clearTimeout(timer); fail(e); });
  });
}

/** A loopback HTTP server; resolves with its port. */
function listen(handler) {
  return new Promise((ok) => {
    const s = createServer(handler);
    s.listen(0, "127.0.0.1", () => ok({ server: s, port: s.address().port }));
  });
}

async function freePort() {
  const { server, port } = await listen(() => {});
  await new Promise((ok) => server.close(ok));
  return port;
}

async function json(url, init) {
  const r = await fetch(url, init);
  return { status: r.status, body: await r.json().catch(() => null) };
}

/** The attacker's page: every post, each recorded in `window.results`. */
function attackPage(targets) {
  return `<!doctype html><meta charset="utf-8"><title>attack</title>
<body><script>
const targets = ${JSON.stringify(targets)};
window.results = [];
async function go() {
  for (const t of targets) {
    try {
      await fetch(t.url, { method: "POST", mode: "no-cors", headers: { "Content-Type": "text/plain" }, body: t.body });
      results.push({ name: t.name, how: "fetch", sent: true });
    } catch (e) { results.push({ name: t.name, how: "fetch", sent: false, error: String(e) }); }
    // A text/plain form: body "NAME=VALUE\\r\\n", here NAME='{…,"pad":"' VALUE='"}': JSON.
    await new Promise((done) => {
      const frame = document.createElement("iframe");
      frame.name = "sink-" + t.name;
      document.body.append(frame);
      frame.addEventListener("load", () => { results.push({ name: t.name, how: "form", sent: true }); done(); }, { once: true });
      const form = document.createElement("form");
      form.method = "POST"; form.enctype = "text/plain"; form.action = t.url; form.target = frame.name;
      const input = document.createElement("input");
      input.name = t.body.slice(0, -1) + ',"pad":"'; input.value = '"}';
      form.append(input); document.body.append(form); form.submit();
    });
  }
  document.title = "done";
}
go();
</script>`;
}

export async function crossSite() {
  const work = mkdtempSync(join(tmpdir(), "transbordo-cross-site-"));
  const children = [];
  const servers = [];
  let context;
  try {
    // The loopback "internal admin" a flow would reach, and the browser-delivery witness.
    const hits = [];
    const admin = await listen((req, res) => {
      let body = "";
      req.on("data", (d) => { body += d; });
      req.on("end", () => {
        hits.push({ path: req.url, contentType: req.headers["content-type"] || null, body });
        res.setHeader("content-type", "application/json");
        res.end('{"admin": true}');
      });
    });
    servers.push(admin.server);
    const adminUrl = `http://127.0.0.1:${admin.port}`;
    const hitsOn = (p) => hits.filter((h) => h.path === p).length;

    // (a), (b): the playground binary; its stderr names the three URLs.
    const pg = await startBin(["playground", "--port", "0"],
      /open (http:\/\/127\.0\.0\.1:\d+)\/ \(sandbox on (http:\/\/127\.0\.0\.1:\d+), lifecycle service on (http:\/\/127\.0\.0\.1:\d+);/);
    children.push(pg.child);
    const [, pageUrl, sandboxUrl, innerUrl] = pg.m;

    // (c): `transbordo serve` without tokens on loopback, `http_request` allowed to reach
    // loopback so that a flow which ran would show at the admin endpoint.
    const servePort = await freePort();
    copyFileSync(join(ROOT, "examples/sandbox-integrations.toml"), join(work, "integrations.toml"));
    writeFileSync(join(work, "service.toml"), `listen = "127.0.0.1:${servePort}"
database = "state.db"
integrations = "integrations.toml"
[builder]
callback_url = "http://127.0.0.1:9/events"
signing_secret = "cross-site-test-signing-secret"
[http_request]
allow = ["127.0.0.1"]
`);
    const serve = await startBin(["serve", "--config", join(work, "service.toml")], null, work);
    children.push(serve.child);
    const serveUrl = `http://127.0.0.1:${servePort}`;
    for (let i = 0; ; i++) {
      const r = await fetch(`${serveUrl}/readyz`).catch(() => null);
      if (r && r.ok) break;
      assert.ok(i < 200, "transbordo serve did not become ready");
      await new Promise((ok) => setTimeout(ok, 100));
    }

    const serveFlow = (tag) => JSON.stringify({ flow: [{ name: "http_request", parameters: { config: { url: `${adminUrl}/from-serve-${tag}`, timeout: 3000 } } }] });
    const pgFlow = JSON.stringify({ flow: JSON.stringify([{ name: "start_live_chat", parameters: { integration_id: 7 } }]), context: "" });
    const innerFlow = JSON.stringify({ flow: [{ name: "start_live_chat", parameters: { integration_id: 7 } }] });
    const targets = [
      { name: "witness", url: `${adminUrl}/witness`, body: '{"hello":"world"}' },
      { name: "playground", url: `${pageUrl}/api/run`, body: pgFlow },
      { name: "inner", url: `${innerUrl}/v1/conversations/xs-inner/run`, body: innerFlow },
      { name: "serve", url: `${serveUrl}/v1/conversations/xs-serve/run`, body: serveFlow("attack") },
      { name: "serve-close", url: `${serveUrl}/v1/conversations/xs-serve/close`, body: "{}" },
    ];
    const attacker = await listen((req, res) => {
      res.setHeader("content-type", "text/html; charset=utf-8");
      res.end(attackPage(targets));
    });
    servers.push(attacker.server);

    const profile = join(work, "profile");
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        // Other sites' names, pointed at this machine as an attacker's DNS would.
        "--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1"],
    });
    context.setDefaultTimeout(15_000);
    const page = context.pages()[0] || await context.newPage();

    // Cross-site posts: no-cors fetch and text/plain forms, from http://attacker.test.
    await page.goto(`http://attacker.test:${attacker.port}/`);
    await page.waitForFunction(() => document.title === "done");
    const results = await page.evaluate(() => window.results);
    log("posts sent", JSON.stringify(results));
    assert.equal(results.filter((r) => r.sent).length, targets.length * 2, JSON.stringify(results));
    // Control: the browser did deliver both cross-site posts, as text/plain.
    assert.equal(hitsOn("/witness"), 2, JSON.stringify(hits));
    assert.ok(hits.filter((h) => h.path === "/witness").every((h) => /^text\/plain/.test(h.contentType)), JSON.stringify(hits));
    const formBody = hits.filter((h) => h.path === "/witness").map((h) => h.body).find((b) => b.includes("pad"));
    assert.deepEqual(JSON.parse(formBody), { hello: "world", pad: "=" }, "the form's body is JSON");

    // (d) DNS rebinding: a page at http://rebind.test:PORT is "same-origin" with each
    // server and may post real JSON; every server answers 403 to the foreign name.
    for (const [name, base, path, body] of [
      ["playground", pageUrl, "/api/run", pgFlow],
      ["inner", innerUrl, "/v1/conversations/xs-rebind/run", innerFlow],
      ["serve", serveUrl, "/v1/conversations/xs-rebind/run", serveFlow("rebind")],
    ]) {
      const port = new URL(base).port;
      const nav = await page.goto(`http://rebind.test:${port}/healthz`);
      assert.equal(nav.status(), 403, `${name}: the page itself`);
      const answer = await page.evaluate(async ([p, b]) => {
        const r = await fetch(p, { method: "POST", headers: { "Content-Type": "application/json" }, body: b });
        return { status: r.status, body: await r.json().catch(() => null) };
      }, [path, body]);
      log("rebinding", name, JSON.stringify(answer));
      assert.equal(answer.status, 403, `${name}: ${JSON.stringify(answer)}`);
      assert.equal(answer.body.error.code, "forbidden_host", `${name}: ${JSON.stringify(answer)}`);
    }
    await new Promise((ok) => setTimeout(ok, 300));

    // Nothing ran anywhere.
    const convs = await json(`${pageUrl}/api/conversations`);
    assert.deepEqual(convs.body.conversations, [], "(a) the playground ran nothing");
    const sandbox = await json(`${sandboxUrl}/_sandbox/conversations`);
    assert.deepEqual(sandbox.body.conversations, [], "(a, b) no live chat started on the sandbox");
    assert.equal(hits.filter((h) => h.path.startsWith("/from-serve")).length, 0, `(c) serve ran a flow: ${JSON.stringify(hits)}`);
    const chat = await json(`${serveUrl}/v1/conversations/xs-serve/live_chat`);
    assert.equal(chat.status, 404, "(c) no live chat");

    // Controls: the same flows, sent properly, do run.
    const ran = await json(`${serveUrl}/v1/conversations/xs-control/run`, { method: "POST", headers: { "content-type": "application/json" }, body: serveFlow("control") });
    assert.equal(ran.status, 200, JSON.stringify(ran));
    assert.equal(hitsOn("/from-serve-control"), 1, "(c) control: a JSON post runs the flow");
    const run = await json(`${pageUrl}/api/run`, { method: "POST", headers: { "content-type": "application/json" }, body: pgFlow });
    assert.equal(run.status, 200, JSON.stringify(run));
    assert.equal((await json(`${pageUrl}/api/conversations`)).body.conversations.length, 1, "(a) control");
    assert.equal((await json(`${sandboxUrl}/_sandbox/conversations`)).body.conversations.length, 1, "(b) control: the sandbox sees a run");
    log("ok: nothing ran from another site; the controls did");
  } finally {
    if (context) await context.close().catch(() => {});
    for (const c of children) c.kill("SIGTERM");
    for (const s of servers) s.close();
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  crossSite().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
}
