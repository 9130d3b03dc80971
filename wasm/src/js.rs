//! Reading JavaScript values into Rust and building the objects handed back,
//! for the calls made once or rarely (`load`, `stats`, `verifySignature`,
//! `parseCredentials`' answer). `verify` and `verifyRequest` cross through
//! `boundary` instead.
//!
//! Every property read goes through `Reflect` (which returns a JavaScript
//! exception, say from a getter, as an `Err` instead of unwinding through
//! Rust), and every wrong type becomes a `TypeError` naming the field. The
//! objects handed back are plain objects built here.

use js_sys::{ArrayBuffer, Object, Reflect, Uint8Array};
use keyward_core::credentials::Credential;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

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
    Key = "key", ApiSecret = "apiSecret", Nonce = "nonce", UserId = "userId", ApiKey = "apiKey",
    Signature = "signature", Kind = "kind", Token = "token", Keys = "keys", Workspaces = "workspaces",
    Tools = "tools", Version = "version", CreatedAt = "createdAt",
}

thread_local! {
    // Property names as JavaScript strings, made on first use (never at
    // module load) and reused.
    static NAMES: Vec<JsValue> = TEXTS.iter().map(|t| JsValue::from_str(t)).collect();
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
