// OFREP conformance through the real web client, run in Node: @openfeature/web-sdk +
// @openfeature/ofrep-web-provider (bulk evaluation of every flag for one context, cached,
// revalidated with If-None-Match / ETag by polling).
//
// Run by crates/ringfence/tests/it/flags.rs against a workload's router:
//
//     OFREP_URL=http://127.0.0.1:PORT OFREP_TOKEN=secret node node_web_client.mjs
//
// Prints JSON Lines on stdout:
//   {"event":"report", ...}   every case of cases.json, ETag revalidation, authentication;
// and with WATCH_FLAG=KEY set, keeps polling (every OFREP_POLL_MS, default 200) as one more
// user ("watcher") and prints
//   {"event":"ready", ...}    once it polls with a cached ETag,
//   {"event":"changed", ...}  each time the provider reports KEY changed (ConfigurationChanged),
// until WATCH_CHANGES changes (default 2) or WATCH_TIMEOUT_MS (default 30000).
// Exits 1 when a check failed or the watch timed out, 2 when it could not run.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLIENT = 'web';
const here = dirname(fileURLToPath(import.meta.url));

function failSetup(message) {
  process.stderr.write(`node_web_client.mjs: ${message}\n`);
  process.exit(2);
}

let OpenFeature, ProviderEvents, OFREPWebProvider;
try {
  ({ OpenFeature, ProviderEvents } = await import('@openfeature/web-sdk'));
  ({ OFREPWebProvider } = await import('@openfeature/ofrep-web-provider'));
} catch (e) {
  failSetup(`${e.message}; install the pinned clients: (cd tests/conformance && npm ci)`);
}

const url = process.env.OFREP_URL;
if (!url) failSetup('set OFREP_URL to the router base URL, e.g. http://127.0.0.1:8080');
const token = process.env.OFREP_TOKEN || null;
const cases = JSON.parse(readFileSync(process.env.OFREP_CASES || join(here, 'cases.json'), 'utf8')).cases;
const auth = token ? [['Authorization', `Bearer ${token}`]] : [];

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

/** Every HTTP exchange of one provider: request If-None-Match, response status and ETag. */
function recordingFetch(log) {
  return async (req, init) => {
    const response = await fetch(req, init);
    log.push({ ifNoneMatch: req.headers.get('if-none-match'), status: response.status, etag: response.headers.get('etag') });
    return response;
  };
}

/** A provider as a browser app would set it up; no localStorage in Node, so no persistent cache. */
function provider(headers, log, pollInterval = 0) {
  return new OFREPWebProvider({
    baseUrl: url,
    headers,
    pollInterval,
    cacheMode: 'disabled',
    fetchImplementation: recordingFetch(log),
  });
}

const getters = {
  boolean: 'getBooleanDetails',
  string: 'getStringDetails',
  integer: 'getNumberDetails',
  float: 'getNumberDetails',
  object: 'getObjectDetails',
};

function evaluate(client, c) {
  const d = client[getters[c.type]](c.flag, c.default);
  return {
    value: d.value,
    variant: d.variant ?? null,
    reason: d.reason ?? null,
    errorCode: d.errorCode ?? null,
    errorMessage: d.errorMessage ?? null,
    metadata: d.flagMetadata ?? {},
  };
}

function sorted(v) {
  if (Array.isArray(v)) return v.map(sorted);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])]));
  return v;
}

const same = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

function check(got, want, type) {
  const problems = [];
  if (!same(got.value, want.value)) problems.push(`value ${JSON.stringify(got.value)}, want ${JSON.stringify(want.value)}`);
  if (type === 'integer' && !Number.isInteger(got.value)) problems.push(`value ${got.value} is not an integer`);
  for (const f of ['variant', 'reason', 'errorCode']) {
    if (f in want && got[f] !== want[f]) problems.push(`${f} ${JSON.stringify(got[f])}, want ${JSON.stringify(want[f])}`);
  }
  for (const [k, v] of Object.entries(want.metadata ?? {})) {
    if (!same(got.metadata[k], v)) problems.push(`metadata[${k}] ${JSON.stringify(got.metadata[k])}, want ${JSON.stringify(v)}`);
  }
  return problems;
}

