// Example edge worker: verifies each request's API key locally, against a
// keyward snapshot, before it reaches the origin.
//
// The snapshot ships beside the worker as a data module (it could as well come
// from KV or R2); the snapshot key is a text binding holding the engine's
// KEYWARD_SNAPSHOT_KEY (hex) — a secret in production.
// Nothing happens at module load but instantiating the .wasm: workerd forbids
// reading the clock or randomness outside a request.
import { Verifier } from "./pkg/workerd.js";
import snapshot from "./snapshot.bin";

// One verifier per isolate. Its rate, cooldown, daily, concurrency and credit
// counters live in this isolate's memory only: every isolate enforces its own.
let verifier;

function verifierFor(env) {
  // Loaded by the first request: bindings only exist inside handlers.
  verifier ??= Verifier.load(snapshot, env.SNAPSHOT_KEY);
  return verifier;
}

const MESSAGES = {
  MALFORMED: "no valid credential",
  NOT_FOUND: "unknown API key",
  EXPIRED: "API key expired",
  REVOKED: "API key revoked",
  DISABLED: "API key disabled",
  PLAN_INACTIVE: "the workspace plan has no API access",
  IP_DENIED: "client IP not allowed for this key",
  INSUFFICIENT_PERMISSIONS: "API key lacks a required permission",
  TOOL_DISABLED: "tool disabled",
  UNKNOWN_TOOL: "no such tool",
  RATE_LIMITED: "rate limit exceeded",
  COOLDOWN: "called again before the cooldown elapsed",
  DAILY_LIMIT: "daily limit reached",
  CONCURRENCY_LIMIT: "too many jobs in flight",
  USAGE_EXHAUSTED: "no credits left",
};

export default {
  async fetch(request, env) {
    // CF-Connecting-IP is set by Cloudflare's edge; under plain workerd any
    // client can send it, so trusting it is a deployment setting.
    const verdict = verifierFor(env).verifyRequest(request, {
      trustCfConnectingIp: env.TRUST_CF_CONNECTING_IP === "true",
    });
    const headers = new Headers();
    if (verdict.rateLimit) {
      headers.set("RateLimit-Limit", String(verdict.rateLimit.limit));
      headers.set("RateLimit-Remaining", String(verdict.rateLimit.remaining));
      headers.set("RateLimit-Reset", String(Math.ceil(verdict.rateLimit.resetMs / 1000)));
    }
    if (!verdict.valid) {
      if (verdict.retryAfterMs !== null) headers.set("Retry-After", String(Math.ceil(verdict.retryAfterMs / 1000)));
      const error = { code: verdict.code, message: verdict.error ?? MESSAGES[verdict.code] ?? verdict.code };
      return Response.json({ success: false, error }, { status: verdict.status, headers });
    }
    // A real worker would now forward the request to its origin, e.g.
    // `fetch(request, { headers: { ..., "X-Keyward-Key-Id": verdict.keyId } })`.
    const { keyId, workspaceId, permissions, meta, remaining } = verdict;
    return Response.json({ success: true, data: { keyId, workspaceId, permissions, meta, remaining } }, { headers });
  },
};
