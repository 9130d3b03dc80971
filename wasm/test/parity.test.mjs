// Parity with the native engine. The fixture generator ran each case of
// parity.json through `Engine::verify` (clock set to the case's `now`), in
// order, as the engine's first verifications after exporting the snapshot,
// and wrote down its verdict. Here a fresh Verifier loaded from that snapshot
// gets the same cases in the same order, so both sides start with empty
// counters and charge them identically; every verdict field must match.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { isDeepStrictEqual } from "node:util";

import { cases, dir, fresh } from "./fixture.mjs";

const parity = JSON.parse(readFileSync(`${dir}/parity.json`, "utf8"));

/** Every code a verification against a snapshot can give (not the signed-scheme ones). */
const SNAPSHOT_CODES = [
  "VALID",
  "MALFORMED",
  "NOT_FOUND",
  "EXPIRED",
  "REVOKED",
  "DISABLED",
  "PLAN_INACTIVE",
  "IP_DENIED",
  "INSUFFICIENT_PERMISSIONS",
  "TOOL_DISABLED",
  "UNKNOWN_TOOL",
  "RATE_LIMITED",
  "COOLDOWN",
  "DAILY_LIMIT",
  "CONCURRENCY_LIMIT",
  "USAGE_EXHAUSTED",
];

test("parity.json belongs to this snapshot and covers every code", () => {
  assert.equal(parity.keyCount, cases.keyCount);
  assert.equal(parity.createdAt, cases.createdAt);
  assert.deepEqual(fresh().stats().createdAt, parity.createdAt);
  assert.deepEqual([...parity.codes].sort(), [...SNAPSHOT_CODES].sort());
  const seen = new Set(parity.cases.map((c) => c.engine.code));
  assert.deepEqual([...seen].sort(), [...SNAPSHOT_CODES].sort());
  assert.ok(parity.cases.length >= 90, `${parity.cases.length} cases`);
  // The inputs reach the parts that differ most easily between two builds.
  assert.ok(parity.cases.some((c) => c.ip?.startsWith("::ffff:")), "an IPv4-mapped IPv6 address");
  assert.ok(parity.cases.some((c) => c.cost === 0), "a check-only call");
  assert.ok(parity.cases.some((c) => c.engine.retryAfterMs !== null), "a retry-after");
  assert.ok(parity.cases.some((c) => c.engine.rateLimit !== null), "rate-limit figures");
});

test("the WASM verifier gives the engine's verdict for every case, in order", () => {
  const v = fresh();
  const mismatches = [];
  parity.cases.forEach(({ label, engine, ...input }, i) => {
    const { error, ...verdict } = v.verify(input);
    // `error` is the WASM side's explanation of a MALFORMED refusal; the
    // engine's verdict has only the code.
    assert.equal(error !== null, verdict.code === "MALFORMED", `#${i} ${label}: error ${error}`);
    if (!isDeepStrictEqual(verdict, engine)) {
      mismatches.push(`#${i} ${label} ${JSON.stringify(input)}\n  wasm:   ${JSON.stringify(verdict)}\n  engine: ${JSON.stringify(engine)}`);
    }
  });
  assert.equal(mismatches.length, 0, `${mismatches.length} of ${parity.cases.length} verdicts differ:\n${mismatches.join("\n")}`);
});
