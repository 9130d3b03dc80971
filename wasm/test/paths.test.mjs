// The edge reads request paths by keyward-core's one rule, the one the
// engine's gateway applies: the shared table
// crates/core/tests/data/gateway_paths.json, case by case.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { T0, cases, fresh, malformed } from "./fixture.mjs";

const table = JSON.parse(
  readFileSync(new URL("../../crates/core/tests/data/gateway_paths.json", import.meta.url), "utf8"),
);
const URL_BASE = "https://edge.example";

test("every path of the shared table", () => {
  assert.ok(table.cases.length >= 20);
  const v = fresh();
  for (const row of table.cases) {
    const request = new Request(URL_BASE + row.path, { method: "POST", headers: { "X-API-Key": cases.tokens.valid } });
    const seen = new URL(request.url);
    const verdict = v.verifyRequest(request, { now: T0 });
    if (row.edge_url !== undefined) {
      // fetch's URL parser resolved the dot segments before the edge saw them.
      assert.equal(seen.pathname, row.edge_url, row.path);
      assert.equal(verdict.code, row.edge_code, row.path);
      continue;
    }
    assert.equal(seen.pathname + seen.search, row.path, "the URL parser left the path alone");
    if (row.code === "MALFORMED") {
      assert.deepEqual(verdict, malformed(row.error), row.path);
    } else {
      assert.deepEqual([verdict.code, verdict.keyId], [row.code, cases.keyIds.valid], row.path);
    }
  }
});

test("a tool given in the options is not read from the path", () => {
  const v = fresh();
  const request = new Request(URL_BASE + "/api/v2//gl_ping", { headers: { "X-API-Key": cases.tokens.valid } });
  assert.equal(v.verifyRequest(request, { now: T0, tool: "gl_ping" }).code, "VALID");
});
