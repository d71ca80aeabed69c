// The playground in a real browser: Debian's Chromium driven by playwright-core (no
// browser download). Starts the real `transbordo playground` binary on a free port and
// plays the scenario:
//   1. a flow with a misspelt parameter → the diagnostic at the right line;
//   2. fixed → the LivePerson request with its skillId in the dry run;
//   3. run it, join as the agent, write, close as the agent → agent_closed;
//   4. the same for a Zendesk ticket, closed by the user → user_closed;
//   5. an ALTU connector handoff added with the integration picker and run with
//      Ctrl+Enter, closed by the user; its re-entry put in the context's input;
//   6. the link (URL fragment) reproduces the page; it fits 390 px; controls are labelled;
//   7. then cross-site.test.mjs: pages on other sites cannot run anything.
// Screenshots go to target/browser-artifacts/ (ARTIFACTS overrides); with
// UPDATE_DOCS_SCREENSHOT=1 one is also written to docs/playground.png.
//
// Environment: TRANSBORDO_BIN (default target/debug/transbordo), CHROMIUM (default
// /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { crossSite } from "./cross-site.test.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.TRANSBORDO_BIN || join(ROOT, "target/debug/transbordo");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS || join(ROOT, "target/browser-artifacts");
const TIMEOUT = 15_000;

const MISSPELT = `[
  {
    "name": "start_live_chat",
    "parameters": {
      "integration_id": 7,
      "skil_id": 1589664150,
      "start_message": "Cliente <? contact.name ?> pediu atendimento"
    },
    "result_variable": "lp"
  }
]`;
const FIXED = MISSPELT.replace("skil_id", "skill_id");

function log(...a) { console.log("[browser-test]", ...a); }

