// The deployment hub in a real headless Chromium (Debian's), driven by playwright-core.
// Started by the integration test `it/ui.rs`, which starts the server and sets the workload
// up; this script signs in, watches a rollout progress live, sees a bad release halted with
// its evidence, rolls back with a click, checks that a viewer cannot act, and runs axe-core
// on the main pages. Exits non-zero with a message on the first failure.
//
// Environment: RF_URL, RF_TOKEN (an admin's), RF_ACTOR (its name), RF_VIEWER_TOKEN, RF_WORKLOAD, RF_ROUTER (host:port
// of the workload's router, for traffic), RF_SHOTS (where screenshots go).

import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("RF_URL");
const token = env("RF_TOKEN");
const viewerToken = env("RF_VIEWER_TOKEN");
const workload = env("RF_WORKLOAD");
const router = env("RF_ROUTER");
const shots = env("RF_SHOTS");
const actor = env("RF_ACTOR");
mkdirSync(shots, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const step = (s) => console.log(`hub: ${s}`);
const fail = (s) => {
  throw new Error(s);
};

async function api(method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) fail(`${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

// Users: steady requests through the router while the test runs.
let sending = true;
const traffic = (async () => {
  let n = 0;
  while (sending) {
    const user = `user-${n++ % 200}`;
    await fetch(`http://${router}/`, { headers: { "x-user-id": user } }).then((r) => r.arrayBuffer()).catch(() => {});
    await new Promise((res) => setTimeout(res, 20));
  }
})();

async function waitFor(what, f, timeoutMs = 60000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > until) fail(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function axeCheck(page, name) {
  const result = await page.evaluate(`${axeSource}; axe.run(document, { resultTypes: ["violations"] })`);
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of result.violations) step(`axe on ${name}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.length})`);
  if (serious.length) fail(`axe found serious violations on ${name}: ${serious.map((v) => v.id).join(", ")}`);
  step(`axe on ${name}: no serious violation`);
}

async function signIn(browser, tok) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/ui`);
  if (!page.url().includes("/ui/login")) fail(`not sent to the sign-in page: ${page.url()}`);
  await page.getByLabel("API token").fill(tok);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/ui`);
  return { context, page };
}

const latestRollout = async () => (await api("GET", `/v1/workloads/${workload}`)).rollout;

