//! The Rust half of the boundary with JavaScript; `boundary.js` is the other.
//!
//! A call used to cross into JavaScript once per property read and once per
//! property of the verdict, and those crossings cost several times the
//! verification itself. Now JavaScript reads and type-checks the arguments
//! and writes what Rust needs into the *wire*, a buffer this module owns at a
//! fixed address; Rust decides, and hands the answer back as numbers to one
//! JavaScript function that builds the verdict object, with the strings of
//! each key made once and cached on the JavaScript side.
//!
//! The wire (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | `now`, f64 ms (the caller's, else `Date.now()`) |
//! | 8 | `cost` in credits, f64; negative when not given |
//! | 4 | flags: bit 0 `trustCfConnectingIp` |
//! | 4 | number of records |
//! | … | records: u32 tag, u32 length, that many bytes of UTF-8 |
//!
//! JavaScript writes the wire only inside a `read*` call, after every getter
//! of the arguments has run; Rust borrows it only from that call's return
//! until the decision is made, and calls no JavaScript meanwhile. So a getter
//! that calls back into the verifier (re-entrancy) is over before its caller
//! writes. Inputs too big for the wire (over 4 KiB) go to a buffer allocated
//! for the call instead (`flush`).

use core::cell::{Cell, RefCell};
use core::net::IpAddr;

use keyward_core::{Code, UnixMillis};
use wasm_bindgen::prelude::*;

use crate::outcome::{Ask, Outcome};

#[wasm_bindgen(module = "/src/boundary.js")]
extern "C" {
    fn attach(memory: &JsValue, wire: u32, cap: u32, codes: &str, statuses: &[u16], valid: u32);
    #[wasm_bindgen(js_name = newCache)]
    fn new_cache(keys: u32) -> JsValue;
    #[wasm_bindgen(js_name = readVerify)]
    fn read_verify(input: &JsValue) -> i32;
    #[wasm_bindgen(js_name = readRequest)]
    fn read_request(request: &JsValue, options: &JsValue) -> i32;
    #[wasm_bindgen(js_name = readHeaders)]
    fn read_headers(headers: &JsValue) -> i32;
    fn flush(at: u32, cap: u32) -> i32;
    #[wasm_bindgen(js_name = takeError)]
    fn take_error() -> JsValue;
    // Returns a plain `JsValue`, which comes back as a raw externref: an
    // `Option` would have the glue add the object to the externref table from
    // JavaScript (a call into WebAssembly and a `Table.set` per verdict).
    #[wasm_bindgen(js_name = verdict)]
    #[allow(clippy::too_many_arguments)]
    fn js_verdict(
        cache: &JsValue,
        key: i32,
        code: u32,
        remaining: f64,
        daily: f64,
        limit: f64,
        left: f64,
        reset: f64,
        retry: f64,
    ) -> JsValue;
    #[wasm_bindgen(js_name = remember)]
    fn js_remember(
        cache: &JsValue,
        key: u32,
        id: &str,
        workspace: &str,
        permissions: &str,
        meta: &str,
        expires_at: f64,
    );
    #[wasm_bindgen(js_name = malformed)]
    fn js_malformed(code: u32, message: u32) -> JsValue;
    #[wasm_bindgen(js_name = rememberMessage)]
    fn js_remember_message(message: u32, text: &str);
    #[wasm_bindgen(js_name = malformedWith)]
    fn js_malformed_with(code: u32, text: &str) -> JsValue;
}

/// Read statuses (boundary.js); a negative one is minus the bytes to flush into.
const OK: i32 = 0;
const ERROR: i32 = 1;
const DEFERRED: i32 = 2;

const WIRE_BYTES: usize = 4096;
const HEAD: usize = 24;
const FLAG_TRUST_CF: u32 = 1;
const TAG_KEY: u32 = 1;
const TAG_IP: u32 = 2;
const TAG_TOOL: u32 = 3;
const TAG_PERMISSION: u32 = 4;
const TAG_URL: u32 = 5;
const TAG_HEADER: u32 = 16;

/// Header names read, in the order of boundary.js's `WANTED`; every other
/// header is skipped unread. The last is the client IP, not a credential.
const WANTED: [&str; 8] =
    ["x-api-key", "authorization", "aptoken", "apikey", "signature", "userid", "nonce", "cf-connecting-ip"];
const CF_IP: usize = 7;

