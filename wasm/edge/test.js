// `workerd test config.capnp` runs this `test` handler: real Fetch Requests
// through verifyRequest and through the example worker's fetch handler, in
// workerd. Any mismatch throws, which fails the test run.
import cases from "./cases.json";
import { Verifier, parseCredentials, verifySignature } from "./pkg/workerd.js";
import snapshot from "./snapshot.bin";
import worker from "./worker.js";

const T0 = cases.createdAt;
const tok = cases.tokens;

function req(path, headers = {}) {
  return new Request(`https://edge.example${path}`, { method: "POST", headers });
}

export default {
  fetch: worker.fetch,

  async test(controller, env) {
    let passed = 0;
    const failures = [];
    const check = (name, got, want) => {
      const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
      if (g === w) passed++;
      else failures.push(`${name}: got ${g}, want ${w}`);
    };
    const key = env.SNAPSHOT_KEY; // hex text, as the engine keeps it
    const fresh = () => Verifier.load(snapshot, key);

    // The snapshot: a data module (ArrayBuffer), authenticated on load.
    check("stats", fresh().stats(), { keys: 17, workspaces: 4, tools: 5, version: 1, createdAt: T0 });
    const tampered = new Uint8Array(snapshot.slice(0));
    tampered[40] ^= 1;
    const loadError = (bytes) => {
      try {
        Verifier.load(bytes, key);
        return "accepted";
      } catch (e) {
        return e.message;
      }
    };
    check("tampered", loadError(tampered), "snapshot authentication failed: it was modified or the key is wrong");
    check(
      "truncated",
      loadError(tampered.subarray(0, 64)),
      `snapshot is truncated: expected ${tampered.length} bytes, got 64`,
    );

    // verifyRequest: headers, tool from the path, codes.
    const v = fresh();
    const at = { now: T0 };
    const code = (path, headers, opts = at) => v.verifyRequest(req(path, headers), opts).code;
    const x = (name) => ({ "X-API-Key": tok[name] });
    const bearer = (name) => ({ Authorization: `Bearer ${tok[name]}` });
    const valid = v.verifyRequest(req("/api/v2/gl_ping", x("valid")), at);
    check("valid", [valid.code, valid.status, valid.keyId, valid.workspaceId, valid.meta], [
      "VALID",
      200,
      cases.keyIds.valid,
      cases.workspaceIds.acme,
      cases.validMeta,
    ]);
    check("bearer", code("/api/v2/gl_ping", bearer("valid")), "VALID");
    check("tool disabled", code("/api/v2/legacy", bearer("valid")), "TOOL_DISABLED");
    check("unknown tool", code("/api/v2/nope", bearer("valid")), "UNKNOWN_TOOL");
    check("tool permission", code("/api/v2/admin_tool", bearer("valid")), "INSUFFICIENT_PERMISSIONS");
    check("required permission", code("/", x("valid"), { ...at, permissions: ["keys:write"] }), "INSUFFICIENT_PERMISSIONS");
    for (const [name, want] of [
      ["expired", "EXPIRED"],
      ["revoked", "REVOKED"],
      ["disabled", "DISABLED"],
      ["plan_inactive", "PLAN_INACTIVE"],
      ["unknown", "NOT_FOUND"],
      ["imported", "VALID"],
    ]) {
      check(name, code("/", x(name)), want);
    }
    const garbage = v.verifyRequest(req("/", { "X-API-Key": "kw_live_nope" }), at);
    check("malformed", [garbage.code, garbage.status, garbage.error], [
      "MALFORMED",
      401,
      "token body must be 36 base62 characters",
    ]);
    const session = v.verifyRequest(req("/api/v2/gl_ping", { aptoken: "sess_1" }), at);
    check("session", [session.code, session.error.startsWith("session tokens (aptoken) are verified by the keyward engine only")], [
      "MALFORMED",
      true,
    ]);
    check("no credential", v.verifyRequest(req("/"), at).error, "no credential: send X-API-Key, Authorization: Bearer, aptoken, or the signed headers");

    // IP: CF-Connecting-IP only when trusted.
    const ipHeaders = (ip) => ({ ...x("ip_rules"), "CF-Connecting-IP": ip });
    check("cf ip untrusted", code("/", ipHeaders("10.1.2.3")), "IP_DENIED");
    check("cf ip trusted", code("/", ipHeaders("10.1.2.3"), { ...at, trustCfConnectingIp: true }), "VALID");
    check("cf ip denied", code("/", ipHeaders("10.9.0.1"), { ...at, trustCfConnectingIp: true }), "IP_DENIED");
    check("explicit ip", code("/", x("ip_rules"), { ...at, ip: "2001:db8::7" }), "VALID");

    // Expiry follows `now`; by default `now` is the request's Date.now().
    check("before expiry", code("/", x("expiring"), { now: cases.expiresAt - 1 }), "VALID");
    check("at expiry", code("/", x("expiring"), { now: cases.expiresAt }), "EXPIRED");
    check("clock", [Date.now() > cases.expiresAt, code("/", x("expiring"), {}), code("/", x("valid"), {})], [
      true,
      "EXPIRED",
      "VALID",
    ]);

    // Limits are counted in this isolate's memory.
    const rate = [1, 2, 3, 4].map(() => v.verifyRequest(req("/", x("rate")), at));
    check("rate", rate.map((r) => r.code), ["VALID", "VALID", "VALID", "RATE_LIMITED"]);
    check("retry after", [rate[3].status, rate[3].retryAfterMs], [429, 334]);
    check("other verifier", fresh().verifyRequest(req("/", x("rate")), at).code, "VALID");
    check("credits", [1, 2, 3].map(() => v.verifyRequest(req("/", x("credits")), at).remaining), [1, 0, 0]);

    // The helpers.
    check("parseCredentials", parseCredentials(req("/", bearer("valid")).headers), { kind: "api_key", key: tok.valid });
    const vector = {
      apiSecret: "engine-test-secret",
      nonce: "2247733562",
      userId: "96",
      apiKey: "28c68ac3fcfafc3d4e8d653fe57e5baf",
      signature: "1796148fe957facdc5495abf6dddf5f8c635a071f8438f5aeccb1552d98b4743",
    };
    check("signature", [
      verifySignature(vector),
      verifySignature({ ...vector, signature: vector.signature.toUpperCase() }),
      verifySignature({ ...vector, nonce: "2247733563" }),
    ], [true, true, false]);

    // The example worker's fetch handler, end to end.
    const respond = async (path, headers) => {
      const res = await worker.fetch(req(path, headers), env);
      const body = await res.json();
      return [res.status, body.success, body.success ? body.data.keyId : body.error.code, res.headers.get("Retry-After")];
    };
    check("fetch valid", await respond("/api/v2/gl_ping", bearer("valid")), [200, true, cases.keyIds.valid, null]);
    check("fetch revoked", await respond("/api/v2/gl_ping", bearer("revoked")), [401, false, "REVOKED", null]);
    check("fetch disabled tool", await respond("/api/v2/legacy", bearer("valid")), [403, false, "TOOL_DISABLED", null]);
    check("fetch unknown tool", await respond("/api/v2/nope", bearer("valid")), [404, false, "UNKNOWN_TOOL", null]);
    check("fetch trusted ip", await respond("/", ipHeaders("10.1.2.3")), [200, true, cases.keyIds.ip_rules, null]);
    check("fetch denied ip", await respond("/", ipHeaders("192.0.2.1")), [403, false, "IP_DENIED", null]);
    check("fetch cooldown", [
      (await respond("/", x("cooldown")))[0],
      await respond("/", x("cooldown")),
    ], [200, [429, false, "COOLDOWN", "1"]]);

    if (failures.length > 0) {
      throw new Error(`${failures.length} of ${passed + failures.length} edge checks failed:\n${failures.join("\n")}`);
    }
    console.log(`keyward-wasm edge checks: ${passed} passed, 0 failed`);
  },
};
