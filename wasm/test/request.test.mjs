import assert from "node:assert/strict";
import { test } from "node:test";

import { T0, cases, fresh, malformed } from "./fixture.mjs";

const tok = cases.tokens;
const URL_BASE = "https://edge.example";

function req(path, headers = {}, method = "POST") {
  return new Request(URL_BASE + path, { method, headers });
}

const SESSION =
  "session tokens (aptoken) are verified by the keyward engine only: sessions are not in the snapshot; " +
  "send an API key (X-API-Key or Authorization: Bearer)";
const SIGNED =
  "signed requests (APIKey, Signature, UserId, Nonce) are verified by the keyward engine only: API secrets " +
  "and nonce state are not in the snapshot; send an API key (X-API-Key or Authorization: Bearer)";

test("X-API-Key and Authorization: Bearer (any case)", () => {
  const v = fresh();
  const at = { now: T0 };
  for (const headers of [
    { "X-API-Key": tok.valid },
    { "x-api-key": `  ${tok.valid} ` },
    { Authorization: `Bearer ${tok.valid}` },
    { authorization: `bEaReR   ${tok.valid}` },
  ]) {
    const verdict = v.verifyRequest(req("/v1/thing", headers), at);
    assert.deepEqual([verdict.code, verdict.keyId], ["VALID", cases.keyIds.valid], JSON.stringify(headers));
  }
  assert.equal(v.verifyRequest(req("/", { "X-API-Key": tok.revoked }), at).code, "REVOKED");
  assert.equal(v.verifyRequest(req("/", { "X-API-Key": tok.unknown }), at).code, "NOT_FOUND");
});

test("the tool comes from /api/v2/{tool} unless the options name one", () => {
  const v = fresh();
  const code = (path, opts = {}) => v.verifyRequest(req(path, { "X-API-Key": tok.valid }), { now: T0, ...opts }).code;
  assert.equal(code("/api/v2/gl_ping"), "VALID");
  assert.equal(code("/api/v2/gl_ping?debug=1"), "VALID");
  assert.equal(code("/api/v2/legacy"), "TOOL_DISABLED");
  assert.equal(code("/api/v2/admin_tool"), "INSUFFICIENT_PERMISSIONS");
  assert.equal(code("/api/v2/nope"), "UNKNOWN_TOOL");
  // The tool is the first segment: the rest of the path is the upstream's.
  assert.equal(code("/api/v2/gl_ping/extra"), "VALID");
  assert.equal(code("/api/v2/legacy/extra"), "TOOL_DISABLED");
  // A gateway path whose tool name is invalid is an unknown tool, not "no tool".
  assert.equal(code("/api/v2/"), "UNKNOWN_TOOL");
  assert.equal(code("/api/v2/gl%20ping/extra"), "UNKNOWN_TOOL");
  assert.equal(code("/api/v1/legacy"), "VALID");
  assert.equal(code("/api/v2/legacy", { tool: "gl_ping" }), "VALID");
  assert.equal(code("/", { tool: "legacy" }), "TOOL_DISABLED");
});

test("sessions and signed requests cannot be verified at the edge", () => {
  const v = fresh();
  assert.deepEqual(v.verifyRequest(req("/api/v2/gl_ping", { aptoken: "sess_abc" }), { now: T0 }), malformed(SESSION));
  const signed = { APIKey: tok.valid, Signature: "ab".repeat(32), UserId: "96", Nonce: "1" };
  assert.deepEqual(v.verifyRequest(req("/api/v2/gl_ping", signed), { now: T0 }), malformed(SIGNED));
});

