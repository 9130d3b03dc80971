//! keyward-wasm: keyward's API-key verification for JavaScript runtimes.
//!
//! Compiled to WebAssembly with wasm-bindgen, this crate is the npm package
//! `keyward-wasm` (built by `wasm/build.sh`). An edge worker loads an
//! authenticated snapshot exported by the engine and decides requests
//! locally, with exactly the checks and verdict codes the engine uses
//! (SPEC §4): keyward-core's `decide`, over the keys looked up as
//! keyward-core's `LocalVerifier` looks them up (module `index`).
//!
//! A call crosses into WebAssembly once and back into JavaScript twice, to
//! read its arguments and to build its verdict (module `boundary`, and its
//! JavaScript half `boundary.js`).
//!
//! ```js
//! import { Verifier } from "keyward-wasm";
//!
//! // The key as the engine keeps it (KEYWARD_SNAPSHOT_KEY, hex), or as bytes.
//! const verifier = Verifier.load(snapshotBytes, env.SNAPSHOT_KEY);
//! const verdict = verifier.verifyRequest(request, { trustCfConnectingIp: true });
//! if (!verdict.valid) {
//!   return Response.json({ code: verdict.code, error: verdict.error }, { status: verdict.status });
//! }
//! ```
//!
//! Limits (rate, cooldown, daily, concurrency, credits) are counted in the
//! memory of one `Verifier`, so each isolate enforces its own: N isolates
//! admit up to N times a limit. Sessions (`aptoken`) and signed requests need
//! state the snapshot does not carry, so they are verified by the engine only.
//!
//! Nothing runs at module load: no clock, no randomness (workerd forbids both
//! at global scope). `now` defaults to `Date.now()` inside each call.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// As in keyward-core: nothing a caller sends may panic (which would trap the
// module), so neither may an index or an unwrap.
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod boundary;
mod index;
mod js;
mod outcome;

use core::cell::RefCell;

use keyward_core::signature::ApiSecret;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** A verdict code (SPEC §4). */
export type Code =
  | "VALID" | "MALFORMED" | "NOT_FOUND" | "EXPIRED" | "REVOKED" | "DISABLED" | "PLAN_INACTIVE"
  | "IP_DENIED" | "INSUFFICIENT_PERMISSIONS" | "TOOL_DISABLED" | "UNKNOWN_TOOL" | "RATE_LIMITED"
  | "COOLDOWN" | "DAILY_LIMIT" | "CONCURRENCY_LIMIT" | "USAGE_EXHAUSTED" | "INVALID_SIGNATURE"
  | "NONCE_REUSED" | "STORE_UNAVAILABLE";

/** Bytes: a `Uint8Array` (a Node `Buffer` is one) or an `ArrayBuffer`. */
export type Bytes = Uint8Array | ArrayBuffer;

/** What a request asks for, besides its credential. */
export interface RequestFacts {
  /** Client address (IPv4 or IPv6). Without it, a key or workspace with IP rules refuses (fails closed). */
  ip?: string | null;
  /** Tool being called, e.g. `"gl_ping"`. */
  tool?: string | null;
  /** Permissions the caller requires, all of them. */
  permissions?: string[] | null;
  /** Credits the call costs. By default, 1; 0 only checks that some remain. */
  cost?: number | null;
  /** Time of the decision in ms since the epoch. By default, `Date.now()` at the call. */
  now?: number | null;
}

/** The argument of `Verifier.verify`. */
export interface VerifyInput extends RequestFacts {
  /** The API key the client sent. */
  key: string;
}

/** The options of `Verifier.verifyRequest`. */
export interface VerifyRequestOptions extends RequestFacts {
  /**
   * Take the client IP from `CF-Connecting-IP` when `ip` is not given. By default, false:
   * only turn it on behind Cloudflare, which sets the header itself; elsewhere any client can.
   */
  trustCfConnectingIp?: boolean | null;
}

/** The rate limit closest to refusing, for `RateLimit-*` headers. */
export interface RateLimitStatus {
  /** Calls per window. */
  limit: number;
  /** Calls left right now. */
  remaining: number;
  /** Milliseconds until the limit is fully replenished. */
  resetMs: number;
}

