//! Reading JavaScript values into Rust and building the objects handed back.
//!
//! Every property read goes through `Reflect` (which returns a JavaScript
//! exception, say from a getter, as an `Err` instead of unwinding through
//! Rust), and every wrong type becomes a `TypeError` naming the field. The
//! objects handed back are plain objects built here, after the verifier's
//! borrow has ended.

use core::net::IpAddr;

use js_sys::{Array, ArrayBuffer, Object, Reflect, Uint8Array};
use keyward_core::{Code, Credential, UnixMillis};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use crate::outcome::{Ask, Outcome};

/// Largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Header names this package reads; every other header is skipped unread.
const WANTED: [&str; 8] = ["x-api-key", "authorization", "aptoken", "apikey", "signature", "userid", "nonce", CF_IP];
const CF_IP: &str = "cf-connecting-ip";

pub(crate) fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
}

pub(crate) fn error(message: &str) -> JsValue {
    js_sys::Error::new(message).into()
}

macro_rules! names {
    ($($id:ident = $text:literal,)*) => {
        /// A property name this module reads or writes.
        #[derive(Clone, Copy)]
        pub(crate) enum Name { $($id),* }
        const TEXTS: &[&str] = &[$($text),*];
    };
}

names! {
    Key = "key", Ip = "ip", Tool = "tool", Permissions = "permissions", Cost = "cost", Now = "now",
    Headers = "headers", Url = "url", TrustCfConnectingIp = "trustCfConnectingIp",
    ApiSecret = "apiSecret", Nonce = "nonce", UserId = "userId", ApiKey = "apiKey", Signature = "signature",
    Valid = "valid", Code = "code", Status = "status", KeyId = "keyId", WorkspaceId = "workspaceId", Meta = "meta",
    ExpiresAt = "expiresAt", Remaining = "remaining", DailyRemaining = "dailyRemaining", RateLimit = "rateLimit",
    RetryAfterMs = "retryAfterMs", Error = "error", Limit = "limit", ResetMs = "resetMs", Kind = "kind",
    Token = "token", Keys = "keys", Workspaces = "workspaces", Tools = "tools", Version = "version",
    CreatedAt = "createdAt",
}

thread_local! {
    // Property names and codes as JavaScript strings, made on first use (never
    // at module load) and reused: decoding a fresh string for every property
    // of every call cost more than the verification itself.
    static NAMES: Vec<JsValue> = TEXTS.iter().map(|t| JsValue::from_str(t)).collect();
    static CODES: Vec<JsValue> = Code::ALL.iter().map(|c| JsValue::from_str(c.as_str())).collect();
}

impl Name {
    fn text(self) -> &'static str {
        TEXTS.get(self as usize).copied().unwrap_or("")
    }

    /// Runs `f` with the name as a JavaScript string. `f` may call back into
    /// JavaScript (and so into this module): nothing is borrowed mutably.
    fn with<R>(self, f: impl FnOnce(&JsValue) -> R) -> R {
        NAMES.with(|names| match names.get(self as usize) {
            Some(name) => f(name),
            None => f(&JsValue::from_str(self.text())),
        })
    }
}

fn code_string(code: Code) -> JsValue {
    let i = Code::ALL.iter().position(|c| *c == code);
    CODES.with(|codes| i.and_then(|i| codes.get(i)).cloned()).unwrap_or_else(|| JsValue::from_str(code.as_str()))
}

#[wasm_bindgen]
extern "C" {
    /// A plain object this module is filling in.
    type Fields;

    /// `obj[key] = value`, without the try/catch of `Reflect.set`: used only on
    /// objects this module just created, where only a setter that user code
    /// put on `Object.prototype` could throw, and then nothing is borrowed.
    #[wasm_bindgen(method, structural, indexing_setter)]
    fn put(this: &Fields, key: &JsValue, value: &JsValue);
}

fn prop(obj: &JsValue, name: Name) -> Result<JsValue, JsValue> {
    name.with(|n| Reflect::get(obj, n))
}

