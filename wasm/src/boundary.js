// The JavaScript half of keyward-wasm's boundary. The Rust crate imports it
// (`#[wasm_bindgen(module = "/src/boundary.js")]`, see boundary.rs) and
// wasm-bindgen ships it as pkg/snippets/…/src/boundary.js, imported by
// keyward_wasm.js.
//
// Crossing into and out of WebAssembly one property at a time cost more than
// the verification itself (issue: WASM verifier speed). So:
//
// - the readers (`readVerify`, `readRequest`, `readHeaders`) read and
//   type-check the arguments here, in the order and with the messages the
//   Rust readers had, and write what Rust needs into the "wire": a buffer
//   Rust owns, at a fixed address, filled with `TextEncoder.encodeInto`.
//   They return a status number; an error is handed over by `takeError`.
// - `verdict` builds the verdict object from numbers, with the strings of
//   codes, key ids, workspace ids and permissions made once per key
//   (`remember`) and kept in a per-Verifier cache.
//
// Nothing here runs user code after the arguments are read: getters run
// first, then the wire is written, so a getter that calls back into the
// verifier (re-entrancy) finishes before this call writes anything. No
// function lets an exception escape into WebAssembly, where it would skip
// Rust's stack cleanup: the readers catch everything and return ERROR.
//
// Nothing runs at module load but the TextEncoder: no clock, no randomness
// (workerd forbids both outside a request).

/** Read statuses; a negative status -n means "the wire is too small, flush into n bytes". */
const OK = 0;
const ERROR = 1;
/** An error after `ip` was read: Rust parses the ip first, since its error used to come first. */
const DEFERRED = 2;

/** Wire layout (little-endian): f64 now, f64 credits (-1: absent), u32 flags, u32 count, then records. */
const HEAD = 24;
/** A record: u32 tag, u32 byte length, the UTF-8 bytes. */
const RECORD = 8;
const FLAG_TRUST_CF = 1;
const TAG_KEY = 1;
const TAG_IP = 2;
const TAG_TOOL = 3;
const TAG_PERMISSION = 4;
const TAG_URL = 5;
/** Header records are tagged HEADER + the name's index in WANTED. */
const TAG_HEADER = 16;

/** Header names read (lowercase), in the order of boundary.rs's WANTED. */
const WANTED = ["x-api-key", "authorization", "aptoken", "apikey", "signature", "userid", "nonce", "cf-connecting-ip"];
const CF_IP = 7;

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const VERIFY_SHAPE = "verify() takes an object: {key, ip?, tool?, permissions?, cost?, now?}";
const REQUEST_SHAPE = "verifyRequest() takes a Fetch API Request";
const OPTIONS_SHAPE = "verifyRequest() options must be an object: {tool?, ip?, trustCfConnectingIp?, ...}";
const HEADERS_SHAPE =
  "headers must be a Headers object, a plain object of name to value, or an iterable of [name, value] pairs";
const NOW_TYPE = "`now` must be a non-negative number of milliseconds since the epoch";
/** Most bytes the fields of one call may take (1 GiB). */
const MAX_FLUSH = 2 ** 30;
const TOO_LARGE = "keyward-wasm: the arguments are too large";
/** Absent options read as an empty object (whose prototype is Object.prototype, as before). */
const NO_OPTIONS = Object.freeze({});

const encoder = new TextEncoder();

let memory = null;
let wireAt = 0;
let wireCap = 0;
/** Views of memory.buffer, remade when memory grows (which detaches the old buffer). */
let bytes = null;
let data = null;
/** Where the first record's bytes go: a view kept to spare a subarray per call. */
let first = null;
let codes = [];
let statuses = [];
let valid = [];
/** Refusal messages, by the number Rust gave them. */
const messages = [];
/** The error of the last refused read, until Rust takes it. */
let failure;
/** The fields of the last read that did not fit in the wire, until flushed. */
let pending = null;

/** Called once, by the first call that needs it: the module's memory, the wire, and the verdict codes. */
export function attach(mem, at, cap, codeList, statusList, validMask) {
  memory = mem;
  wireAt = at;
  wireCap = cap;
  bytes = null;
  codes = codeList.split(" ");
  statuses = Array.from(statusList);
  valid = codes.map((_, i) => (validMask & (1 << i)) !== 0);
}

/**
 * A per-Verifier cache of the strings of keys that were verified. Workspace
 * ids and permission lists are shared by the keys that have the same.
 */
export function newCache(keys) {
  return { keys: new Array(keys), shared: new Map() };
}

function views() {
  if (bytes === null || bytes.byteLength === 0) {
    const buffer = memory.buffer;
    bytes = new Uint8Array(buffer);
    data = new DataView(buffer);
    first = new Uint8Array(buffer, wireAt + HEAD + RECORD, wireCap - HEAD - RECORD);
  }
}

