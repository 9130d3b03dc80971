import assert from "node:assert/strict";
import { test } from "node:test";

import { DAY, HOUR, T0, cases, fresh, malformed } from "./fixture.mjs";

const tok = cases.tokens;

/** The verdict for a found key, with the fields most tests leave alone. */
function found(name, code, status, extra = {}) {
  return {
    valid: code === "VALID",
    code,
    status,
    keyId: cases.keyIds[name],
    workspaceId: cases.workspaceIds[name === "plan_inactive" ? "frozen" : name === "office" ? "office" : "acme"],
    permissions: ["tools:gl_ping", "keys:read"],
    meta: null,
    expiresAt: null,
    remaining: null,
    dailyRemaining: null,
    rateLimit: null,
    retryAfterMs: null,
    error: null,
    ...extra,
  };
}

const codeOf = (v, name, extra = {}) => v.verify({ key: tok[name], now: T0, ...extra }).code;

test("a valid key: every field of the verdict", () => {
  const v = fresh();
  assert.deepEqual(
    v.verify({ key: tok.valid, ip: "198.51.100.7", tool: "gl_ping", permissions: ["keys:read"], now: T0 }),
    found("valid", "VALID", 200, {
      meta: { plan: "pro", owner: { team: "ci" }, seats: 3 },
      expiresAt: cases.farFuture,
    }),
  );
  assert.deepEqual(cases.validMeta, { plan: "pro", owner: { team: "ci" }, seats: 3 });
});

test("MALFORMED before any lookup, with the reason", () => {
  const v = fresh();
  assert.deepEqual(v.verify({ key: "kw_live_nope", now: T0 }), malformed("token body must be 36 base62 characters"));
  assert.deepEqual(v.verify({ key: "", now: T0 }), malformed("token is empty"));
  assert.deepEqual(v.verify({ key: "no-separator", now: T0 }), malformed("token has no prefix separator"));
  const t = tok.valid;
  const i = 12;
  const flipped = t.slice(0, i) + (t[i] === "a" ? "b" : "a") + t.slice(i + 1);
  assert.deepEqual(v.verify({ key: flipped, now: T0 }), malformed("token checksum does not match"));
  // A foreign token matches only a key imported by hash.
  assert.deepEqual(v.verify({ key: "legacy-key-9999999999", now: T0 }), malformed("token has no prefix separator"));
});

test("NOT_FOUND for a well-formed token no key has", () => {
  assert.deepEqual(fresh().verify({ key: tok.unknown, now: T0 }), {
    ...malformed(null),
    code: "NOT_FOUND",
  });
});

test("key status: EXPIRED, REVOKED, DISABLED, PLAN_INACTIVE", () => {
  const v = fresh();
  assert.deepEqual(
    v.verify({ key: tok.expired, now: T0 }),
    found("expired", "EXPIRED", 401, { expiresAt: T0 - 1000 }),
  );
  assert.deepEqual(v.verify({ key: tok.revoked, now: T0 }), found("revoked", "REVOKED", 401));
  assert.deepEqual(v.verify({ key: tok.disabled, now: T0 }), found("disabled", "DISABLED", 403));
  assert.deepEqual(v.verify({ key: tok.plan_inactive, now: T0 }), found("plan_inactive", "PLAN_INACTIVE", 403));
});

test("expiry follows `now`, exclusive at expires_at", () => {
  const v = fresh();
  assert.equal(codeOf(v, "expiring", { now: cases.expiresAt - 1 }), "VALID");
  assert.equal(codeOf(v, "expiring", { now: cases.expiresAt }), "EXPIRED");
  assert.equal(cases.expiresAt, T0 + HOUR);
});

test("`now` defaults to Date.now() at the call", (t) => {
  const v = fresh();
  t.mock.method(Date, "now", () => cases.expiresAt - 1);
  assert.equal(v.verify({ key: tok.expiring }).code, "VALID");
  t.mock.method(Date, "now", () => cases.expiresAt);
  assert.equal(v.verify({ key: tok.expiring }).code, "EXPIRED");
});

test("IP rules: allow list, deny inside it, IPv6, v4-mapped, unknown fails closed", () => {
  const v = fresh();
  const ip = (addr, name = "ip_rules") => v.verify({ key: tok[name], ip: addr, now: T0 }).code;
  assert.equal(ip("10.1.2.3"), "VALID");
  assert.equal(ip("10.9.0.1"), "IP_DENIED");
  assert.equal(ip("192.0.2.1"), "IP_DENIED");
  assert.equal(ip(undefined), "IP_DENIED");
  assert.equal(ip("::ffff:10.1.2.3"), "VALID");
  assert.equal(ip("::ffff:10.9.0.1"), "IP_DENIED");
  assert.equal(ip("2001:db8::1"), "VALID");
  assert.equal(ip("2001:db9::1"), "IP_DENIED");
  // The workspace's rules apply to its keys too.
  assert.equal(ip("198.51.100.1", "office"), "VALID");
  assert.equal(ip("203.0.113.7", "office"), "IP_DENIED");
  assert.equal(ip(null, "office"), "IP_DENIED");
  assert.deepEqual(
    v.verify({ key: tok.ip_rules, ip: "192.0.2.1", now: T0 }),
    found("ip_rules", "IP_DENIED", 403),
  );
});