/** The answer to one verification. */
export interface Verdict {
  /** Whether the request may pass (`code === "VALID"`). */
  valid: boolean;
  code: Code;
  /** The HTTP status the code maps to. */
  status: 200 | 401 | 403 | 404 | 429;
  /** The key's id (`key_…`), once the key was found. */
  keyId: string | null;
  /** The key's workspace (`ws_…`), once the key was found. */
  workspaceId: string | null;
  /** The key's permissions, once the key was found; else empty. */
  permissions: string[];
  /** The key's metadata, parsed from its JSON; null when it has none. */
  meta: Record<string, unknown> | null;
  /** When the key expires, in ms since the epoch; null if never or unknown. */
  expiresAt: number | null;
  /** Credits left after this call; null when the key has no credit limit. */
  remaining: number | null;
  /** Calls left today; null without a daily limit. */
  dailyRemaining: number | null;
  /** The tightest rate limit; null without one. */
  rateLimit: RateLimitStatus | null;
  /** Milliseconds until a retry can pass, for the 429 codes that know it. */
  retryAfterMs: number | null;
  /** Why a MALFORMED request was refused (bad token, bad header, or a credential only the engine verifies). */
  error: string | null;
}

/** Headers: a Fetch `Headers`, a plain object (values may be arrays), or `[name, value]` pairs. */
export type HeadersInput =
  | Headers
  | Record<string, string | string[] | undefined>
  | Iterable<readonly [string, string]>;

/** The one credential a request carries. */
export type Credentials =
  | { kind: "api_key"; key: string }
  | { kind: "session"; token: string }
  | { kind: "signed"; apiKey: string; signature: string; userId: string; nonce: string };

/** The signed-request fields of SPEC §5. */
export interface SignatureInput {
  /** The API secret; its UTF-8 bytes are the HMAC key. */
  apiSecret: string;
  nonce: string;
  userId: string;
  apiKey: string;
  /** Hex HMAC-SHA256 of nonce ‖ userId ‖ apiKey, either case. */
  signature: string;
}

/** What a loaded snapshot holds. */
export interface Stats {
  keys: number;
  workspaces: number;
  tools: number;
  /** Snapshot format version. */
  version: number;
  /** When the snapshot was exported, in ms since the epoch. */
  createdAt: number;
}
"#;

/// Verifies API keys against an authenticated snapshot, counting limits in
/// this object's memory (so per isolate, not globally).
#[wasm_bindgen]
pub struct Verifier {
    // Borrowed only while Rust runs, never while JavaScript code could call
    // back in: inputs are read before, and the answer built after.
    inner: RefCell<index::Index>,
    /// The JavaScript strings of the keys verified so far (boundary.js),
    /// and which keys those are.
    cache: JsValue,
    sent: boundary::Sent,
    version: u16,
}

fn busy() -> JsValue {
    js::error("Verifier is already in use by this call")
}

impl Verifier {
    /// The verdict object for an outcome.
    fn answer(&self, outcome: &outcome::Outcome) -> Result<JsValue, JsValue> {
        boundary::verdict(&self.cache, &self.sent, outcome, |index| {
            let inner = self.inner.try_borrow().map_err(|_| busy())?;
            outcome::key_strings(&inner, index).ok_or_else(boundary::internal)
        })
    }
}