/// At most this many refusal messages are cached as JavaScript strings.
/// Today's are all fixed texts (a dozen or so); the bound keeps a future one
/// that quotes its input from growing the cache.
const MAX_MESSAGES: usize = 64;

thread_local! {
    // Allocated once and never resized: JavaScript keeps its address.
    static WIRE: RefCell<Box<[u8]>> = RefCell::new(vec![0; WIRE_BYTES].into_boxed_slice());
    static ATTACHED: Cell<bool> = const { Cell::new(false) };
    /// The messages boundary.js holds, by number.
    static MESSAGES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Hands boundary.js the memory, the wire and the codes, once per instance.
/// Called by the first call that needs them, never at module load.
pub(crate) fn attach_once() {
    if ATTACHED.with(Cell::get) {
        return;
    }
    let at = WIRE.with(|w| w.borrow_mut().as_mut_ptr() as usize as u32);
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    let statuses = Code::ALL.map(|c| c.http_status());
    let valid = Code::ALL.iter().enumerate().filter(|(_, c)| c.is_valid()).fold(0u32, |m, (i, _)| m | 1 << i);
    attach(&wasm_bindgen::memory(), at, WIRE_BYTES as u32, &codes.join(" "), &statuses, valid);
    ATTACHED.with(|a| a.set(true));
}

/// A cache for a verifier of `keys` keys.
pub(crate) fn cache(keys: usize) -> JsValue {
    new_cache(u32::try_from(keys).unwrap_or(u32::MAX))
}

/// What a reader wrote.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    now: f64,
    credits: f64,
    trust_cf: bool,
    pub(crate) key: &'a str,
    ip: Option<&'a str>,
    tool: Option<&'a str>,
    permissions: Vec<&'a str>,
    url: Option<&'a str>,
    /// Credential headers and CF-Connecting-IP, as (lowercase name, value), in order.
    pub(crate) headers: Vec<(&'static str, &'a str)>,
}

/// An error that only a bug in this crate can cause.
pub(crate) fn internal() -> JsValue {
    crate::js::error("keyward-wasm: malformed boundary record (a bug)")
}

fn parse(wire: &[u8]) -> Option<Fields<'_>> {
    let f64_at = |at: usize| Some(f64::from_le_bytes(wire.get(at..at + 8)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(wire.get(at..at + 4)?.try_into().ok()?));
    let mut f = Fields {
        now: f64_at(0)?,
        credits: f64_at(8)?,
        trust_cf: u32_at(16)? & FLAG_TRUST_CF != 0,
        ..Fields::default()
    };
    let mut pos = HEAD;
    for _ in 0..u32_at(20)? {
        let tag = u32_at(pos)?;
        let len = u32_at(pos + 4)? as usize;
        let start = pos + 8;
        let text = core::str::from_utf8(wire.get(start..start.checked_add(len)?)?).ok()?;
        pos = start + len;
        match tag {
            TAG_KEY => f.key = text,
            TAG_IP => f.ip = Some(text),
            TAG_TOOL => f.tool = Some(text),
            TAG_PERMISSION => f.permissions.push(text),
            TAG_URL => f.url = Some(text),
            _ => f.headers.push((WANTED.get(tag.checked_sub(TAG_HEADER)? as usize)?, text)),
        }
    }
    Some(f)
}