test("tools and permissions", () => {
  const v = fresh();
  assert.equal(codeOf(v, "valid", { tool: "gl_ping" }), "VALID");
  assert.equal(codeOf(v, "valid", { tool: "legacy" }), "TOOL_DISABLED");
  assert.equal(codeOf(v, "valid", { tool: "nope" }), "UNKNOWN_TOOL");
  assert.equal(codeOf(v, "valid", { tool: "admin_tool" }), "INSUFFICIENT_PERMISSIONS");
  assert.equal(codeOf(v, "valid", { permissions: ["keys:read"] }), "VALID");
  assert.equal(codeOf(v, "valid", { permissions: ["keys:read", "keys:write"] }), "INSUFFICIENT_PERMISSIONS");
  // A key restricted to some tools: tools:* grants the permission, the list does not.
  assert.equal(codeOf(v, "tool_only", { tool: "gl_ping" }), "VALID");
  assert.equal(codeOf(v, "tool_only", { tool: "slow_tool" }), "INSUFFICIENT_PERMISSIONS");
  const status = (tool) => v.verify({ key: tok.valid, tool, now: T0 }).status;
  assert.deepEqual([status("legacy"), status("nope"), status("admin_tool")], [403, 404, 403]);
});

test("RATE_LIMITED: 3 per second, smooth, with exact retry-after", () => {
  const v = fresh();
  const call = (now) => v.verify({ key: tok.rate, now });
  const rate = (remaining, resetMs) => ({ limit: 3, remaining, resetMs });
  assert.deepEqual(call(T0).rateLimit, rate(2, 334));
  assert.deepEqual(call(T0).rateLimit, rate(1, 667));
  assert.deepEqual(call(T0).rateLimit, rate(0, 1000));
  assert.deepEqual(call(T0), found("rate", "RATE_LIMITED", 429, { rateLimit: rate(0, 1000), retryAfterMs: 334 }));
  assert.deepEqual([call(T0 + 333).code, call(T0 + 333).retryAfterMs], ["RATE_LIMITED", 1]);
  assert.equal(call(T0 + 334).code, "VALID");
  assert.equal(call(T0 + 334).code, "RATE_LIMITED");
});

test("limits are per Verifier (per isolate), not shared", () => {
  const [a, b] = [fresh(), fresh()];
  for (let i = 0; i < 3; i++) assert.equal(codeOf(a, "rate"), "VALID");
  assert.equal(codeOf(a, "rate"), "RATE_LIMITED");
  assert.equal(codeOf(b, "rate"), "VALID");
});

test("a refused request charges nothing", () => {
  const v = fresh();
  for (let i = 0; i < 5; i++) assert.equal(codeOf(v, "rate", { tool: "nope" }), "UNKNOWN_TOOL");
  for (let i = 0; i < 3; i++) assert.equal(codeOf(v, "rate"), "VALID");
});

test("COOLDOWN: key cooldown and tool cooldown", () => {
  const v = fresh();
  assert.equal(codeOf(v, "cooldown", { now: T0 }), "VALID");
  assert.deepEqual(
    v.verify({ key: tok.cooldown, now: T0 + 400 }),
    found("cooldown", "COOLDOWN", 429, { retryAfterMs: 600 }),
  );
  assert.equal(codeOf(v, "cooldown", { now: T0 + 1000 }), "VALID");
  // slow_tool has a 1000 ms cooldown per key; other calls of the key are free.
  assert.equal(codeOf(v, "valid", { tool: "slow_tool", now: T0 }), "VALID");
  assert.deepEqual(
    [codeOf(v, "valid", { tool: "slow_tool", now: T0 + 10 }), codeOf(v, "valid", { now: T0 + 10 })],
    ["COOLDOWN", "VALID"],
  );
});

test("DAILY_LIMIT: 2 per UTC day, retry at midnight", () => {
  const v = fresh();
  const t = T0 + 10 * HOUR;
  assert.equal(v.verify({ key: tok.daily, now: t }).dailyRemaining, 1);
  assert.equal(v.verify({ key: tok.daily, now: t }).dailyRemaining, 0);
  assert.deepEqual(
    v.verify({ key: tok.daily, now: t }),
    found("daily", "DAILY_LIMIT", 429, { dailyRemaining: 0, retryAfterMs: 14 * HOUR }),
  );
  assert.equal(v.verify({ key: tok.daily, now: T0 + DAY }).dailyRemaining, 1);
  // A key x tool limit: one gl_ping a day, other calls unaffected.
  assert.equal(codeOf(v, "key_tool", { tool: "gl_ping" }), "VALID");
  assert.equal(codeOf(v, "key_tool", { tool: "gl_ping" }), "DAILY_LIMIT");
  assert.equal(codeOf(v, "key_tool"), "VALID");
});

