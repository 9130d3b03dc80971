import assert from "node:assert/strict";
import { test } from "node:test";

import { parseCredentials, verifySignature } from "../pkg/node.js";

test("each credential form, from a Headers object", () => {
  assert.deepEqual(parseCredentials(new Headers({ "X-API-Key": " kw_live_abc " })), { kind: "api_key", key: "kw_live_abc" });
  assert.deepEqual(parseCredentials(new Headers({ Authorization: "Bearer kw_live_abc" })), {
    kind: "api_key",
    key: "kw_live_abc",
  });
  assert.deepEqual(parseCredentials(new Headers({ aptoken: "sess_1" })), { kind: "session", token: "sess_1" });
  const signed = new Headers({ APIKey: "k", Signature: "AB", UserId: "96", Nonce: "7", Host: "x" });
  assert.deepEqual(parseCredentials(signed), { kind: "signed", apiKey: "k", signature: "AB", userId: "96", nonce: "7" });
});

test("plain objects, Node-style arrays, pairs and Maps", () => {
  assert.deepEqual(parseCredentials({ "x-api-key": "k1", cookie: "a=b" }), { kind: "api_key", key: "k1" });
  assert.deepEqual(parseCredentials({ "x-api-key": ["k1"], "set-cookie": ["a", "b"], via: undefined }), {
    kind: "api_key",
    key: "k1",
  });
  assert.deepEqual(parseCredentials([["Authorization", "bearer k2"], ["Accept", "*/*"]]), { kind: "api_key", key: "k2" });
  assert.deepEqual(parseCredentials(new Map([["APToken", "s"]])), { kind: "session", token: "s" });
});

test("refusals carry the parser's message", () => {
  const message = (headers) => {
    try {
      parseCredentials(headers);
    } catch (e) {
      assert.ok(e instanceof Error);
      return e.message;
    }
    assert.fail("accepted");
  };
  assert.equal(message({}), "no credential: send X-API-Key, Authorization: Bearer, aptoken, or the signed headers");
  assert.equal(message({ "x-api-key": ["a", "b"] }), "header `X-API-Key` appears more than once");
  assert.equal(message([["X-API-Key", "a"], ["x-api-key", "a"]]), "header `X-API-Key` appears more than once");
  assert.equal(message({ "X-API-Key": "a", "x-api-key": "a" }), "header `X-API-Key` appears more than once");
  assert.equal(message({ aptoken: "a", nonce: "1" }), "conflicting credentials: `aptoken` and `signed headers`");
  assert.equal(message({ apikey: "k", signature: "s", nonce: "1" }), "signed request is missing header `UserId`");
  assert.equal(message({ authorization: "Basic abc" }), "Authorization scheme must be Bearer");
  assert.equal(message({ authorization: "Bearer a b" }), "header `Authorization` is empty");
  assert.equal(message({ "x-api-key": "   " }), "header `X-API-Key` is empty");
  assert.equal(message({ "x-api-key": "a\u0007b" }), "header `X-API-Key` contains a control or non-ASCII character");
  assert.equal(message({ "x-api-key": "é" }), "header `X-API-Key` contains a control or non-ASCII character");
  assert.equal(message({ "x-api-key": "a".repeat(1025) }), "header `X-API-Key` is longer than 1024 bytes");
});

test("inputs that are not headers are a TypeError", () => {
  const shape = "headers must be a Headers object, a plain object of name to value, or an iterable of [name, value] pairs";
  for (const bad of [null, undefined, "x-api-key: k", 7, ["x-api-key"], [[1, "k"]]]) {
    assert.throws(() => parseCredentials(bad), { name: "TypeError", message: shape }, String(bad));
  }
  assert.throws(() => parseCredentials({ "x-api-key": 5 }), {
    name: "TypeError",
    message: "header `x-api-key` must be a string or an array of strings",
  });
});

const VECTOR = {
  apiSecret: "engine-test-secret",
  nonce: "2247733562",
  userId: "96",
  apiKey: "28c68ac3fcfafc3d4e8d653fe57e5baf",
  signature: "1796148fe957facdc5495abf6dddf5f8c635a071f8438f5aeccb1552d98b4743",
};

test("signature vector: exact, uppercase, and every wrong field", () => {
  assert.equal(verifySignature(VECTOR), true);
  assert.equal(verifySignature({ ...VECTOR, signature: VECTOR.signature.toUpperCase() }), true);
  assert.equal(verifySignature({ ...VECTOR, signature: VECTOR.signature.replace(/3$/, "4") }), false);
  assert.equal(verifySignature({ ...VECTOR, signature: VECTOR.signature.slice(0, 63) }), false);
  assert.equal(verifySignature({ ...VECTOR, signature: "zz" }), false);
  assert.equal(verifySignature({ ...VECTOR, nonce: "2247733563" }), false);
  assert.equal(verifySignature({ ...VECTOR, userId: "97" }), false);
  assert.equal(verifySignature({ ...VECTOR, apiKey: VECTOR.apiKey.toUpperCase() }), false);
  assert.equal(verifySignature({ ...VECTOR, apiSecret: "engine-test-secreT" }), false);
  assert.throws(() => verifySignature({ ...VECTOR, nonce: 2247733562 }), {
    name: "TypeError",
    message: "`nonce` must be a string",
  });
  assert.throws(() => verifySignature(), {
    name: "TypeError",
    message: "verifySignature() takes an object: {apiSecret, nonce, userId, apiKey, signature}",
  });
});
