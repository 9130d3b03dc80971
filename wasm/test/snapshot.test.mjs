import assert from "node:assert/strict";
import { test } from "node:test";

import { Verifier } from "../pkg/node.js";
import { cases, snapshot, snapshotKey } from "./fixture.mjs";

function loadError(bytes, key = snapshotKey) {
  try {
    Verifier.load(bytes, key);
  } catch (e) {
    return e;
  }
  assert.fail("the snapshot was accepted");
}

test("loads and reports what the snapshot holds", () => {
  const v = Verifier.load(snapshot, snapshotKey);
  assert.deepEqual(v.stats(), { keys: cases.keyCount, workspaces: 4, tools: 5, version: 1, createdAt: cases.createdAt });
  assert.equal(cases.keyCount, 17);
  v.free();
});

test("accepts an ArrayBuffer and a Node Buffer", () => {
  const buffer = snapshot.buffer.slice(snapshot.byteOffset, snapshot.byteOffset + snapshot.byteLength);
  assert.equal(Verifier.load(buffer, snapshotKey.buffer).stats().keys, 17);
  assert.equal(Verifier.load(Buffer.from(snapshot), Buffer.from(cases.snapshotKey, "hex")).stats().keys, 17);
});

test("takes the key as hex text, as KEYWARD_SNAPSHOT_KEY holds it", () => {
  assert.equal(cases.snapshotKey.length, 64);
  assert.equal(Verifier.load(snapshot, cases.snapshotKey).stats().keys, 17);
  assert.equal(Verifier.load(snapshot, ` ${cases.snapshotKey.toUpperCase()}\n`).stats().keys, 17);
  assert.equal(loadError(snapshot, cases.snapshotKey.slice(0, 30)).message, "snapshot key must be at least 16 bytes");
  const flipped = (cases.snapshotKey[0] === "0" ? "1" : "0") + cases.snapshotKey.slice(1);
  assert.equal(loadError(snapshot, flipped).message, "snapshot authentication failed: it was modified or the key is wrong");
  for (const bad of [cases.snapshotKey.slice(1), "zz" + cases.snapshotKey, "6b 65"]) {
    const e = loadError(snapshot, bad);
    assert.ok(e instanceof TypeError);
    assert.equal(e.message, "`snapshotKey` as a string must be hex (as in KEYWARD_SNAPSHOT_KEY)");
  }
});

test("refuses a tampered snapshot", () => {
  const flipped = snapshot.slice();
  flipped[40] ^= 1;
  const e = loadError(flipped);
  assert.ok(e instanceof Error);
  assert.equal(e.message, "snapshot authentication failed: it was modified or the key is wrong");
  const longer = new Uint8Array(snapshot.length + 1);
  longer.set(snapshot);
  assert.equal(loadError(longer).message, "snapshot authentication failed: it was modified or the key is wrong");
});

test("refuses the wrong key, and a weak one", () => {
  const wrong = new TextEncoder().encode("another-snapshot-key-of-32-bytes");
  assert.equal(loadError(snapshot, wrong).message, "snapshot authentication failed: it was modified or the key is wrong");
  assert.equal(loadError(snapshot, new Uint8Array(15)).message, "snapshot key must be at least 16 bytes");
});

test("refuses a truncated snapshot, saying how much is missing", () => {
  const n = snapshot.length;
  assert.equal(loadError(snapshot.subarray(0, n - 1)).message, `snapshot is truncated: expected ${n} bytes, got ${n - 1}`);
  assert.equal(loadError(snapshot.subarray(0, 100)).message, `snapshot is truncated: expected ${n} bytes, got 100`);
  assert.equal(loadError(snapshot.subarray(0, 10)).message, "snapshot is truncated: expected 48 bytes, got 10");
  assert.equal(loadError(new Uint8Array()).message, "snapshot is truncated: expected 48 bytes, got 0");
});

test("refuses another format version and other files", () => {
  const v2 = snapshot.slice();
  v2[6] = 2;
  assert.equal(
    loadError(v2).message,
    "snapshot format version 2 is not supported (this build reads version 1)",
  );
  assert.equal(loadError(new TextEncoder().encode("PK\x03\x04 a zip file")).message, "not a keyward snapshot (bad magic)");
});

test("refuses arguments that are not bytes", () => {
  for (const bad of ["KWSNAP", [1, 2, 3], null, undefined, 42, {}]) {
    const e = loadError(bad);
    assert.ok(e instanceof TypeError, String(bad));
    assert.equal(e.message, "`snapshot` must be a Uint8Array or an ArrayBuffer");
  }
  for (const bad of [null, 42, [1, 2], {}]) {
    const e = loadError(snapshot, bad);
    assert.ok(e instanceof TypeError);
    assert.equal(e.message, "`snapshotKey` must be a Uint8Array, an ArrayBuffer or a hex string");
  }
});