/// A property that may be absent: `undefined` and `null` both read as `None`.
fn optional(obj: &JsValue, name: Name) -> Result<Option<JsValue>, JsValue> {
    let v = prop(obj, name)?;
    Ok(if v.is_undefined() || v.is_null() { None } else { Some(v) })
}

fn optional_string(obj: &JsValue, name: Name) -> Result<Option<String>, JsValue> {
    match optional(obj, name)? {
        None => Ok(None),
        Some(v) => v.as_string().map(Some).ok_or_else(|| type_error(&format!("`{}` must be a string", name.text()))),
    }
}

pub(crate) fn required_string(obj: &JsValue, name: Name) -> Result<String, JsValue> {
    optional_string(obj, name)?.ok_or_else(|| type_error(&format!("`{}` must be a string", name.text())))
}

fn optional_bool(obj: &JsValue, name: Name) -> Result<bool, JsValue> {
    match optional(obj, name)? {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| type_error(&format!("`{}` must be a boolean", name.text()))),
    }
}

/// A non-negative number up to 2^53 - 1; `integer` also refuses fractions.
fn optional_count(obj: &JsValue, name: Name, integer: bool) -> Result<Option<u64>, JsValue> {
    let Some(v) = optional(obj, name)? else { return Ok(None) };
    match v.as_f64() {
        Some(n) if (0.0..=MAX_SAFE_INTEGER).contains(&n) && (!integer || n.fract() == 0.0) => Ok(Some(n as u64)),
        _ if integer => Err(type_error(&format!("`{}` must be a non-negative integer", name.text()))),
        _ => {
            Err(type_error(&format!("`{}` must be a non-negative number of milliseconds since the epoch", name.text())))
        }
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, JsValue> {
    text.parse().map_err(|_| {
        let shown: String = text.chars().take(64).collect();
        error(&format!("`ip` is not an IPv4 or IPv6 address: {shown:?}"))
    })
}

/// The fields `verify` and `verifyRequest` share: ip, tool, permissions, cost, now.
fn read_ask(obj: &JsValue) -> Result<Ask, JsValue> {
    let ip = optional_string(obj, Name::Ip)?.map(|t| parse_ip(&t)).transpose()?;
    let tool = optional_string(obj, Name::Tool)?;
    let permissions = match optional(obj, Name::Permissions)? {
        None => Vec::new(),
        Some(list) if Array::is_array(&list) => strings(&list, Name::Permissions.text())?,
        Some(_) => return Err(type_error("`permissions` must be an array of strings")),
    };
    let credits = optional_count(obj, Name::Cost, true)?.unwrap_or(1);
    // The clock is read here, inside a call: workerd forbids reading it at
    // module load, and keyward-core never reads it at all.
    let now = match optional_count(obj, Name::Now, false)? {
        Some(ms) => ms,
        None => js_sys::Date::now() as u64,
    };
    Ok(Ask { ip, tool, permissions, credits, now: UnixMillis(now) })
}

fn strings(list: &JsValue, name: &str) -> Result<Vec<String>, JsValue> {
    let mut out = Vec::new();
    if let Some(iter) = js_sys::try_iter(list)? {
        for item in iter {
            out.push(item?.as_string().ok_or_else(|| type_error(&format!("`{name}` must be an array of strings")))?);
        }
    }
    Ok(out)
}

/// Reads `verify`'s argument: the key and the request around it.
pub(crate) fn verify_input(input: &JsValue) -> Result<(String, Ask), JsValue> {
    if !input.is_object() {
        return Err(type_error("verify() takes an object: {key, ip?, tool?, permissions?, cost?, now?}"));
    }
    let key = required_string(input, Name::Key)?;
    Ok((key, read_ask(input)?))
}

/// A Fetch request's credential headers, URL and the options beside it.
pub(crate) struct RequestInput {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) ask: Ask,
}

/// Reads `verifyRequest`'s arguments. The tool comes from the options, else
/// from a `/api/v2/{tool}` URL; the IP from the options, else from
/// `CF-Connecting-IP` when the caller trusts it.
pub(crate) fn request_input(request: &JsValue, options: &JsValue) -> Result<RequestInput, JsValue> {
    if !request.is_object() {
        return Err(type_error("verifyRequest() takes a Fetch API Request"));
    }
    let headers = header_pairs(&prop(request, Name::Headers)?)?;
    let url = prop(request, Name::Url)?.as_string();
    let options =
        if options.is_undefined() || options.is_null() { JsValue::from(Object::new()) } else { options.clone() };
    if !options.is_object() {
        return Err(type_error("verifyRequest() options must be an object: {tool?, ip?, trustCfConnectingIp?, ...}"));
    }
    let mut ask = read_ask(&options)?;
    if ask.ip.is_none() && optional_bool(&options, Name::TrustCfConnectingIp)? {
        // Only a single, well-formed value counts; anything else is an
        // unknown client, which fails closed wherever IP rules exist.
        let mut values = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(CF_IP));
        if let (Some((_, v)), None) = (values.next(), values.next()) {
            ask.ip = v.trim().parse().ok();
        }
    }
    if ask.tool.is_none() {
        ask.tool = url.as_deref().and_then(crate::outcome::tool_from_url);
    }
    Ok(RequestInput { headers, ask })
}