/// Runs `decide` on what a reader wrote, once its status says it wrote it;
/// else returns the reader's error.
fn with_fields<R>(status: i32, decide: impl FnOnce(&Fields<'_>) -> Result<R, JsValue>) -> Result<R, JsValue> {
    let run = |wire: &[u8], status: i32| {
        let fields = parse(wire).ok_or_else(internal)?;
        if status == DEFERRED {
            // The reader failed after `ip`, whose parse error used to come first.
            let error = take_error();
            fields.ip.map(parse_ip).transpose()?;
            return Err(error);
        }
        decide(&fields)
    };
    match status {
        OK | DEFERRED => WIRE.with(|w| run(&w.try_borrow().map_err(|_| internal())?, status)),
        ERROR => Err(take_error()),
        need if need < 0 => {
            let mut buf = vec![0u8; need.unsigned_abs() as usize];
            let status = flush(buf.as_mut_ptr() as usize as u32, buf.len() as u32);
            run(&buf, status)
        }
        _ => Err(internal()),
    }
}

/// Reads `verify`'s argument and runs `decide` on the key and the request.
pub(crate) fn verify_input<R>(
    input: &JsValue,
    decide: impl FnOnce(&str, &Ask<'_>) -> Result<R, JsValue>,
) -> Result<R, JsValue> {
    attach_once();
    with_fields(read_verify(input), |f| decide(f.key, &ask(f, None)?))
}

/// Reads `verifyRequest`'s arguments and runs `decide` on the headers and
/// the request. The tool is the options', else the one a `/api/v2/{tool}`
/// URL names; the IP the options', else `CF-Connecting-IP` when trusted.
pub(crate) fn request_input<R>(
    request: &JsValue,
    options: &JsValue,
    decide: impl FnOnce(&Fields<'_>, &Ask<'_>) -> Result<R, JsValue>,
) -> Result<R, JsValue> {
    attach_once();
    with_fields(read_request(request, options), |f| {
        let mut cf = None;
        if f.ip.is_none() && f.trust_cf {
            // Only a single, well-formed value counts; anything else is an
            // unknown client, which fails closed wherever IP rules exist.
            let mut values = f.headers.iter().filter(|(n, _)| *n == WANTED[CF_IP]);
            if let (Some((_, v)), None) = (values.next(), values.next()) {
                cf = v.trim().parse().ok();
            }
        }
        let mut ask = ask(f, cf)?;
        if ask.tool.is_none() {
            match f.url.map(crate::outcome::tool_from_url) {
                Some(Ok(tool)) => ask.tool = tool.map(Into::into),
                Some(Err(e)) => ask.path_error = Some(e),
                None => {}
            }
        }
        decide(f, &ask)
    })
}

/// Reads `parseCredentials`'s argument and runs `decide` on the headers.
pub(crate) fn headers_input<R>(
    headers: &JsValue,
    decide: impl FnOnce(&Fields<'_>) -> Result<R, JsValue>,
) -> Result<R, JsValue> {
    attach_once();
    with_fields(read_headers(headers), decide)
}

fn ask<'a>(f: &Fields<'a>, fallback_ip: Option<IpAddr>) -> Result<Ask<'a>, JsValue> {
    let ip = match f.ip {
        Some(text) => Some(parse_ip(text)?),
        None => fallback_ip,
    };
    Ok(Ask {
        ip,
        tool: f.tool.map(Into::into),
        permissions: f.permissions.clone(),
        // Both were checked to be integers (`now` may have a fraction, dropped
        // here as before) in 0..=2^53-1 by the reader.
        credits: if f.credits < 0.0 { 1 } else { f.credits as u64 },
        now: UnixMillis(f.now as u64),
        path_error: None,
    })
}

fn parse_ip(text: &str) -> Result<IpAddr, JsValue> {
    text.parse().map_err(|_| {
        let shown: String = text.chars().take(64).collect();
        crate::js::error(&format!("`ip` is not an IPv4 or IPv6 address: {shown:?}"))
    })
}

fn code_number(code: Code) -> u32 {
    Code::ALL.iter().position(|c| *c == code).unwrap_or(0) as u32
}

fn figure(n: Option<u64>) -> f64 {
    n.map_or(-1.0, |n| n as f64)
}

/// The key's strings, handed over once per key.
pub(crate) struct KeyStrings {
    pub(crate) id: String,
    pub(crate) workspace: String,
    /// Space-separated (a permission has no spaces).
    pub(crate) permissions: String,
    /// JSON text, or empty.
    pub(crate) meta: String,
    pub(crate) expires_at: Option<u64>,
}

/// The verdict of a refusal before lookup, with its message made into a
/// JavaScript string once.
fn malformed(code: u32, text: &str) -> JsValue {
    let known = MESSAGES.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(i) = m.iter().position(|t| t == text) {
            return Some((i, false));
        }
        (m.len() < MAX_MESSAGES).then(|| {
            m.push(text.to_owned());
            (m.len() - 1, true)
        })
    });
    match known {
        Some((i, new)) => {
            if new {
                js_remember_message(i as u32, text);
            }
            js_malformed(code, i as u32)
        }
        None => js_malformed_with(code, text),
    }
}

/// The keys whose strings the JavaScript cache holds, one bit each.
pub(crate) struct Sent(Vec<Cell<u64>>);

impl Sent {
    pub(crate) fn new(keys: usize) -> Self {
        Self((0..keys.div_ceil(64)).map(|_| Cell::new(0)).collect())
    }

    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w.get() & (1 << (i % 64)) != 0)
    }

    fn insert(&self, i: usize) {
        if let Some(w) = self.0.get(i / 64) {
            w.set(w.get() | 1 << (i % 64));
        }
    }
}