const browser = await chromium.launch({
  executablePath: process.env.RF_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  // 1. Sign in; the overview lists the workload; a wrong token is refused.
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/ui/login`);
    await page.getByLabel("API token").fill("rf1.nope.nope");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "unknown" }).waitFor();
    await context.close();
  }
  const { page } = await signIn(browser, token);
  await page.getByRole("link", { name: workload, exact: true }).first().waitFor();
  await axeCheck(page, "the overview");
  step("signed in; the overview lists the workload");

  // 2. A rollout watched live: the page updates itself (no reload) until it completes.
  await page.goto(`${base}/ui/w/${workload}`);
  await page.evaluate(() => {
    window.__notReloaded = true;
  });
  const started = await api("POST", `/v1/workloads/${workload}/deploy`, { version: "v2", reason: "hub test" });
  let sawProgress = false;
  await waitFor("the page to show v2's rollout completed", async () => {
    if (!sawProgress && (await page.locator("main progress").count()) > 0) {
      sawProgress = true;
      await page.screenshot({ path: `${shots}/rollout-live.png`, fullPage: true });
    }
    const text = await page.locator("main").innerText();
    return text.includes(started.rollout_id) && (await latestRollout()).status === "completed" && text.includes("completed");
  });
  if (!(await page.evaluate(() => window.__notReloaded === true))) fail("the page was reloaded instead of updated");
  if (!sawProgress) fail("the bake's progress never showed while the rollout ran");
  step("watched v2's rollout live to completion");
  await axeCheck(page, "the workload page");

  // 3. A bad release, halted and fallen back: the rollout page shows the decision, the
  // options weighed and the evidence, drawn.
  const bad = await api("POST", `/v1/workloads/${workload}/deploy`, { version: "v3", reason: "hub test: bad" });
  await waitFor("the page to show v3 mitigated", async () => {
    const text = await page.locator("main").innerText();
    return text.includes(bad.rollout_id) && text.includes("mitigated") && (await latestRollout()).status === "mitigated";
  });
  await page.goto(`${base}/ui/w/${workload}/r/${bad.rollout_id}`);
  await page.getByRole("heading", { name: "Decision" }).waitFor();
  await page.getByRole("heading", { name: "Options weighed" }).waitFor();
  await page.getByRole("heading", { name: "Evidence" }).waitFor();
  const decision = await page.locator("p.decision").innerText();
  if (!/unhealthy|error/.test(decision)) fail(`the decision does not say why: ${decision}`);
  const chart = page.locator("img.chart");
  await waitFor("the signals chart", async () => (await chart.count()) > 0 && (await chart.evaluate((i) => i.complete && i.naturalWidth > 0)), 45000);
  await page.screenshot({ path: `${shots}/halted.png`, fullPage: true });
  await axeCheck(page, "the rollout page");
  step("the halted rollout shows its decision, options and evidence");

  // 4. Roll back with a click (confirmed), and see the result.
  await page.goto(`${base}/ui/w/${workload}`);
  page.once("dialog", (d) => d.accept());
  await page.getByLabel("Reason to rollback").fill("hub test: back to v1");
  await page.getByRole("button", { name: "Rollback" }).click();
  await page.waitForURL(/\/ui\/w\/[^/]+\/r\/[^/]+$/);
  const rollbackId = decodeURIComponent(page.url().split("/").pop());
  await waitFor("the rollback to complete", async () => {
    const r = await latestRollout();
    return r.id === rollbackId && r.status === "completed" && (await page.locator("main").innerText()).includes("completed");
  });
  const events = await api("GET", `/v1/workloads/${workload}/events?limit=1000`);
  const started_by = events.find((e) => e.type === "rollout_started" && e.rollout_id === rollbackId);
  if (!started_by || started_by.actor !== actor) fail(`the rollback is not recorded with its actor: ${JSON.stringify(started_by)}`);
  await page.screenshot({ path: `${shots}/rollback.png`, fullPage: true });
  step(`rolled back with a click: ${rollbackId} completed, recorded as done by ${actor}`);

  // 5. The kill switch: a release with a flag, its flag killed from the page and restored.
  const flagged = await api("POST", `/v1/workloads/${workload}/deploy`, { version: "v4", reason: "hub test: flags" });
  await waitFor("v4 to complete", async () => {
    const r = await latestRollout();
    return r.id === flagged.rollout_id && r.status === "completed";
  });
  await page.goto(`${base}/ui/w/${workload}`);
  page.once("dialog", (d) => d.accept());
  await page.getByLabel("Reason to kill new-path").fill("hub test: payments failing");
  await page.getByRole("button", { name: "Kill new-path" }).click();
  await page.getByRole("button", { name: "Restore new-path" }).waitFor();
  const flags = await api("GET", `/v1/workloads/${workload}/flags`);
  if (!flags.killed["new-path"]) fail(`the flag is not killed: ${JSON.stringify(flags.killed)}`);
  await page.getByRole("button", { name: "Restore new-path" }).click();
  await page.getByRole("button", { name: "Kill new-path" }).waitFor();
  await page.screenshot({ path: `${shots}/workload.png`, fullPage: true });
  await page.goto(`${base}/ui`);
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });
  step("killed a flag from the page and restored it");

  // 6. A viewer sees, and cannot act: no button, and a forged form is refused.
  const viewer = await signIn(browser, viewerToken);
  await viewer.page.goto(`${base}/ui/w/${workload}`);
  await viewer.page.getByText("No action your token allows applies now.").waitFor();
  if ((await viewer.page.getByRole("button", { name: "Rollback" }).count()) !== 0) fail("a viewer is offered Rollback");
  const forged = await viewer.page.evaluate(async (w) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const body = new URLSearchParams({ action: "rollback", csrf, confirmed: "yes", reason: "viewer" });
    const r = await fetch(`/ui/w/${w}/act`, { method: "POST", body });
    return r.status;
  }, workload);
  if (forged !== 403) fail(`a viewer's rollback answered ${forged}, not 403`);
  await viewer.page.screenshot({ path: `${shots}/viewer.png`, fullPage: true });
  step("a viewer cannot act (no button; a forged action is refused with 403)");
  console.log("hub: all passed");
} finally {
  sending = false;
  await traffic;
  await browser.close();
}