/// The credential-related `(name, value)` pairs of a `Headers` object, a plain
/// object (values may be arrays, as in Node's `IncomingHttpHeaders`), or any
/// iterable of `[name, value]` pairs. Other headers are skipped.
pub(crate) fn header_pairs(headers: &JsValue) -> Result<Vec<(String, String)>, JsValue> {
    let bad = || {
        type_error(
            "headers must be a Headers object, a plain object of name to value, or an iterable of [name, value] pairs",
        )
    };
    if !headers.is_object() {
        return Err(bad());
    }
    let mut out = Vec::new();
    if let Some(iter) = js_sys::try_iter(headers)? {
        for item in iter {
            let item = item?;
            if !item.is_object() {
                return Err(bad());
            }
            let name = Reflect::get_u32(&item, 0)?.as_string().ok_or_else(bad)?;
            if wanted(&name) {
                push_values(&mut out, name, Reflect::get_u32(&item, 1)?)?;
            }
        }
    } else {
        for key in Reflect::own_keys(headers)?.iter() {
            let Some(name) = key.as_string() else { continue };
            if wanted(&name) {
                let value = Reflect::get(headers, &key)?;
                push_values(&mut out, name, value)?;
            }
        }
    }
    Ok(out)
}

fn wanted(name: &str) -> bool {
    WANTED.iter().any(|w| w.eq_ignore_ascii_case(name))
}

fn push_values(out: &mut Vec<(String, String)>, name: String, value: JsValue) -> Result<(), JsValue> {
    if value.is_undefined() {
        return Ok(());
    }
    if let Some(text) = value.as_string() {
        out.push((name, text));
        return Ok(());
    }
    if Array::is_array(&value) {
        // Each element is one occurrence, so duplicates are seen as such.
        for text in strings(&value, &name)? {
            out.push((name.clone(), text));
        }
        return Ok(());
    }
    Err(type_error(&format!("header `{name}` must be a string or an array of strings")))
}

pub(crate) fn bytes(value: &JsValue, name: &str) -> Result<Vec<u8>, JsValue> {
    if let Some(array) = value.dyn_ref::<Uint8Array>() {
        return Ok(array.to_vec());
    }
    if let Some(buffer) = value.dyn_ref::<ArrayBuffer>() {
        return Ok(Uint8Array::new(buffer).to_vec());
    }
    Err(type_error(&format!("`{name}` must be a Uint8Array or an ArrayBuffer")))
}

/// The snapshot key: bytes, or hex text as the engine's `KEYWARD_SNAPSHOT_KEY`
/// and `<db>.secrets` hold it (surrounding whitespace ignored).
pub(crate) fn snapshot_key(value: &JsValue) -> Result<Vec<u8>, JsValue> {
    match value.as_string() {
        Some(text) => crate::outcome::unhex(&text)
            .ok_or_else(|| type_error("`snapshotKey` as a string must be hex (as in KEYWARD_SNAPSHOT_KEY)")),
        None => bytes(value, "snapshotKey")
            .map_err(|_| type_error("`snapshotKey` must be a Uint8Array, an ArrayBuffer or a hex string")),
    }
}