#[wasm_bindgen]
impl Verifier {
    /// Authenticates and indexes a snapshot exported by the engine.
    ///
    /// `snapshotKey` is the engine's snapshot key: bytes, or the hex text
    /// of `KEYWARD_SNAPSHOT_KEY` (say, a Workers secret).
    ///
    /// Throws an `Error` saying why when the snapshot is truncated, tampered
    /// with (or the key is wrong), of an unsupported format version, or not a
    /// snapshot at all, and when the key is shorter than 16 bytes.
    pub fn load(
        #[wasm_bindgen(unchecked_param_type = "Bytes")] snapshot: JsValue,
        #[wasm_bindgen(js_name = "snapshotKey", unchecked_param_type = "Bytes | string")] snapshot_key: JsValue,
    ) -> Result<Verifier, JsValue> {
        let bytes = js::bytes(&snapshot, "snapshot")?;
        let key = js::snapshot_key(&snapshot_key)?;
        let inner = index::Index::load(&bytes, &key).map_err(|e| js::error(&e.to_string()))?;
        // The version sits at bytes 6..8; `load` checked it is one we read.
        let version = match bytes.get(6..8) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => 0,
        };
        drop(bytes);
        boundary::attach_once();
        let cache = boundary::cache(inner.snapshot().keys.len());
        let sent = boundary::Sent::new(inner.snapshot().keys.len());
        Ok(Verifier { inner: RefCell::new(inner), cache, sent, version })
    }

    /// Verifies an API key: format, lookup, revoked/expired/disabled, plan,
    /// IP, tool, permissions, then limits, which are charged only when every
    /// other check passed.
    #[wasm_bindgen(unchecked_return_type = "Verdict")]
    pub fn verify(
        &self,
        #[wasm_bindgen(unchecked_param_type = "VerifyInput")] input: JsValue,
    ) -> Result<JsValue, JsValue> {
        let outcome = boundary::verify_input(&input, |key, ask| {
            Ok(outcome::verify(&mut *self.inner.try_borrow_mut().map_err(|_| busy())?, key, ask))
        })?;
        self.answer(&outcome)
    }

    /// Verifies the API key a Fetch `Request` carries (`X-API-Key` or
    /// `Authorization: Bearer`).
    ///
    /// The tool is `options.tool`, else the `{tool}` of a `/api/v2/{tool}`
    /// URL. The client IP is `options.ip`, else `CF-Connecting-IP` if
    /// `options.trustCfConnectingIp`, else unknown. A session (`aptoken`) or
    /// signed request answers `MALFORMED` with the reason in `error`: only the
    /// engine holds sessions, API secrets and nonces.
    #[wasm_bindgen(js_name = "verifyRequest", unchecked_return_type = "Verdict")]
    pub fn verify_request(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Request")] request: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "VerifyRequestOptions")] options: JsValue,
    ) -> Result<JsValue, JsValue> {
        let outcome = boundary::request_input(&request, &options, |fields, ask| {
            let credential = keyward_core::credentials::parse(fields.headers.iter().map(|(n, v)| (*n, *v)));
            let mut inner = self.inner.try_borrow_mut().map_err(|_| busy())?;
            Ok(outcome::verify_credential(&mut inner, credential, ask))
        })?;
        self.answer(&outcome)
    }

    /// Counts and dates of the loaded snapshot.
    #[wasm_bindgen(unchecked_return_type = "Stats")]
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        let s = inner.snapshot();
        let (keys, workspaces, tools, created) = (s.keys.len(), s.workspaces.len(), s.tools.len(), s.created_at.get());
        drop(inner);
        Ok(js::stats(keys, workspaces, tools, self.version, created))
    }
}

/// Checks a signed request's signature (SPEC §5) in constant time: hex
/// HMAC-SHA256 under the API secret's UTF-8 bytes of nonce ‖ userId ‖ apiKey.
/// Hex of either case is accepted; anything else is `false`.
#[wasm_bindgen(js_name = "verifySignature")]
pub fn verify_signature(
    #[wasm_bindgen(unchecked_param_type = "SignatureInput")] input: JsValue,
) -> Result<bool, JsValue> {
    if !input.is_object() {
        return Err(js::type_error("verifySignature() takes an object: {apiSecret, nonce, userId, apiKey, signature}"));
    }
    let secret = ApiSecret::new(js::required_string(&input, js::Name::ApiSecret)?.into_bytes());
    let nonce = js::required_string(&input, js::Name::Nonce)?;
    let user_id = js::required_string(&input, js::Name::UserId)?;
    let api_key = js::required_string(&input, js::Name::ApiKey)?;
    let signature = js::required_string(&input, js::Name::Signature)?;
    Ok(keyward_core::signature::verify(&secret, &nonce, &user_id, &api_key, &signature).is_ok())
}

/// Takes the one credential from request headers, as the engine does.
/// Throws an `Error` saying what is wrong: none, duplicated, conflicting,
/// incomplete signed set, bad scheme, empty, too long, bad characters.
#[wasm_bindgen(js_name = "parseCredentials", unchecked_return_type = "Credentials")]
pub fn parse_credentials(
    #[wasm_bindgen(unchecked_param_type = "HeadersInput")] headers: JsValue,
) -> Result<JsValue, JsValue> {
    let credential = boundary::headers_input(&headers, |fields| {
        Ok(keyward_core::credentials::parse(fields.headers.iter().map(|(n, v)| (*n, *v))))
    })?;
    credential.map(|c| js::credential(&c)).map_err(|e| js::error(&e.to_string()))
}