/// The verdict object of the TypeScript `Verdict` interface. `strings` gives
/// a found key's strings for the cache, the first time they are needed.
pub(crate) fn verdict(
    cache: &JsValue,
    sent: &Sent,
    o: &Outcome,
    strings: impl FnOnce(usize) -> Result<KeyStrings, JsValue>,
) -> Result<JsValue, JsValue> {
    let code = code_number(o.code);
    if let Some(error) = &o.error {
        return Ok(malformed(code, error));
    }
    let mut key = -1;
    if let Some(index) = o.key {
        key = i32::try_from(index).map_err(|_| internal())?;
        if !sent.contains(index) {
            let s = strings(index)?;
            js_remember(cache, key as u32, &s.id, &s.workspace, &s.permissions, &s.meta, figure(s.expires_at));
            sent.insert(index);
        }
    }
    let rate = o.quota.rate.as_ref();
    Ok(js_verdict(
        cache,
        key,
        code,
        figure(o.quota.credits_remaining),
        figure(o.quota.daily_remaining),
        figure(rate.map(|r| r.limit)),
        figure(rate.map(|r| r.remaining)),
        figure(rate.map(|r| r.reset_ms)),
        figure(o.retry_after_ms),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(now: f64, credits: f64, flags: u32, records: &[(u32, &str)]) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(&now.to_le_bytes());
        w.extend_from_slice(&credits.to_le_bytes());
        w.extend_from_slice(&flags.to_le_bytes());
        w.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for (tag, text) in records {
            w.extend_from_slice(&tag.to_le_bytes());
            w.extend_from_slice(&(text.len() as u32).to_le_bytes());
            w.extend_from_slice(text.as_bytes());
        }
        w
    }

    #[test]
    fn parses_records() {
        let w = wire(
            1.5,
            -1.0,
            FLAG_TRUST_CF,
            &[
                (TAG_KEY, "kw_live_x"),
                (TAG_IP, "10.0.0.1"),
                (TAG_TOOL, "gl_ping"),
                (TAG_PERMISSION, "a:b"),
                (TAG_PERMISSION, "c"),
                (TAG_URL, "https://h/"),
                (TAG_HEADER + 1, "Bearer t"),
                (TAG_HEADER + 7, "10.1.2.3"),
            ],
        );
        let f = parse(&w).unwrap();
        assert_eq!((f.now, f.credits, f.trust_cf), (1.5, -1.0, true));
        assert_eq!((f.key, f.ip, f.tool, f.url), ("kw_live_x", Some("10.0.0.1"), Some("gl_ping"), Some("https://h/")));
        assert_eq!(f.permissions, ["a:b", "c"]);
        assert_eq!(f.headers, [("authorization", "Bearer t"), ("cf-connecting-ip", "10.1.2.3")]);
        let a = ask(&f, None).unwrap();
        assert_eq!((a.credits, a.now), (1, UnixMillis(1)));
    }

    #[test]
    fn refuses_bad_records() {
        let mut short = wire(0.0, 0.0, 0, &[(TAG_KEY, "abc")]);
        short.pop();
        assert!(parse(&short).is_none());
        assert!(parse(&wire(0.0, 0.0, 0, &[(TAG_HEADER + 8, "x")])).is_none());
        assert!(parse(&wire(0.0, 0.0, 0, &[(6, "x")])).is_none());
        assert!(parse(&[0; 10]).is_none());
    }

    #[test]
    fn sent_bits() {
        let sent = Sent::new(130);
        assert!(!sent.contains(129));
        sent.insert(129);
        sent.insert(0);
        assert!(sent.contains(129) && sent.contains(0) && !sent.contains(64));
        sent.insert(200); // past the last word: ignored
        assert!(!sent.contains(200));
    }

    #[test]
    fn wanted_matches_the_parser() {
        for (i, name) in WANTED.iter().enumerate().take(CF_IP) {
            let kind = keyward_core::credentials::parse([(*name, "x")]).err();
            assert_ne!(kind, Some(keyward_core::credentials::CredentialError::Missing), "{i} {name}");
        }
        let none = keyward_core::credentials::parse([(WANTED[CF_IP], "x")]).err();
        assert_eq!(none, Some(keyward_core::credentials::CredentialError::Missing));
    }
}