/// Sets a property on an object this module just created.
fn set(obj: &Object, name: Name, value: JsValue) {
    name.with(|n| obj.unchecked_ref::<Fields>().put(n, &value));
}

fn number(n: Option<u64>) -> JsValue {
    n.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64))
}

fn text(s: Option<String>) -> JsValue {
    s.map_or(JsValue::NULL, |s| JsValue::from_str(&s))
}

fn string_array(list: &[String]) -> JsValue {
    let array = Array::new();
    for s in list {
        array.push(&JsValue::from_str(s));
    }
    array.into()
}

/// The verdict object of the TypeScript `Verdict` interface.
pub(crate) fn verdict(o: Outcome) -> JsValue {
    let obj = Object::new();
    set(&obj, Name::Valid, JsValue::from_bool(o.code.is_valid()));
    set(&obj, Name::Code, code_string(o.code));
    set(&obj, Name::Status, JsValue::from(o.code.http_status()));
    set(&obj, Name::KeyId, text(o.key_id.map(|k| k.to_string())));
    set(&obj, Name::WorkspaceId, text(o.workspace_id.map(|w| w.to_string())));
    let (permissions, meta, expires_at) = match o.key {
        Some(k) => {
            // Metadata is stored as JSON text; one that does not parse reads as null.
            let meta =
                if k.meta.is_empty() { JsValue::NULL } else { js_sys::JSON::parse(&k.meta).unwrap_or(JsValue::NULL) };
            (string_array(&k.permissions), meta, number(k.expires_at))
        }
        None => (Array::new().into(), JsValue::NULL, JsValue::NULL),
    };
    set(&obj, Name::Permissions, permissions);
    set(&obj, Name::Meta, meta);
    set(&obj, Name::ExpiresAt, expires_at);
    set(&obj, Name::Remaining, number(o.quota.credits_remaining));
    set(&obj, Name::DailyRemaining, number(o.quota.daily_remaining));
    let rate = match o.quota.rate {
        Some(r) => {
            let rate = Object::new();
            set(&rate, Name::Limit, number(Some(r.limit)));
            set(&rate, Name::Remaining, number(Some(r.remaining)));
            set(&rate, Name::ResetMs, number(Some(r.reset_ms)));
            rate.into()
        }
        None => JsValue::NULL,
    };
    set(&obj, Name::RateLimit, rate);
    set(&obj, Name::RetryAfterMs, number(o.retry_after_ms));
    set(&obj, Name::Error, text(o.error));
    obj.into()
}

/// The object of the TypeScript `Credentials` type.
pub(crate) fn credential(c: &Credential) -> JsValue {
    let obj = Object::new();
    set(&obj, Name::Kind, JsValue::from_str(c.kind()));
    match c {
        Credential::ApiKey(key) => set(&obj, Name::Key, JsValue::from_str(key)),
        Credential::Session(token) => set(&obj, Name::Token, JsValue::from_str(token)),
        Credential::Signed(s) => {
            set(&obj, Name::ApiKey, JsValue::from_str(&s.api_key));
            set(&obj, Name::Signature, JsValue::from_str(&s.signature));
            set(&obj, Name::UserId, JsValue::from_str(&s.user_id));
            set(&obj, Name::Nonce, JsValue::from_str(&s.nonce));
        }
        // `Credential` is non-exhaustive; a new kind reports its name only.
        _ => {}
    }
    obj.into()
}

/// The object of the TypeScript `Stats` interface.
pub(crate) fn stats(keys: usize, workspaces: usize, tools: usize, version: u16, created_at: u64) -> JsValue {
    let obj = Object::new();
    set(&obj, Name::Keys, number(Some(keys as u64)));
    set(&obj, Name::Workspaces, number(Some(workspaces as u64)));
    set(&obj, Name::Tools, number(Some(tools as u64)));
    set(&obj, Name::Version, JsValue::from(version));
    set(&obj, Name::CreatedAt, number(Some(created_at)));
    obj.into()
}