/** Sets a domain's provider with `context`; a provider that fails to start is a result, not a crash. */
async function start(domain, context, p) {
  await OpenFeature.setContext(domain, context);
  try {
    await OpenFeature.setProviderAndWait(domain, p);
    return null;
  } catch (e) {
    return `${e?.name ?? 'Error'}: ${e?.message ?? e}`;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const results = [];
const push = (name, problems, got, quirk = null) => results.push({ name, ok: problems.length === 0, problems, got, quirk });

// The cases. The web SDK has one context per domain (the static-context paradigm): a context
// change makes the provider fetch the bulk evaluation for it, and evaluations read that cache.
// A context the server refuses gets a domain of its own, so it cannot leave the main one stale.
const mainLog = [];
const startError = await start('main', cases[0].context, provider(auth, mainLog));
if (startError) failSetup(`the web provider did not start: ${startError}`);
const main = OpenFeature.getClient('main');
for (const c of cases) {
  const quirk = c.quirks?.[CLIENT];
  const want = quirk ? quirk.expect : c.expect;
  let got = null;
  let problems;
  try {
    await OpenFeature.setContext('main', c.context);
    problems = [];
    got = evaluate(main, c);
    problems.push(...check(got, want, c.type));
  } catch (e) {
    problems = [`the SDK threw ${e.name}: ${e.message}`];
  }
  push(c.name, problems, got, quirk?.why ?? null);
}

// ETag: polling revalidates the cached bulk evaluation with If-None-Match and gets 304.
{
  const log = [];
  await start('etag', { targetingKey: 'etag-user' }, provider(auth, log, 100));
  const deadline = Date.now() + 10_000;
  while (!log.some((x) => x.status === 304) && Date.now() < deadline) await sleep(50);
  const first = log[0];
  const revalidated = log.find((x) => x.status === 304);
  const problems = [];
  if (!first || first.status !== 200 || !first.etag) problems.push(`the first bulk request answered ${JSON.stringify(first)}, want 200 with an ETag`);
  if (!revalidated) problems.push(`no 304 within 10 s of polling: ${JSON.stringify(log.slice(0, 5))}`);
  else if (revalidated.ifNoneMatch !== first.etag) problems.push(`304 for If-None-Match ${revalidated.ifNoneMatch}, want the ETag ${first.etag}`);
  const d = evaluate(OpenFeature.getClient('etag'), { flag: 'bool-static', type: 'boolean', default: false });
  if (d.value !== true) problems.push(`after the 304 the cached bool-static is ${JSON.stringify(d)}`);
  push('bulk: polling revalidates with If-None-Match and gets 304', problems, { exchanges: log.length, first, revalidated });
  await OpenFeature.clearProviders('etag');
}

if (token) {
  for (const [name, headers, ok] of [
    ['auth: X-API-Key', [['X-API-Key', token]], true],
    ['auth: no credentials are refused', [], false],
    ['auth: a wrong token is refused', [['Authorization', 'Bearer not-the-token']], false],
  ]) {
    const domain = `auth-${results.length}`;
    const log = [];
    const err = await start(domain, { targetingKey: 'auth' }, provider(headers, log));
    const got = evaluate(OpenFeature.getClient(domain), { flag: 'bool-static', type: 'boolean', default: false });
    const want = ok ? { value: true, reason: 'STATIC', errorCode: null } : { value: false, reason: 'ERROR', errorCode: 'PROVIDER_FATAL' };
    const problems = check(got, want, 'boolean');
    if (ok && err) problems.push(`the provider did not start: ${err}`);
    if (!ok && log[0]?.status !== 401) problems.push(`the server answered ${log[0]?.status}, want 401`);
    push(name, problems, { ...got, startError: err });
  }
}

const packages = Object.fromEntries(
  [
    ['@openfeature/web-sdk', 'node_modules/@openfeature/web-sdk'],
    ['@openfeature/ofrep-web-provider', 'node_modules/@openfeature/ofrep-web-provider'],
    ['@openfeature/ofrep-core (of the web provider)', 'node_modules/@openfeature/ofrep-web-provider/node_modules/@openfeature/ofrep-core'],
    ['@openfeature/core', 'node_modules/@openfeature/core'],
  ].map(([name, dir]) => [name, JSON.parse(readFileSync(join(here, dir, 'package.json'), 'utf8')).version]),
);
const failed = results.filter((r) => !r.ok);
emit({ event: 'report', client: CLIENT, node: process.version, packages, passed: results.length - failed.length, failed: failed.length, results });
for (const r of failed) process.stderr.write(`FAIL ${r.name}: ${r.problems.join('; ')}\n`);
if (failed.length) process.exit(1);

// Watch: what a browser user sees of a flag change (kill switch, restore) at its next poll.
const watchFlag = process.env.WATCH_FLAG;
if (watchFlag) {
  const pollMs = Number(process.env.OFREP_POLL_MS || 200);
  const wanted = Number(process.env.WATCH_CHANGES || 2);
  const timeoutMs = Number(process.env.WATCH_TIMEOUT_MS || 30_000);
  const log = [];
  const err = await start('watch', { targetingKey: 'watcher' }, provider(auth, log, pollMs));
  if (err) failSetup(`the watching provider did not start: ${err}`);
  const client = OpenFeature.getClient('watch');
  const details = () => evaluate(client, { flag: watchFlag, type: 'boolean', default: false });
  const deadline = Date.now() + timeoutMs;
  while (!log.some((x) => x.status === 304) && Date.now() < deadline) await sleep(20);
  emit({ event: 'ready', flag: watchFlag, pollMs, details: details(), etag: log[0]?.etag ?? null });
  let changes = 0;
  let last = JSON.stringify(details());
  client.addHandler(ProviderEvents.ConfigurationChanged, (e) => {
    if (!(e?.flagsChanged ?? []).includes(watchFlag)) return;
    const now = details();
    if (JSON.stringify(now) === last) return;
    last = JSON.stringify(now);
    changes += 1;
    const exchange = log[log.length - 1];
    emit({ event: 'changed', flag: watchFlag, details: now, at: Date.now(), ifNoneMatch: exchange?.ifNoneMatch ?? null, status: exchange?.status, etag: exchange?.etag ?? null, polls: log.length, notModified: log.filter((x) => x.status === 304).length });
  });
  while (changes < wanted && Date.now() < deadline) await sleep(20);
  await OpenFeature.close();
  if (changes < wanted) {
    process.stderr.write(`node_web_client.mjs: saw ${changes} of ${wanted} changes of ${watchFlag} within ${timeoutMs} ms\n`);
    process.exit(1);
  }
}
await OpenFeature.close();
process.exit(0);