test("USAGE_EXHAUSTED: credits, cost, refill", () => {
  const v = fresh();
  assert.equal(v.verify({ key: tok.credits, now: T0 }).remaining, 1);
  assert.equal(v.verify({ key: tok.credits, now: T0, cost: 0 }).remaining, 1);
  assert.equal(v.verify({ key: tok.credits, now: T0 }).remaining, 0);
  assert.deepEqual(v.verify({ key: tok.credits, now: T0 }), found("credits", "USAGE_EXHAUSTED", 429, { remaining: 0 }));
  const w = fresh();
  assert.deepEqual([codeOf(w, "credits", { cost: 3 }), w.verify({ key: tok.credits, now: T0, cost: 2 }).remaining], [
    "USAGE_EXHAUSTED",
    0,
  ]);
  // One credit a day: refused until the next UTC midnight.
  const t = T0 + 10 * HOUR;
  assert.equal(v.verify({ key: tok.refill, now: t }).remaining, 0);
  assert.deepEqual(
    v.verify({ key: tok.refill, now: t }),
    found("refill", "USAGE_EXHAUSTED", 429, { remaining: 0, retryAfterMs: 14 * HOUR }),
  );
  assert.equal(codeOf(v, "refill", { now: T0 + DAY }), "VALID");
});

test("CONCURRENCY_LIMIT: leases free themselves after 60 s", () => {
  const v = fresh();
  assert.equal(codeOf(v, "concurrency", { now: T0 }), "VALID");
  assert.deepEqual(
    v.verify({ key: tok.concurrency, now: T0 + 1000 }),
    found("concurrency", "CONCURRENCY_LIMIT", 429, { retryAfterMs: 59_000 }),
  );
  assert.equal(codeOf(v, "concurrency", { now: T0 + 60_000 }), "VALID");
});

test("a key imported by hash verifies its foreign token", () => {
  assert.deepEqual(fresh().verify({ key: tok.imported, now: T0 }), found("imported", "VALID", 200));
  assert.equal(tok.imported, "legacy-key-0123456789");
});

test("bad arguments throw a TypeError or Error naming the field", () => {
  const v = fresh();
  const thrown = (input) => {
    try {
      v.verify(input);
    } catch (e) {
      return [e.constructor.name, e.message];
    }
    assert.fail("no error");
  };
  const shape = "verify() takes an object: {key, ip?, tool?, permissions?, cost?, now?}";
  assert.deepEqual(thrown(undefined), ["TypeError", shape]);
  assert.deepEqual(thrown("kw_live_x"), ["TypeError", shape]);
  assert.deepEqual(thrown({}), ["TypeError", "`key` must be a string"]);
  assert.deepEqual(thrown({ key: 42 }), ["TypeError", "`key` must be a string"]);
  assert.deepEqual(thrown({ key: tok.valid, ip: "10.0.0.256" }), ["Error", '`ip` is not an IPv4 or IPv6 address: "10.0.0.256"']);
  assert.deepEqual(thrown({ key: tok.valid, ip: 10 }), ["TypeError", "`ip` must be a string"]);
  assert.deepEqual(thrown({ key: tok.valid, tool: ["a"] }), ["TypeError", "`tool` must be a string"]);
  assert.deepEqual(thrown({ key: tok.valid, permissions: "keys:read" }), [
    "TypeError",
    "`permissions` must be an array of strings",
  ]);
  assert.deepEqual(thrown({ key: tok.valid, permissions: [1] }), ["TypeError", "`permissions` must be an array of strings"]);
  const now = "`now` must be a non-negative number of milliseconds since the epoch";
  for (const bad of [-1, NaN, Infinity, 2 ** 53, "0"]) assert.deepEqual(thrown({ key: tok.valid, now: bad }), ["TypeError", now]);
  for (const bad of [-1, 0.5, "1"]) {
    assert.deepEqual(thrown({ key: tok.valid, cost: bad }), ["TypeError", "`cost` must be a non-negative integer"]);
  }
  // The verifier still works after every refusal.
  assert.equal(codeOf(v, "valid"), "VALID");
});

test("a getter that throws propagates, and the verifier stays usable", () => {
  const v = fresh();
  const input = {
    get key() {
      throw new RangeError("boom");
    },
  };
  assert.throws(() => v.verify(input), { name: "RangeError", message: "boom" });
  const reentrant = {
    now: T0,
    get key() {
      // Re-entering while the outer call reads its input is fine: nothing is borrowed yet.
      assert.equal(v.verify({ key: tok.valid, now: T0 }).code, "VALID");
      return tok.valid;
    },
  };
  assert.equal(v.verify(reentrant).code, "VALID");
});
