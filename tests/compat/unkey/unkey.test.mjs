// Unkey's official TypeScript SDK (@unkey/api 2.5.1, unmodified) against a
// fresh `keyward serve`. The SDK validates every response against its own
// schemas and turns error statuses into typed error classes, so each call
// below checks keyward's wire format as much as its behaviour.
//
//   KEYWARD_BIN=target/debug/keyward node --test unkey.test.mjs
//
// The binary defaults to <repo>/target/debug/keyward.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Unkey } from "@unkey/api";
import * as errors from "@unkey/api/models/errors";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.KEYWARD_BIN || resolve(here, "../../../target/debug/keyward");

let server; // the child process
let dir; // its temporary directory
let base; // http://127.0.0.1:PORT
let apiId; // the workspace keyward created, Unkey's apiId
let root; // the root key keyward printed
let unkey; // the SDK, with the root key

/** Starts `keyward serve` on a free port and reads what it prints. */
function startServer() {
  dir = mkdtempSync(join(tmpdir(), "keyward-unkey-"));
  const child = spawn(BIN, ["--db", join(dir, "keyward.redb"), "serve", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error("keyward did not start within 30 s")), 30_000);
    const found = {};
    child.on("error", (e) => reject(new Error(`cannot run ${BIN}: ${e.message}`)));
    child.on("exit", (code) => reject(new Error(`keyward exited early with ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      let m;
      if ((m = line.match(/^created .* with workspace (ws_\S+)$/))) found.apiId = m[1];
      if ((m = line.match(/^ROOT KEY \(shown once, store it now\): (\S+)$/))) found.root = m[1];
      if ((m = line.match(/^keyward listening on (http:\/\/\S+)$/))) {
        clearTimeout(timer);
        if (!found.apiId || !found.root) return reject(new Error("no workspace or root key printed"));
        resolvePromise({ child, base: m[1], ...found });
      }
    });
  });
}

before(async () => {
  ({ child: server, base, apiId, root } = await startServer());
  unkey = new Unkey({ rootKey: root, serverURL: base });
});

after(() => {
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sdk = (rootKey) => new Unkey({ rootKey, serverURL: base });
const verify = async (req) => (await unkey.keys.verifyKey(req)).data;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Awaits a rejection of the given SDK error class and returns the error. */
async function rejects(promise, cls, status) {
  let caught;
  await assert.rejects(promise, (e) => {
    caught = e;
    return true;
  });
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${caught?.name}: ${caught?.message}`);
  assert.equal(caught.statusCode, status);
  assert.match(caught.meta.requestId, /^req_[0-9A-Za-z]{20}$/);
  assert.equal(caught.error.status, status);
  assert.equal(typeof caught.error.title, "string");
  assert.equal(typeof caught.error.detail, "string");
  assert.match(caught.error.type, /^https:\/\//);
  return caught;
}

const HOUR = 3_600_000;
let main; // { keyId, key } of the key most steps use
let expiresAt;

test("createKey with credits, rate limits, permissions, roles and expiry", async () => {
  expiresAt = Date.now() + HOUR;
  const res = await unkey.keys.createKey({
    apiId,
    prefix: "acme",
    name: "customer one",
    externalId: "user_1",
    meta: { plan: "pro", seats: 3 },
    roles: ["admin", "billing.viewer"],
    permissions: ["documents.read", "documents.write", "billing.*"],
    expires: expiresAt,
    credits: { remaining: 3, refill: { interval: "monthly", amount: 100, refillDay: 15 } },
    ratelimits: [
      { name: "requests", limit: 10, duration: 60_000, autoApply: true },
      { name: "tokens", limit: 1000, duration: 60_000 },
    ],
    enabled: true,
  });
  assert.match(res.meta.requestId, /^req_/);
  assert.match(res.data.keyId, /^key_/);
  assert.match(res.data.key, /^acme_[0-9A-Za-z]{36}$/);
  main = res.data;
});

test("getKey returns every field in Unkey's shape", async () => {
  const { data } = await unkey.keys.getKey({ keyId: main.keyId });
  assert.equal(data.keyId, main.keyId);
  assert.equal(data.start, main.key.slice(0, "acme_".length + 4));
  assert.equal(data.enabled, true);
  assert.equal(data.name, "customer one");
  assert.deepEqual(data.meta, { plan: "pro", seats: 3 });
  assert.ok(Number.isInteger(data.createdAt) && Math.abs(data.createdAt - Date.now()) < 60_000);
  assert.equal(data.lastUsedAt, undefined);
  assert.equal(data.expires, expiresAt);
  assert.deepEqual(data.permissions, ["documents.read", "documents.write", "billing.*"]);
  assert.deepEqual(data.roles, ["admin", "billing.viewer"]);
  assert.deepEqual(data.credits, { remaining: 3, refill: { interval: "monthly", amount: 100, refillDay: 15 } });
  assert.equal(data.identity.externalId, "user_1");
  assert.match(data.identity.id, /^id_/);
  assert.deepEqual(
    data.ratelimits.map(({ name, limit, duration, autoApply }) => ({ name, limit, duration, autoApply })),
    [
      { name: "requests", limit: 10, duration: 60_000, autoApply: true },
      { name: "tokens", limit: 1000, duration: 60_000, autoApply: false },
    ],
  );
  assert.equal(data.plaintext, undefined);
});

test("verifyKey: a valid key, a permission query, named and auto-applied rate limits", async () => {
  const before = Date.now();
  const v = await verify({
    key: main.key,
    permissions: "documents.read AND (documents.write OR admin.all)",
    ratelimits: [{ name: "tokens", cost: 100 }],
    tags: ["path=/v1/search"],
  });
  assert.equal(v.valid, true);
  assert.equal(v.code, "VALID");
  assert.equal(v.keyId, main.keyId);
  assert.equal(v.name, "customer one");
  assert.deepEqual(v.meta, { plan: "pro", seats: 3 });
  assert.equal(v.expires, expiresAt);
  assert.equal(v.credits, 2);
  assert.equal(v.enabled, true);
  assert.deepEqual(v.roles, ["admin", "billing.viewer"]);
  assert.deepEqual(v.permissions, ["documents.read", "documents.write", "billing.*"]);
  assert.equal(v.identity.externalId, "user_1");
  const byName = Object.fromEntries(v.ratelimits.map((r) => [r.name, r]));
  assert.deepEqual(Object.keys(byName).sort(), ["requests", "tokens"]);
  assert.equal(byName.requests.remaining, 9);
  assert.equal(byName.requests.autoApply, true);
  assert.equal(byName.tokens.remaining, 900);
  assert.equal(byName.tokens.exceeded, false);
  assert.equal(byName.tokens.duration, 60_000);
  assert.ok(byName.tokens.reset >= before && byName.tokens.reset <= Date.now() + 60_000, "reset is a Unix ms time");
  const { data } = await unkey.keys.getKey({ keyId: main.keyId });
  assert.ok(Number.isInteger(data.lastUsedAt) && data.lastUsedAt >= before - 1000);
});

test("verifyKey: insufficient permissions charge nothing", async () => {
  const v = await verify({ key: main.key, permissions: "documents.delete OR (admin AND billing.refund)" });
  assert.deepEqual([v.valid, v.code, v.keyId, v.credits], [false, "INSUFFICIENT_PERMISSIONS", main.keyId, 2]);
  // A wildcard permission covers what it names.
  const w = await verify({ key: main.key, permissions: "billing.refund", credits: { cost: 0 } });
  assert.deepEqual([w.valid, w.code, w.credits], [true, "VALID", 2]);
});

test("verifyKey: unknown and malformed keys are NOT_FOUND", async () => {
  for (const key of ["acme_notakey", `acme_${"A".repeat(36)}`, "", "x".repeat(300)]) {
    const v = await verify({ key });
    assert.deepEqual(v, { valid: false, code: "NOT_FOUND" }, key);
  }
});

test("verifyKey: credits run out (USAGE_EXCEEDED)", async () => {
  const v = await verify({ key: main.key, credits: { cost: 2 } });
  assert.deepEqual([v.valid, v.code, v.credits], [true, "VALID", 0]);
  const refused = await verify({ key: main.key });
  assert.deepEqual([refused.valid, refused.code, refused.credits], [false, "USAGE_EXCEEDED", 0]);
});

test("updateCredits: increment, decrement, set, unlimited", async () => {
  const inc = await unkey.keys.updateCredits({ keyId: main.keyId, operation: "increment", value: 5 });
  assert.deepEqual(inc.data, { remaining: 5, refill: { interval: "monthly", amount: 100, refillDay: 15 } });
  const dec = await unkey.keys.updateCredits({ keyId: main.keyId, operation: "decrement", value: 10 });
  assert.equal(dec.data.remaining, 0);
  const set = await unkey.keys.updateCredits({ keyId: main.keyId, operation: "set", value: 4 });
  assert.equal(set.data.remaining, 4);
  assert.equal((await verify({ key: main.key })).credits, 3);
  const unlimited = await unkey.keys.updateCredits({ keyId: main.keyId, operation: "set", value: null });
  assert.deepEqual(unlimited.data, { remaining: null });
  const v = await verify({ key: main.key });
  assert.deepEqual([v.valid, v.credits], [true, undefined]);
  await rejects(
    unkey.keys.updateCredits({ keyId: main.keyId, operation: "increment", value: 1 }),
    errors.BadRequestErrorResponse,
    400,
  );
  const again = await unkey.keys.updateCredits({ keyId: main.keyId, operation: "set", value: 10 });
  assert.equal(again.data.remaining, 10);
  assert.deepEqual((await unkey.keys.getKey({ keyId: main.keyId })).data.credits, { remaining: 10 });
});

test("verifyKey: over the limit (RATE_LIMITED), also at cost 0, and ad-hoc limits", async () => {
  const { data: k } = await unkey.keys.createKey({
    apiId,
    name: "limited",
    ratelimits: [{ name: "requests", limit: 2, duration: 60_000, autoApply: true }],
  });
  assert.equal((await verify({ key: k.key })).code, "VALID");
  assert.equal((await verify({ key: k.key, credits: { cost: 0 } })).code, "VALID");
  const over = await verify({ key: k.key, credits: { cost: 0 } });
  assert.deepEqual([over.valid, over.code], [false, "RATE_LIMITED"]);
  assert.equal(over.ratelimits.length, 1);
  assert.deepEqual(
    [over.ratelimits[0].name, over.ratelimits[0].exceeded, over.ratelimits[0].remaining, over.ratelimits[0].limit],
    ["requests", true, 0, 2],
  );

  // A limit the key does not have, given with its numbers, counts too.
  const { data: plain } = await unkey.keys.createKey({ apiId, name: "plain" });
  const search = { name: "search", limit: 1, duration: 60_000 };
  const first = await verify({ key: plain.key, ratelimits: [search] });
  assert.equal(first.code, "VALID");
  assert.deepEqual(
    first.ratelimits.map(({ name, limit, remaining, exceeded, autoApply }) => ({ name, limit, remaining, exceeded, autoApply })),
    [{ name: "search", limit: 1, remaining: 0, exceeded: false, autoApply: false }],
  );
  assert.equal((await verify({ key: plain.key, ratelimits: [search] })).code, "RATE_LIMITED");
  assert.equal((await verify({ key: plain.key })).code, "VALID", "calls that do not name it are not limited");
  // Overriding a configured limit's numbers for one call.
  const { data: m } = await unkey.keys.createKey({
    apiId,
    name: "metered",
    ratelimits: [{ name: "expensive", limit: 10, duration: 60_000 }],
  });
  const strict = { name: "expensive", limit: 1 };
  const once = await verify({ key: m.key, ratelimits: [strict] });
  assert.deepEqual([once.code, once.ratelimits[0].limit, once.ratelimits[0].duration], ["VALID", 1, 60_000]);
  assert.equal((await verify({ key: m.key, ratelimits: [strict] })).code, "RATE_LIMITED");
  assert.equal((await verify({ key: m.key })).ratelimits, undefined, "not auto-applied, not named: not applied");
});

test("verifyKey: expired keys", async () => {
  const { data: k } = await unkey.keys.createKey({ apiId, name: "old", expires: Date.now() - 1000 });
  const v = await verify({ key: k.key });
  assert.deepEqual([v.valid, v.code, v.keyId], [false, "EXPIRED", k.keyId]);
});

test("updateKey: absent fields are kept, null clears", async () => {
  await unkey.keys.updateKey({
    keyId: main.keyId,
    name: "customer one (renamed)",
    externalId: null,
    meta: null,
    expires: null,
    enabled: false,
  });
  const disabled = await verify({ key: main.key });
  assert.deepEqual([disabled.valid, disabled.code], [false, "DISABLED"]);
  let { data } = await unkey.keys.getKey({ keyId: main.keyId });
  assert.equal(data.name, "customer one (renamed)");
  assert.equal(data.enabled, false);
  for (const gone of ["meta", "expires", "identity"]) assert.equal(data[gone], undefined, gone);
  assert.deepEqual(data.roles, ["admin", "billing.viewer"], "roles kept");
  assert.equal(data.credits.remaining, 10, "credits kept");

  await unkey.keys.updateKey({
    keyId: main.keyId,
    enabled: true,
    roles: ["support"],
    permissions: ["documents.read"],
    externalId: "user_2",
    meta: { plan: "team" },
    ratelimits: [{ name: "per_second", limit: 5, duration: 1000, autoApply: true }],
    credits: { remaining: 7, refill: { interval: "daily", amount: 20 } },
  });
  ({ data } = await unkey.keys.getKey({ keyId: main.keyId }));
  assert.equal(data.enabled, true);
  assert.deepEqual(data.roles, ["support"]);
  assert.deepEqual(data.permissions, ["documents.read"]);
  assert.equal(data.identity.externalId, "user_2");
  assert.deepEqual(data.meta, { plan: "team" });
  assert.deepEqual(data.credits, { remaining: 7, refill: { interval: "daily", amount: 20 } });
  assert.deepEqual(data.ratelimits.map((r) => [r.name, r.limit, r.duration, r.autoApply]), [["per_second", 5, 1000, true]]);
  const v = await verify({ key: main.key, permissions: "documents.write" });
  assert.equal(v.code, "INSUFFICIENT_PERMISSIONS");

  await unkey.keys.updateKey({ keyId: main.keyId, credits: null });
  ({ data } = await unkey.keys.getKey({ keyId: main.keyId }));
  assert.equal(data.credits, undefined);
});

test("rerollKey: the old key works through the grace period, then not", async () => {
  const { data: next } = await unkey.keys.rerollKey({ keyId: main.keyId, expiration: 60_000 });
  assert.notEqual(next.keyId, main.keyId);
  assert.match(next.key, /^acme_/, "the prefix is kept");
  assert.equal((await verify({ key: next.key })).code, "VALID");
  const old = await verify({ key: main.key });
  assert.deepEqual([old.code, old.keyId], ["VALID", main.keyId]);
  assert.ok(old.expires > Date.now() && old.expires <= Date.now() + 60_000, "old key expires after the grace");
  const { data: settings } = await unkey.keys.getKey({ keyId: next.keyId });
  assert.deepEqual([settings.name, settings.roles, settings.identity.externalId], [
    "customer one (renamed)",
    ["support"],
    "user_2",
  ]);

  // Without grace the replaced key stops at once.
  const { data: third } = await unkey.keys.rerollKey({ keyId: next.keyId, expiration: 0 });
  assert.equal((await verify({ key: next.key })).code, "EXPIRED");
  assert.equal((await verify({ key: third.key })).code, "VALID");
  main = third;
});

test("whoami finds a key by its secret", async () => {
  const { data } = await unkey.keys.whoami({ key: main.key });
  assert.equal(data.keyId, main.keyId);
  await rejects(unkey.keys.whoami({ key: "acme_unknown" }), errors.NotFoundErrorResponse, 404);
});

test("apis.listKeys pages with a cursor and filters by externalId", async () => {
  const made = [];
  for (let i = 0; i < 5; i++) {
    const { data } = await unkey.keys.createKey({ apiId, name: `pager ${i}`, externalId: "pager" });
    made.push(data.keyId);
    await sleep(5); // distinct creation times, so the order is certain
  }
  const pages = [];
  for await (const page of await unkey.apis.listKeys({ apiId, limit: 2, externalId: "pager" })) {
    pages.push(page.result);
  }
  assert.deepEqual(pages.map((p) => p.data.length), [2, 2, 1]);
  assert.deepEqual(pages.map((p) => p.pagination.hasMore), [true, true, false]);
  assert.equal(pages[2].pagination.cursor, undefined);
  assert.deepEqual(pages.flatMap((p) => p.data.map((k) => k.keyId)), made.reverse(), "newest first");
  for (const p of pages) {
    for (const k of p.data) {
      assert.equal(k.identity.externalId, "pager");
      assert.equal(k.plaintext, undefined);
    }
  }
  const all = await unkey.apis.listKeys({ apiId });
  assert.ok(all.result.data.length >= 10);
  assert.equal(all.result.pagination.hasMore, false);
  await rejects(unkey.apis.listKeys({ apiId, cursor: "nonsense" }), errors.BadRequestErrorResponse, 400);
});

test("deleteKey: the key is gone", async () => {
  const { data: k } = await unkey.keys.createKey({ apiId, name: "doomed" });
  assert.equal((await verify({ key: k.key })).code, "VALID");
  const res = await unkey.keys.deleteKey({ keyId: k.keyId });
  assert.deepEqual(res.data, {});
  assert.deepEqual(await verify({ key: k.key }), { valid: false, code: "NOT_FOUND" });
  await rejects(unkey.keys.getKey({ keyId: k.keyId }), errors.NotFoundErrorResponse, 404);
  await rejects(unkey.keys.deleteKey({ keyId: k.keyId }), errors.NotFoundErrorResponse, 404);
});

test("root keys: no header 400, bad key 401, missing permission 403, over its limit 429", async () => {
  const none = await rejects(sdk("").keys.getKey({ keyId: main.keyId }), errors.BadRequestErrorResponse, 400);
  assert.equal(none.error.errors[0].location, "header.Authorization");
  await rejects(sdk("acme_bogus").keys.getKey({ keyId: main.keyId }), errors.UnauthorizedErrorResponse, 401);
  await rejects(sdk(`kw_live_${"A".repeat(36)}`).keys.verifyKey({ key: main.key }), errors.UnauthorizedErrorResponse, 401);

  const { data: reader } = await unkey.keys.createKey({ apiId, name: "reader", permissions: ["keys:read"] });
  const readOnly = sdk(reader.key);
  assert.equal((await readOnly.keys.getKey({ keyId: main.keyId })).data.keyId, main.keyId);
  await rejects(readOnly.keys.createKey({ apiId, name: "x" }), errors.ForbiddenErrorResponse, 403);
  await rejects(readOnly.keys.verifyKey({ key: main.key }), errors.ForbiddenErrorResponse, 403);

  // A key may not hand out permissions it lacks.
  const { data: writer } = await unkey.keys.createKey({ apiId, name: "writer", permissions: ["keys:write"] });
  await rejects(
    sdk(writer.key).keys.createKey({ apiId, name: "y", permissions: ["documents.read"] }),
    errors.ForbiddenErrorResponse,
    403,
  );

  const { data: limited } = await unkey.keys.createKey({
    apiId,
    name: "verifier",
    permissions: ["keys:verify"],
    ratelimits: [{ name: "api", limit: 2, duration: 60_000, autoApply: true }],
  });
  const verifier = sdk(limited.key);
  for (let i = 0; i < 2; i++) assert.equal((await verifier.keys.verifyKey({ key: main.key })).data.valid, true);
  await rejects(verifier.keys.verifyKey({ key: main.key }), errors.TooManyRequestsErrorResponse, 429);
});

test("request errors: bad input 400 with its location, unknown API 404", async () => {
  const q = await rejects(verify({ key: main.key, permissions: "documents.read AND" }), errors.BadRequestErrorResponse, 400);
  assert.equal(q.error.errors[0].location, "body.permissions");
  assert.equal(typeof q.error.errors[0].fix, "string");
  const dup = await rejects(
    unkey.keys.createKey({
      apiId,
      ratelimits: [
        { name: "a", limit: 1, duration: 1000 },
        { name: "a", limit: 2, duration: 1000 },
      ],
    }),
    errors.BadRequestErrorResponse,
    400,
  );
  assert.equal(dup.error.errors[0].location, "body.ratelimits[1].name");
  await rejects(
    unkey.keys.createKey({ apiId: "ws_0000000000000000000001", name: "elsewhere" }),
    errors.NotFoundErrorResponse,
    404,
  );
  await rejects(unkey.keys.getKey({ keyId: "key_nope" }), errors.NotFoundErrorResponse, 404);
  await rejects(unkey.keys.createKey({ apiId, byteLength: 64 }), errors.BadRequestErrorResponse, 400);
});

test("the raw wire: X-Request-Id matches meta.requestId, JSON content type, unknown operations", async () => {
  const res = await fetch(`${base}/v2/keys.getKey`, {
    method: "POST",
    headers: { authorization: `Bearer ${root}`, "content-type": "application/json" },
    body: JSON.stringify({ keyId: main.keyId }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  const body = await res.json();
  assert.equal(res.headers.get("x-request-id"), body.meta.requestId);
  assert.deepEqual(Object.keys(body).sort(), ["data", "meta"]);
  assert.ok(!JSON.stringify(body).includes("null"), "no nulls in a key");

  const unknown = await fetch(`${base}/v2/ratelimit.limit`, { method: "POST", body: "{}" });
  assert.equal(unknown.status, 404);
  const problem = await unknown.json();
  assert.equal(problem.error.status, 404);
});
