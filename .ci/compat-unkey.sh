#!/usr/bin/env bash
# Unkey compatibility: Unkey's official TypeScript SDK (@unkey/api, pinned in
# tests/compat/unkey/package-lock.json), unmodified, against a fresh
# `keyward serve` that the test starts and stops itself.
#
#   .ci/compat-unkey.sh
#
# Needs cargo, node >= 20 and npm. Exits non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "build keyward"
cargo build -p keyward-cli
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e '
let s = ""; process.stdin.on("data", (d) => (s += d));
process.stdin.on("end", () => console.log(JSON.parse(s).target_directory));')"
export KEYWARD_BIN="${target_dir}/debug/keyward"
test -x "$KEYWARD_BIN" || { echo "no binary at $KEYWARD_BIN" >&2; exit 1; }

step "node $(node --version), @unkey/api from the lockfile (npm ci)"
cd tests/compat/unkey
npm ci --no-audit --no-fund
node -e 'console.log("@unkey/api", require("./node_modules/@unkey/api/package.json").version)'

step "Unkey SDK against keyward serve"
node --test --test-reporter=spec unkey.test.mjs