export function takeError() {
  const e = failure;
  failure = undefined;
  return e;
}

function fail(e) {
  failure = e;
  return ERROR;
}

/** A string field that may be absent (undefined or null). */
function optionalString(value, name) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new TypeError(`\`${name}\` must be a string`);
  return value;
}

/** A non-negative number up to 2^53 - 1; `integer` also refuses fractions. */
function optionalCount(value, integer, message) {
  if (value === undefined || value === null) return -1;
  if (typeof value === "number" && value >= 0 && value <= MAX_SAFE && (!integer || Number.isInteger(value))) {
    return value;
  }
  throw new TypeError(message);
}

/** Runs `f` on each value `list` iterates over; a value without a callable `Symbol.iterator` has none. */
function forEachOf(list, f) {
  const iterator = list[Symbol.iterator];
  if (typeof iterator !== "function") return;
  const it = iterator.call(list);
  if (typeof it !== "object" || it === null || typeof it.next !== "function") return;
  for (;;) {
    const step = it.next();
    if (step.done) return;
    f(step.value);
  }
}

function strings(list, message) {
  const out = [];
  forEachOf(list, (item) => {
    if (typeof item !== "string") throw new TypeError(message);
    out.push(item);
  });
  return out;
}

/** ip, tool, permissions, cost, now: the fields `verify` and `verifyRequest` share. */
class Ask {
  constructor(source, ip) {
    this.ip = ip;
    this.tool = optionalString(source.tool, "tool");
    const permissions = source.permissions;
    if (permissions === undefined || permissions === null) {
      this.permissions = undefined;
    } else if (Array.isArray(permissions)) {
      this.permissions = strings(permissions, "`permissions` must be an array of strings");
    } else {
      throw new TypeError("`permissions` must be an array of strings");
    }
    this.credits = optionalCount(source.cost, true, "`cost` must be a non-negative integer");
    const now = optionalCount(source.now, false, NOW_TYPE);
    // The clock is read here, inside a call: workerd forbids reading it at
    // module load, and keyward-core never reads it at all.
    this.now = now === -1 ? Date.now() : now;
  }
}

/** After `ip` is read, errors wait for Rust to parse the ip, as its error came first. */
function deferred(e, ip) {
  failure = e;
  if (ip === undefined) return ERROR;
  return emit(DEFERRED, 0, -1, 0, undefined, ip, undefined, undefined, undefined, undefined);
}

/** Reads `verify`'s argument into the wire. */
export function readVerify(input) {
  let key;
  let ip;
  try {
    if (typeof input !== "object" || input === null) return fail(new TypeError(VERIFY_SHAPE));
    key = input.key;
    if (typeof key !== "string") return fail(new TypeError("`key` must be a string"));
    ip = optionalString(input.ip, "ip");
  } catch (e) {
    return fail(e);
  }
  let ask;
  try {
    ask = new Ask(input, ip);
  } catch (e) {
    return deferred(e, ip);
  }
  return emit(OK, ask.now, ask.credits, 0, key, ip, ask.tool, ask.permissions, undefined, undefined);
}

/** Reads `verifyRequest`'s arguments into the wire. */
export function readRequest(request, options) {
  let headers;
  let url;
  let source;
  let ip;
  try {
    if (typeof request !== "object" || request === null) return fail(new TypeError(REQUEST_SHAPE));
    headers = credentialHeaders(request.headers);
    url = request.url;
    if (options === undefined || options === null) {
      source = NO_OPTIONS;
    } else if (typeof options === "object") {
      source = options;
    } else {
      return fail(new TypeError(OPTIONS_SHAPE));
    }
    ip = optionalString(source.ip, "ip");
  } catch (e) {
    return fail(e);
  }
  let ask;
  let flags = 0;
  try {
    ask = new Ask(source, ip);
    const trust = ip === undefined ? source.trustCfConnectingIp : undefined;
    if (trust !== undefined && trust !== null && typeof trust !== "boolean") {
      throw new TypeError("`trustCfConnectingIp` must be a boolean");
    }
    if (trust === true) {
      flags = FLAG_TRUST_CF;
      if (headers.fetch !== undefined) {
        const value = headers.fetch.get(WANTED[CF_IP]);
        if (value !== null) headers.list.push(TAG_HEADER + CF_IP, value);
      }
    }
  } catch (e) {
    return deferred(e, ip);
  }
  // The URL names the tool only when the options do not.
  const path = ask.tool === undefined && typeof url === "string" ? url : undefined;
  return emit(OK, ask.now, ask.credits, flags, undefined, ip, ask.tool, ask.permissions, path, headers.list);
}