/** Starts the binary; resolves with the page URL it prints. */
function startPlayground() {
  return new Promise((ok, fail) => {
    const child = spawn(BIN, ["playground", "--port", "0"], { stdio: ["ignore", "inherit", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let err = "";
    const timer = setTimeout(() => fail(new Error("the playground did not start in 30 s:\n" + err)), 30_000);
    child.stderr.on("data", (d) => {
      err += d;
      process.stderr.write(d);
      const m = /open (http:\/\/127\.0\.0\.1:\d+)\//.exec(err);
      if (m) { clearTimeout(timer); ok({ child, url: m[1] }); }
    });
    child.on("exit", (code) => { clearTimeout(timer); fail(new Error(`the playground exited with ${code}:\n${err}`)); });
    child.on("error", (e) => { clearTimeout(timer); fail(e); });
  });
}

async function shot(page, name, opts = {}) {
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, ...opts });
  log("screenshot", path);
  return path;
}

/** Replaces an editor's text the way typing does (an input event). */
async function setEditor(page, selector, text) {
  await page.fill(selector, text);
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const { child, url } = await startPlayground();
  const profile = mkdtempSync(join(tmpdir(), "transbordo-chromium-"));
  let context;
  let page;
  const pageErrors = [];
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: { width: 1280, height: 800 },
    });
    context.setDefaultTimeout(TIMEOUT);
    page = context.pages()[0] || await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });

    await page.goto(url + "/");
    await page.waitForSelector("#integrations .integration");
    await page.waitForSelector("#flow-summary.ok");

    // 1. A misspelt parameter: the diagnostic at line 6, in the list and in the gutter.
    await setEditor(page, "#flow", MISSPELT);
    const diag = page.locator("#diagnostics .diag.error").first();
    await diag.waitFor();
    assert.equal(await diag.getAttribute("data-line"), "6");
    const diagText = await diag.innerText();
    assert.match(diagText, /Line 6, column 18/);
    assert.match(diagText, /skil_id/);
    assert.match(diagText, /skill_id/, "the help names the right parameter");
    await page.locator('#flow-editor .gutter .ln.error[data-line="6"]').waitFor();
    await page.locator("#flow-editor .backdrop mark.error").waitFor();
    assert.equal(await page.locator("#run").isDisabled(), true, "cannot run a flow with errors");
    // Keyboard: the diagnostic's button moves the caret to the problem.
    await diag.locator("button.goto").focus();
    await page.keyboard.press("Enter");
    const sel = await page.evaluate(() => { const t = document.querySelector("#flow"); return [document.activeElement === t, t.value.slice(t.selectionStart, t.selectionEnd)]; });
    assert.deepEqual(sel, [true, "1589664150"]);
    await shot(page, "01-misspelt-parameter.png");

    // 2. Fixed: the dry run shows the LivePerson request with its skillId (a number).
    await setEditor(page, "#flow", FIXED);
    await page.waitForSelector("#flow-summary.ok");
    const lpRequest = page.locator('#requests .request[data-provider="liveperson"]', { hasText: "skillId" });
    await lpRequest.waitFor();
    const body = await lpRequest.locator("pre.json").innerText();
    assert.match(body, /"skillId": 1589664150/);
    assert.equal(await lpRequest.locator(".j-n", { hasText: "1589664150" }).count(), 1, "the number stays a number");
    assert.ok(!(await page.locator("#requests").innerText()).includes("sandbox-secret"), "secrets are redacted");
    await page.waitForSelector("#run:not([disabled])");
    await shot(page, "02-liveperson-dry-run.png");

    // 3. Run it, join, write, close as the agent → agent_closed.
    await page.click("#run");
    const lp = page.locator('.card[data-provider="liveperson"]');
    await lp.waitFor();
    await lp.locator(".transcript", { hasText: "Cliente Ana Souza pediu atendimento" }).waitFor();
    await lp.getByRole("button", { name: "Join as agent" }).click();
    const agentBox = lp.getByLabel("Message as the agent");
    await page.waitForFunction((id) => !document.getElementById(id).disabled, await agentBox.getAttribute("id"));
    await agentBox.fill("Olá, sou a Bia");
    await agentBox.press("Enter");
    await lp.locator(".transcript .bubble.agent", { hasText: "Olá, sou a Bia" }).waitFor();
    await lp.locator('.events li[data-type="agent_message"]').waitFor();
    await lp.getByRole("button", { name: "Close as agent" }).click();
    await page.waitForSelector('.card[data-provider="liveperson"][data-reentry="agent_closed"]');
    const lpReentry = await lp.locator(".reentry pre").innerText();
    assert.match(lpReentry, /"status": "agent_closed"/);
    await lp.scrollIntoViewIfNeeded();
    await shot(page, "03-liveperson-agent-closed.png", { fullPage: true });

    // 4. A Zendesk ticket, closed by the user → user_closed.
    await page.selectOption("#example", "zendesk-ticket");
    await page.click("#load-example");
    await page.locator('#requests .request[data-provider="zendesk"]', { hasText: "/api/v2/tickets" }).waitFor();
    await page.waitForSelector("#run:not([disabled])");
    await page.click("#run");
    const zd = page.locator('.card[data-provider="zendesk"]');
    await zd.waitFor();
    await zd.getByRole("button", { name: "Join as agent" }).click();
    const zdAgent = zd.getByLabel("Message as the agent");
    await page.waitForFunction((id) => !document.getElementById(id).disabled, await zdAgent.getAttribute("id"));
    await zdAgent.fill("Vou verificar seu pedido");
    await zd.getByRole("button", { name: "Send as agent" }).click();
    await zd.locator(".transcript .bubble.agent", { hasText: "Vou verificar seu pedido" }).waitFor();
    const zdUser = zd.getByLabel("Message as the user");
    await zdUser.fill("Obrigada!");
    await zd.getByRole("button", { name: "Send as user" }).click();
    await zd.locator(".transcript", { hasText: "Obrigada!" }).waitFor();
    await zd.getByRole("button", { name: "Close as user" }).click();
    await page.waitForSelector('.card[data-provider="zendesk"][data-reentry="user_closed"]');
    assert.match(await zd.locator(".reentry pre").innerText(), /"status": "user_closed"/);
    // Both conversations are side by side, each with its own end.
    assert.equal(await page.locator(".card").count(), 2);
    assert.equal(await page.locator('.card[data-reentry="agent_closed"]').count(), 1);
    await page.evaluate(() => window.scrollTo(0, 0));
    const top = await shot(page, "04-zendesk-user-closed.png");
    await zd.scrollIntoViewIfNeeded();
    await shot(page, "05-console.png");
    if (process.env.UPDATE_DOCS_SCREENSHOT === "1") copyFileSync(top, join(ROOT, "docs/playground.png"));

    // The ALTU connector, from the integration picker, run from the keyboard (Ctrl+Enter):
    // the user writes and closes → user_closed; its re-entry becomes the context's input.
    await setEditor(page, "#flow", "[]");
    await page.waitForSelector("#flow-summary.ok");
    await page.getByRole("button", { name: "Add a start_live_chat for 3" }).click();
    await page.waitForFunction(() => document.querySelector("#flow").value.includes('"integration_id": 3'));
    await page.locator('#requests .request[data-provider="altu_sdk"]').waitFor();
    await page.waitForSelector("#run:not([disabled])");
    await page.focus("#flow");
    await page.keyboard.press("Control+Enter");
    const altu = page.locator('.card[data-provider="altu_sdk"]');
    await altu.waitFor();
    await altu.getByRole("button", { name: "Join as agent" }).click();
    await altu.locator('.events li[data-type="agent_joined"]').waitFor();
    const altuUser = altu.getByLabel("Message as the user");
    await altuUser.fill("Alguém aí?");
    await altuUser.press("Enter");
    await altu.locator(".transcript", { hasText: "Alguém aí?" }).waitFor();
    await altu.getByRole("button", { name: "Close as user" }).click();
    await page.waitForSelector('.card[data-provider="altu_sdk"][data-reentry="user_closed"]');
    assert.equal(await page.locator(".card").count(), 3, "three conversations side by side");
    await altu.getByRole("button", { name: "Use as the context's input" }).click();
    await page.waitForFunction(() => JSON.parse(document.querySelector("#context").value).input.live_chat.status === "user_closed");
    await page.waitForSelector("#context-summary.ok");
    await page.waitForSelector("#dry-state.ok");
    await altu.scrollIntoViewIfNeeded();
    await shot(page, "06-altu-user-closed.png");

    // Every control has an accessible name.
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll("button, input, select, textarea")]
      .filter((e) => !e.hidden && e.type !== "hidden")
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !(e.tagName === "BUTTON" && e.textContent.trim()))
      .map((e) => e.outerHTML.slice(0, 80)));
    assert.deepEqual(unlabelled, [], "unlabelled controls");

    // 6. The link reproduces the page (flow and context from the fragment).
    await page.click("#share");
    await page.waitForSelector("#share-link:not([hidden])");
    const link = await page.inputValue("#share-link");
    assert.equal(link, await page.evaluate(() => location.href));
    assert.match(link, /#z=/);
    const flowNow = await page.inputValue("#flow");
    const contextNow = await page.inputValue("#context");
    const other = await context.newPage();
    other.on("pageerror", (e) => pageErrors.push(String(e)));
    await other.goto(link);
    await other.waitForFunction((f) => document.querySelector("#flow").value === f, flowNow);
    assert.equal(await other.inputValue("#context"), contextNow);
    await other.locator('#requests .request[data-provider="altu_sdk"]').first().waitFor();
    // …and the conversations of this playground are listed there too.
    await other.locator(".card").nth(1).waitFor();

    // Readable at 390 px: nothing wider than the screen.
    await other.setViewportSize({ width: 390, height: 844 });
    await other.waitForTimeout(200);
    const overflow = await other.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 390, `the page is ${overflow}px wide at 390px`);
    await shot(other, "07-narrow-390.png");
    await shot(other, "08-narrow-390-full.png", { fullPage: true });
    await other.close();

    assert.deepEqual(pageErrors, [], "JavaScript errors on the page");
    log("ok: all scenarios passed");
  } catch (e) {
    if (page) await shot(page, "failure.png", { fullPage: true }).catch(() => {});
    if (pageErrors.length) console.error("page errors:", pageErrors);
    throw e;
  } finally {
    if (context) await context.close().catch(() => {});
    child.kill("SIGTERM");
    rmSync(profile, { recursive: true, force: true });
  }
}

// Then the side doors: pages on other sites must not run anything (cross-site.test.mjs).
main().then(crossSite).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
