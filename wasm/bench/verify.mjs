// Benchmark of the built package under Node (not run in CI):
//
//   bash wasm/build.sh && node wasm/bench/verify.mjs
//
// Measures verify() and verifyRequest() throughput on a 10k-key snapshot
// (calls over all keys in turn, and over one key), and Verifier.load() time
// for 100k- and 1M-key ones. The baselines in the same
// run are plain JavaScript doing the least any hashed-key verifier does,
// without the decision, the limits, the verdict object or the wasm boundary:
// node:crypto SHA-256 of the token, then a Map get (and, beside
// verifyRequest, reading the header from the Request first). Fixtures are
// written by the engine (the fixtures helper) on first run.
//
// KEYWARD_WASM_PKG=<dir> measures the package in <dir> instead of wasm/pkg,
// say an older build, so two builds are compared with this same script.
// KEYWARD_BENCH_LOADS=100000 (comma-separated key counts) limits the load
// section; by default it loads 100k and 1M keys.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const pkg = process.env.KEYWARD_WASM_PKG
  ? pathToFileURL(`${resolve(process.env.KEYWARD_WASM_PKG)}/`)
  : new URL("../pkg/", import.meta.url);
const { Verifier } = await import(new URL("node.js", pkg).href);

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
    tokens: () => readFileSync(`${dir}/bulk-tokens.txt`, "utf8").trim().split("\n"),
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Runs `op(i)` `n` times per round; returns ns/op (median of rounds). */
function measure(n, op, rounds = 5) {
  // A whole round to warm up: V8 first runs WebAssembly from its baseline
  // compiler and swaps in optimized code as functions get hot.
  for (let i = 0; i < n; i++) op(i);
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
  console.log(`${name.padEnd(70)} ${nsPerOp.toFixed(0).padStart(7)} ns/op ${ops.padStart(12)} ops/s`);
}

console.log(`node ${process.version}, ${process.arch}; package ${fileURLToPath(pkg)}\n`);

// --- throughput, 10k keys ---------------------------------------------------
const small = fixture(10_000);
const v = Verifier.load(small.snapshot, small.key);
const now = small.cases.createdAt;
const N = 200_000;
const toks = small.tokens();
const k = toks.length;
let sink = 0;
console.log(`verify, ${v.stats().keys} keys (each with a 1000/s rate limit), ${N} calls per round`);
const sha256 = (tok) => createHash("sha256").update(tok).digest("hex");
const hashes = new Map(toks.map((tok, i) => [sha256(tok), i]));
row("baseline: JS sha256 + Map.get", measure(N, (i) => {
  sink += hashes.get(sha256(toks[i % k]));
}));
// Each round is N calls at the same `now` over k keys: N/k per key per
// "second", well under the limit, so every call is VALID and charged.
let t = now;
row("verify({key, now}) -> VALID", measure(N, (i) => {
  if (i === 0) t += 1_000;
  sink += v.verify({ key: toks[i % k], now: t }).status;
}));
row("verify({key}) -> VALID (now = Date.now())", measure(N, (i) => {
  sink += v.verify({ key: toks[i % k] }).status;
}));
row("verify({key, ip, permissions, now}) -> VALID", measure(N, (i) => {
  if (i === 0) t += 1_000;
  sink += v.verify({ key: toks[i % k], ip: "10.1.2.3", permissions: ["tools:x"], now: t }).status;
}));
row("verify({key, now}) -> VALID, then read every field", measure(N, (i) => {
  if (i === 0) t += 1_000;
  const r = v.verify({ key: toks[i % k], now: t });
  sink += r.status + r.keyId.length + r.workspaceId.length + r.permissions.length + (r.meta === null) + r.rateLimit.remaining;
}));
row("verify({key: unknown token}) -> NOT_FOUND", measure(N, () => {
  sink += v.verify({ key: small.cases.tokens.unknown, now }).status;
}));
row("verify({key: 'kw_live_x'}) -> MALFORMED", measure(N, () => {
  sink += v.verify({ key: "kw_live_x", now }).status;
}));

// Most traffic is a few keys called over and over: their data stays in the
// CPU's caches, where a call over 10k keys in turn mostly misses. `now`
// moves 2 ms a call, so the key's 1000/s limit always has room.
const hot = toks[k - 1];
console.log(`\nverify, one key called over and over, ${N} calls per round`);
row("baseline: JS sha256 + Map.get", measure(N, () => {
  sink += hashes.get(sha256(hot));
}));
let h = now + 1e9;
row("verify({key, now}) -> VALID", measure(N, () => {
  h += 2;
  sink += v.verify({ key: hot, now: h }).status;
}));

const R = 1_000;
const request = (path, tok) =>
  new Request(`https://edge.example${path}`, {
    headers: { Authorization: `Bearer ${tok}`, "CF-Connecting-IP": "10.1.2.3", Accept: "*/*", "User-Agent": "bench" },
  });
const plain = toks.slice(0, R).map((tok) => request("/v1/things", tok));
const gateway = toks.slice(0, R).map((tok) => request("/api/v2/gl_ping", tok));
console.log(`\nverifyRequest, the same keys, ${R} distinct Requests (4 headers each), ${N} calls per round`);
row("baseline: headers.get + JS sha256 + Map.get", measure(N, (i) => {
  sink += hashes.get(sha256(plain[i % R].headers.get("authorization").slice(7)));
}));
row("verifyRequest(Request, {trustCfConnectingIp, now}) -> VALID", measure(N, (i) => {
  if (i === 0) t += 1_000;
  sink += v.verifyRequest(plain[i % R], { trustCfConnectingIp: true, now: t }).status;
}));
row("verifyRequest(Request) -> VALID (no options)", measure(N, (i) => {
  sink += v.verifyRequest(plain[i % R]).status;
}));
// The bulk workspace has no tools, so /api/v2/gl_ping names an unknown one.
row("verifyRequest(/api/v2/gl_ping, {trustCfConnectingIp, now}) -> UNKNOWN_TOOL", measure(N, (i) => {
  if (i === 0) t += 1_000;
  sink += v.verifyRequest(gateway[i % R], { trustCfConnectingIp: true, now: t }).status;
}));

// --- load time, 100k and 1M keys --------------------------------------------
const loadSizes = (process.env.KEYWARD_BENCH_LOADS ?? "100000,1000000").split(",").map(Number);
for (const bulk of loadSizes) {
  const big = fixture(bulk);
  const rounds = bulk >= 1_000_000 ? 3 : 5;
  console.log(`\nVerifier.load, ${big.cases.keyCount} keys, snapshot ${(big.snapshot.length / 1e6).toFixed(2)} MB`);
  const loads = [];
  let loaded;
  for (let r = 0; r < rounds; r++) {
    loaded?.free();
    loaded = undefined;
    const start = process.hrtime.bigint();
    loaded = Verifier.load(big.snapshot, big.key);
    loads.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  const ms = median(loads);
  console.log(
    `load (authenticate + decode + index): median ${ms.toFixed(1)} ms, min ${Math.min(...loads).toFixed(1)} ms over ${loads.length}` +
      ` (${((ms * 1e6) / big.cases.keyCount).toFixed(0)} ns/key)`,
  );
  const last = big.tokens().at(-1);
  const t0 = process.hrtime.bigint();
  const code = loaded.verify({ key: last, now: big.cases.createdAt }).code;
  console.log(`first verify after load: ${code} in ${(Number(process.hrtime.bigint() - t0) / 1e3).toFixed(0)} µs`);
  console.log(`rss after loads: ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
  loaded.free();
}
if (sink === 0.5) console.log(sink);