/** Reads `parseCredentials`'s argument into the wire. */
export function readHeaders(headers) {
  let found;
  try {
    // CF-Connecting-IP is no credential: a Headers object is not asked for it.
    found = credentialHeaders(headers);
  } catch (e) {
    return fail(e);
  }
  return emit(OK, 0, -1, 0, undefined, undefined, undefined, undefined, undefined, found.list);
}

/**
 * The credential headers, as `[tag, value, …]` in `list`. A Fetch `Headers`
 * is asked for each name (it joins repeated values, as its iterator does);
 * its CF-Connecting-IP is left to the caller, in `fetch`, since it is read
 * only when trusted. Other inputs are read whole, in their order.
 */
function credentialHeaders(headers) {
  if (typeof headers !== "object" || headers === null) throw new TypeError(HEADERS_SHAPE);
  const list = [];
  if (typeof Headers === "function" && headers instanceof Headers) {
    for (let i = 0; i < CF_IP; i++) {
      const value = headers.get(WANTED[i]);
      if (value !== null) list.push(TAG_HEADER + i, value);
    }
    return { list, fetch: headers };
  }
  let iterated = false;
  const iterator = headers[Symbol.iterator];
  if (typeof iterator === "function") {
    const it = iterator.call(headers);
    if (typeof it === "object" && it !== null && typeof it.next === "function") {
      iterated = true;
      for (;;) {
        const step = it.next();
        if (step.done) break;
        const item = step.value;
        if (typeof item !== "object" || item === null) throw new TypeError(HEADERS_SHAPE);
        const name = item[0];
        if (typeof name !== "string") throw new TypeError(HEADERS_SHAPE);
        const tag = wanted(name);
        if (tag >= 0) pushValues(list, tag, name, item[1]);
      }
    }
  }
  if (!iterated) {
    for (const name of Reflect.ownKeys(headers)) {
      if (typeof name !== "string") continue;
      const tag = wanted(name);
      if (tag >= 0) pushValues(list, tag, name, headers[name]);
    }
  }
  return { list, fetch: undefined };
}

/** The index in WANTED of a header name, compared ignoring ASCII case only; else -1. */
function wanted(name) {
  for (let i = 0; i < WANTED.length; i++) {
    const w = WANTED[i];
    if (name.length !== w.length) continue;
    let j = 0;
    for (; j < w.length; j++) {
      let c = name.charCodeAt(j);
      if (c >= 65 && c <= 90) c += 32;
      if (c !== w.charCodeAt(j)) break;
    }
    if (j === w.length) return i;
  }
  return -1;
}

function pushValues(list, tag, name, value) {
  if (value === undefined) return;
  if (typeof value === "string") {
    list.push(TAG_HEADER + tag, value);
  } else if (Array.isArray(value)) {
    // Each element is one occurrence, so duplicates are seen as such.
    for (const text of strings(value, `\`${name}\` must be an array of strings`)) list.push(TAG_HEADER + tag, text);
  } else {
    throw new TypeError(`header \`${name}\` must be a string or an array of strings`);
  }
}

/**
 * Writes the fields into the wire and returns `status`; or, when they do not
 * fit, keeps them for `flush` and returns minus the bytes they need.
 */
function emit(status, now, credits, flags, key, ip, tool, permissions, url, headers) {
  views();
  const used = write(wireAt, wireCap, now, credits, flags, key, ip, tool, permissions, url, headers);
  if (used >= 0) return status;
  pending = [status, now, credits, flags, key, ip, tool, permissions, url, headers];
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  let need = HEAD;
  const add = (s) => {
    if (s !== undefined) need += RECORD + 3 * s.length;
  };
  add(key);
  add(ip);
  add(tool);
  add(url);
  if (permissions !== undefined) permissions.forEach(add);
  if (headers !== undefined) for (let i = 1; i < headers.length; i += 2) add(headers[i]);
  // The status is an i32; nothing near this size is a credential anyway.
  if (need > MAX_FLUSH) {
    pending = null;
    return fail(new RangeError(TOO_LARGE));
  }
  return -need;
}

/** Writes the fields kept by the last `emit` that did not fit, at `at`; returns its status. */
export function flush(at, cap) {
  const p = pending;
  pending = null;
  views();
  if (p === null || write(at, cap, p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]) < 0) {
    return fail(new RangeError(TOO_LARGE));
  }
  return p[0];
}