test("header problems are MALFORMED with the parser's message", () => {
  const v = fresh();
  const error = (headers) => v.verifyRequest(req("/", headers), { now: T0 });
  assert.deepEqual(
    error({}),
    malformed("no credential: send X-API-Key, Authorization: Bearer, aptoken, or the signed headers"),
  );
  assert.deepEqual(error({ "X-API-Key": tok.valid, Authorization: `Bearer ${tok.valid}` }), malformed(
    "conflicting credentials: `X-API-Key` and `Authorization`",
  ));
  assert.deepEqual(error({ Authorization: "Basic dXNlcjpwYXNz" }), malformed("Authorization scheme must be Bearer"));
  assert.deepEqual(error({ APIKey: tok.valid, Signature: "ab" }), malformed("signed request is missing header `UserId`"));
  assert.deepEqual(error({ "X-API-Key": "a".repeat(1025) }), malformed("header `X-API-Key` is longer than 1024 bytes"));
  // Headers joins repeated values with ", ": the result is not a token.
  const h = new Headers();
  h.append("X-API-Key", tok.valid);
  h.append("X-API-Key", tok.valid);
  assert.deepEqual(error(h), malformed("token prefix is invalid"));
});

test("CF-Connecting-IP counts only when the caller trusts it", () => {
  const v = fresh();
  const code = (cfIp, opts) =>
    v.verifyRequest(req("/", { "X-API-Key": tok.ip_rules, "CF-Connecting-IP": cfIp }), { now: T0, ...opts }).code;
  assert.equal(code("10.1.2.3", {}), "IP_DENIED");
  assert.equal(code("10.1.2.3", { trustCfConnectingIp: false }), "IP_DENIED");
  assert.equal(code("10.1.2.3", { trustCfConnectingIp: true }), "VALID");
  assert.equal(code("10.9.0.1", { trustCfConnectingIp: true }), "IP_DENIED");
  assert.equal(code("2001:db8::5", { trustCfConnectingIp: true }), "VALID");
  assert.equal(code("not-an-ip", { trustCfConnectingIp: true }), "IP_DENIED");
  // An explicit ip wins over the header.
  assert.equal(code("10.1.2.3", { trustCfConnectingIp: true, ip: "192.0.2.1" }), "IP_DENIED");
  assert.equal(code("192.0.2.1", { trustCfConnectingIp: true, ip: "10.1.2.3" }), "VALID");
});

test("options: permissions, cost, now; bad ones throw", () => {
  const v = fresh();
  const r = () => req("/", { "X-API-Key": tok.credits });
  assert.equal(v.verifyRequest(r(), { now: T0, cost: 2 }).remaining, 0);
  assert.equal(v.verifyRequest(r(), { now: T0 }).code, "USAGE_EXHAUSTED");
  const p = (permissions) => v.verifyRequest(req("/", { "X-API-Key": tok.valid }), { now: T0, permissions }).code;
  assert.deepEqual([p(["keys:read"]), p(["keys:write"])], ["VALID", "INSUFFICIENT_PERMISSIONS"]);
  assert.equal(v.verifyRequest(req("/", { "X-API-Key": tok.valid })).code, "VALID", "options are optional");
  assert.throws(() => v.verifyRequest(req("/", {}), { ip: "nope" }), { name: "Error", message: '`ip` is not an IPv4 or IPv6 address: "nope"' });
  assert.throws(() => v.verifyRequest(req("/", {}), { trustCfConnectingIp: "yes" }), {
    name: "TypeError",
    message: "`trustCfConnectingIp` must be a boolean",
  });
  assert.throws(() => v.verifyRequest(req("/", {}), 5), {
    name: "TypeError",
    message: "verifyRequest() options must be an object: {tool?, ip?, trustCfConnectingIp?, ...}",
  });
  assert.throws(() => v.verifyRequest("https://edge.example/"), {
    name: "TypeError",
    message: "verifyRequest() takes a Fetch API Request",
  });
});

test("a request-like object works too", () => {
  const v = fresh();
  const like = { url: `${URL_BASE}/api/v2/legacy`, headers: { "x-api-key": tok.valid } };
  assert.equal(v.verifyRequest(like, { now: T0 }).code, "TOOL_DISABLED");
});

test("rate limits hold across requests in one isolate", () => {
  const v = fresh();
  const codes = [];
  for (let i = 0; i < 4; i++) codes.push(v.verifyRequest(req("/api/v2/gl_ping", { "X-API-Key": tok.rate }), { now: T0 }).code);
  assert.deepEqual(codes, ["VALID", "VALID", "VALID", "RATE_LIMITED"]);
});
