// Benchmark of the built package under Node (not run in CI):
//
//   bash wasm/build.sh && node wasm/bench/verify.mjs
//
// Measures verify() and verifyRequest() throughput on a 10k-key snapshot and
// Verifier.load() time for a 100k-key one. The baseline in the same run is a
// plain-JS lookup (node:crypto SHA-256 of the token, then a Map get): the
// least work any hashed-key verifier does, without the decision or the
// wasm boundary. Fixtures are written with the fixtures helper on first run.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Verifier } from "../pkg/node.js";

const root = fileURLToPath(new URL("../../", import.meta.url));

function fixture(bulk) {
  const dir = fileURLToPath(new URL(`../fixtures/out/bench-${bulk}/`, import.meta.url));
  if (!existsSync(`${dir}/bulk-tokens.txt`)) {
    execFileSync("cargo", ["run", "--release", "-q", "-p", "keyward-wasm-fixtures", "--", "--bulk", String(bulk), dir], {
      cwd: root,
      stdio: "inherit",
    });
  }
  const cases = JSON.parse(readFileSync(`${dir}/cases.json`, "utf8"));
  return {
    cases,
    snapshot: new Uint8Array(readFileSync(`${dir}/snapshot.bin`)),
    key: cases.snapshotKey,
    tokens: readFileSync(`${dir}/bulk-tokens.txt`, "utf8").trim().split("\n"),
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Runs `op(i)` `n` times per round; returns ns/op (median of rounds). */
function measure(n, op, rounds = 5) {
  for (let i = 0; i < Math.min(n, 20_000); i++) op(i); // warm up
  const perOp = [];
  for (let r = 0; r < rounds; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) op(i);
    perOp.push(Number(process.hrtime.bigint() - t) / n);
  }
  return median(perOp);
}

function row(name, nsPerOp) {
  const ops = Math.round(1e9 / nsPerOp).toLocaleString("en-US");
  console.log(`${name.padEnd(66)} ${nsPerOp.toFixed(0).padStart(7)} ns/op ${ops.padStart(12)} ops/s`);
}

console.log(`node ${process.version}, ${process.arch}\n`);

// --- throughput, 10k keys ---------------------------------------------------
const small = fixture(10_000);
const v = Verifier.load(small.snapshot, small.key);
const now = small.cases.createdAt;
const N = 200_000;
const toks = small.tokens;
const k = toks.length;
let sink = 0;
console.log(`verify, ${v.stats().keys} keys (each with a 1000/s rate limit), ${N} calls per round`);
const hashes = new Map(toks.map((t, i) => [createHash("sha256").update(t).digest("hex"), i]));
row("baseline: JS sha256 + Map.get", measure(N, (i) => {
  sink += hashes.get(createHash("sha256").update(toks[i % k]).digest("hex"));
}));
// Each round is N calls at the same `now` over k keys: N/k per key per
// "second", well under the limit, so every call is VALID and charged.
let t = now;
row("verify({key, now}) -> VALID", measure(N, (i) => {
  if (i === 0) t += 1_000;
  sink += v.verify({ key: toks[i % k], now: t }).status;
}));
row("verify({key, ip, permissions, now}) -> VALID", measure(N, (i) => {
  if (i === 0) t += 1_000;
  sink += v.verify({ key: toks[i % k], ip: "10.1.2.3", permissions: ["tools:x"], now: t }).status;
}));
row("verify({key: unknown token}) -> NOT_FOUND", measure(N, () => {
  sink += v.verify({ key: small.cases.tokens.unknown, now }).status;
}));
row("verify({key: 'kw_live_x'}) -> MALFORMED", measure(N, () => {
  sink += v.verify({ key: "kw_live_x", now }).status;
}));
const requests = toks.slice(0, 1_000).map(
  (tok) => new Request("https://edge.example/api/v2/gl_ping", { headers: { Authorization: `Bearer ${tok}`, "CF-Connecting-IP": "10.1.2.3", Accept: "*/*" } }),
);
row("verifyRequest(Request, {trustCfConnectingIp, now}) -> UNKNOWN_TOOL", measure(N, (i) => {
  if (i === 0) t += 1_000;
  sink += v.verifyRequest(requests[i % requests.length], { trustCfConnectingIp: true, now: t }).status;
}));

// --- load time, 100k keys ---------------------------------------------------
const big = fixture(100_000);
console.log(`\nVerifier.load, ${big.cases.keyCount} keys, snapshot ${(big.snapshot.length / 1e6).toFixed(2)} MB`);
const loads = [];
let loaded;
for (let r = 0; r < 5; r++) {
  loaded?.free();
  const start = process.hrtime.bigint();
  loaded = Verifier.load(big.snapshot, big.key);
  loads.push(Number(process.hrtime.bigint() - start) / 1e6);
}
console.log(`load (authenticate + decode + index): median ${median(loads).toFixed(1)} ms, min ${Math.min(...loads).toFixed(1)} ms over ${loads.length}`);
console.log(`first verify after load: ${loaded.verify({ key: big.tokens[99_999], now: big.cases.createdAt }).code}`);
console.log(`rss after loads: ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
if (sink === 0.5) console.log(sink);