/** Writes the head and records at `at`; returns the bytes used, or -1 when `cap` is too small. */
function write(at, cap, now, credits, flags, key, ip, tool, permissions, url, headers) {
  const end = at + cap;
  let pos = at + HEAD;
  let count = 0;
  if (key !== undefined) {
    pos = record(pos, end, TAG_KEY, key);
    count++;
  }
  if (ip !== undefined) {
    pos = record(pos, end, TAG_IP, ip);
    count++;
  }
  if (tool !== undefined) {
    pos = record(pos, end, TAG_TOOL, tool);
    count++;
  }
  if (permissions !== undefined) {
    for (let i = 0; i < permissions.length; i++) pos = record(pos, end, TAG_PERMISSION, permissions[i]);
    count += permissions.length;
  }
  if (url !== undefined) {
    pos = record(pos, end, TAG_URL, url);
    count++;
  }
  if (headers !== undefined) {
    for (let i = 0; i < headers.length; i += 2) pos = record(pos, end, headers[i], headers[i + 1]);
    count += headers.length / 2;
  }
  if (pos < 0) return -1;
  data.setFloat64(at, now, true);
  data.setFloat64(at + 8, credits, true);
  data.setUint32(at + 16, flags, true);
  data.setUint32(at + 20, count, true);
  return pos - at;
}

/** Strings up to this long are copied by hand when they are ASCII. */
const SHORT = 64;

/** Writes one record at `pos`; returns where the next one goes, or -1 when it does not fit. */
function record(pos, end, tag, text) {
  if (pos < 0) return -1;
  const at = pos + RECORD;
  const n = text.length;
  // UTF-8 is never shorter than the UTF-16 length.
  if (at + n > end) return -1;
  let written = -1;
  if (at === wireAt + HEAD + RECORD && end === wireAt + wireCap) {
    // The first record (the token, usually): a view kept for it.
    const r = encoder.encodeInto(text, first);
    if (r.read === n) written = r.written;
  } else if (n <= SHORT) {
    // A short ASCII string costs less to copy than a view and encodeInto.
    let i = 0;
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c > 0x7f) break;
      bytes[at + i] = c;
    }
    if (i === n) written = n;
  }
  if (written < 0) {
    const r = encoder.encodeInto(text, bytes.subarray(at, end));
    if (r.read < n) return -1;
    written = r.written;
  }
  data.setUint32(pos, tag, true);
  data.setUint32(pos + 4, written, true);
  return at + written;
}

/** Keeps the strings of key `key` in `cache`; `permissions` are space-separated, `meta` JSON text or empty. */
export function remember(cache, key, id, workspace, permissions, meta, expiresAt) {
  let ws = cache.shared.get(workspace);
  if (ws === undefined) {
    ws = workspace;
    cache.shared.set(ws, ws);
  }
  // Permission lists are keyed by their text with a space in front, which
  // no workspace id has. Verdicts get copies.
  let list = cache.shared.get(` ${permissions}`);
  if (list === undefined) {
    list = permissions === "" ? [] : permissions.split(" ");
    cache.shared.set(` ${permissions}`, list);
  }
  cache.keys[key] = {
    id,
    workspace: ws,
    permissions: list,
    meta: meta === "" || !parses(meta) ? null : meta,
    expiresAt: expiresAt < 0 ? null : expiresAt,
  };
}

function parses(text) {
  try {
    JSON.parse(text);
    return true;
  } catch {
    // Metadata that does not parse reads as null.
    return false;
  }
}

/**
 * The verdict for code number `code` (an index into Code::ALL) and key
 * number `key` (-1: none was found; else `remember`ed before), with the
 * quota figures (-1: null).
 */
export function verdict(cache, key, code, remaining, daily, limit, left, reset, retry) {
  const k = key >= 0 ? cache.keys[key] : null;
  return {
    valid: valid[code],
    code: codes[code],
    status: statuses[code],
    keyId: k === null ? null : k.id,
    workspaceId: k === null ? null : k.workspace,
    permissions: k === null ? [] : k.permissions.slice(),
    // A fresh object per verdict, so a caller changing it changes only its own.
    meta: k === null || k.meta === null ? null : JSON.parse(k.meta),
    expiresAt: k === null ? null : k.expiresAt,
    remaining: remaining < 0 ? null : remaining,
    dailyRemaining: daily < 0 ? null : daily,
    rateLimit: limit < 0 ? null : { limit, remaining: left, resetMs: reset },
    retryAfterMs: retry < 0 ? null : retry,
    error: null,
  };
}

export function rememberMessage(message, text) {
  messages[message] = text;
}

/** The verdict for a request refused before any key was looked up, with message number `message`. */
export function malformed(code, message) {
  return malformedWith(code, messages[message]);
}

/** The verdict for a request refused before any key was looked up, with the reason. */
export function malformedWith(code, error) {
  return {
    valid: valid[code],
    code: codes[code],
    status: statuses[code],
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
