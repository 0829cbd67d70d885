// OFREP conformance through the real Node server client: @openfeature/server-sdk +
// @openfeature/ofrep-provider (single-flag evaluation, dynamic context).
//
// Run by crates/ringfence/tests/it/flags.rs against a workload's router:
//
//     OFREP_URL=http://127.0.0.1:PORT OFREP_TOKEN=secret node node_server_client.mjs
//
// Evaluates every case of cases.json through the SDK, compares what the application gets with
// the expectation (or the documented quirk of this client), checks authentication when
// OFREP_TOKEN is set, prints one JSON report on stdout, and exits 1 when a check failed, 2 when
// it could not run.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLIENT = 'node-server';
const here = dirname(fileURLToPath(import.meta.url));

function failSetup(message) {
  process.stderr.write(`node_server_client.mjs: ${message}\n`);
  process.exit(2);
}

let OpenFeature, OFREPProvider;
try {
  ({ OpenFeature } = await import('@openfeature/server-sdk'));
  ({ OFREPProvider } = await import('@openfeature/ofrep-provider'));
} catch (e) {
  failSetup(`${e.message}; install the pinned clients: (cd tests/conformance && npm ci)`);
}

const url = process.env.OFREP_URL;
if (!url) failSetup('set OFREP_URL to the router base URL, e.g. http://127.0.0.1:8080');
const token = process.env.OFREP_TOKEN || null;
const cases = JSON.parse(readFileSync(process.env.OFREP_CASES || join(here, 'cases.json'), 'utf8')).cases;

const getters = {
  boolean: 'getBooleanDetails',
  string: 'getStringDetails',
  integer: 'getNumberDetails',
  float: 'getNumberDetails',
  object: 'getObjectDetails',
};

async function evaluate(client, c) {
  const d = await client[getters[c.type]](c.flag, c.default, c.context);
  return {
    value: d.value,
    variant: d.variant ?? null,
    reason: d.reason ?? null,
    errorCode: d.errorCode ?? null,
    errorMessage: d.errorMessage ?? null,
    metadata: d.flagMetadata ?? {},
  };
}

function same(a, b) {
  return JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
}

function sorted(v) {
  if (Array.isArray(v)) return v.map(sorted);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])]));
  return v;
}

function check(got, want, type) {
  const problems = [];
  if ('value' in want && !same(got.value, want.value)) problems.push(`value ${JSON.stringify(got.value)}, want ${JSON.stringify(want.value)}`);
  if ('value' in want && type === 'integer' && !Number.isInteger(got.value)) problems.push(`value ${got.value} is not an integer`);
  for (const f of ['variant', 'reason', 'errorCode']) {
    if (f in want && got[f] !== want[f]) problems.push(`${f} ${JSON.stringify(got[f])}, want ${JSON.stringify(want[f])}`);
  }
  for (const [k, v] of Object.entries(want.metadata ?? {})) {
    if (!same(got.metadata[k], v)) problems.push(`metadata[${k}] ${JSON.stringify(got.metadata[k])}, want ${JSON.stringify(v)}`);
  }
  if (want.metadataEmpty && Object.keys(got.metadata).length > 0) problems.push(`metadata ${JSON.stringify(got.metadata)}, want none`);
  return problems;
}

async function providerFor(domain, headers) {
  await OpenFeature.setProviderAndWait(domain, new OFREPProvider({ baseUrl: url, headers: headers ?? [] }));
  return OpenFeature.getClient(domain);
}

const results = [];
const main = await providerFor('main', token ? [['Authorization', `Bearer ${token}`]] : []);
for (const c of cases) {
  const quirk = c.quirks?.[CLIENT];
  const want = quirk ? quirk.expect : c.expect;
  let got = null;
  let problems;
  try {
    got = await evaluate(main, c);
    problems = check(got, want, c.type);
  } catch (e) {
    problems = [`the SDK threw ${e.name}: ${e.message}`];
  }
  results.push({ name: c.name, ok: problems.length === 0, problems, got, quirk: quirk?.why ?? null });
}

if (token) {
  const probe = { flag: 'bool-static', type: 'boolean', default: false, context: { targetingKey: 'auth' } };
  const checks = [
    ['auth: X-API-Key', [['X-API-Key', token]], true],
    ['auth: bearer token', [['Authorization', `Bearer ${token}`]], true],
    ['auth: no credentials are refused', [], false],
    ['auth: a wrong token is refused', [['Authorization', 'Bearer not-the-token']], false],
  ];
  for (const [name, headers, ok] of checks) {
    const client = await providerFor(`auth-${results.length}`, headers);
    const got = await evaluate(client, probe);
    const want = ok ? { value: true, reason: 'STATIC', errorCode: null } : { value: false, reason: 'ERROR', errorCode: 'GENERAL' };
    // The provider's OFREPApiUnauthorizedError carries no message, so the 401 itself is not
    // visible to the application; the Rust test checks the status over raw HTTP.
    const problems = check(got, want, probe.type);
    results.push({ name, ok: problems.length === 0, problems, got, quirk: null });
  }
}

await OpenFeature.close();
const packages = Object.fromEntries(
  ['@openfeature/server-sdk', '@openfeature/ofrep-provider', '@openfeature/ofrep-core', '@openfeature/core'].map((p) => [
    p,
    JSON.parse(readFileSync(join(here, 'node_modules', p, 'package.json'), 'utf8')).version,
  ]),
);
const failed = results.filter((r) => !r.ok);
for (const r of failed) process.stderr.write(`FAIL ${r.name}: ${r.problems.join('; ')}\n`);
// Exit only once the report is written: process.exit() right after a large write to a pipe
// cuts it short.
const report = JSON.stringify({ client: CLIENT, node: process.version, packages, passed: results.length - failed.length, failed: failed.length, results }, null, 1);
process.stdout.write(`${report}\n`, () => process.exit(failed.length ? 1 : 0));
