// The fixture written by `cargo run -p keyward-wasm-fixtures -- wasm/fixtures/out`
// (or the directory in KEYWARD_WASM_FIXTURES), loaded once per test file: a
// snapshot exported by the keyward engine, with the tokens and ids of the keys
// it created (fresh on every run) and its verdicts for the parity cases.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Verifier } from "../pkg/node.js";

export const dir = process.env.KEYWARD_WASM_FIXTURES ?? fileURLToPath(new URL("../fixtures/out/", import.meta.url));

/** tokens, keyIds, workspaceIds, snapshotKey (hex), createdAt, expiresAt, farFuture, validMeta. */
export const cases = JSON.parse(readFileSync(`${dir}/cases.json`, "utf8"));
export const snapshot = new Uint8Array(readFileSync(`${dir}/snapshot.bin`));
export const snapshotKey = new Uint8Array(Buffer.from(cases.snapshotKey, "hex"));

/** 2026-01-01T00:00:00Z, the snapshot's creation time. */
export const T0 = cases.createdAt;
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

/** A verifier with fresh counters (a new isolate, as far as limits go). */
export function fresh() {
  return Verifier.load(snapshot, snapshotKey);
}

/** The verdict every refused-before-lookup request gets, with its reason. */
export function malformed(error) {
  return {
    valid: false,
    code: "MALFORMED",
    status: 401,
    keyId: null,
    workspaceId: null,
    permissions: [],
    meta: null,
    expiresAt: null,
    remaining: null,
    dailyRemaining: null,
    rateLimit: null,
    retryAfterMs: null,
    error,
  };
}
