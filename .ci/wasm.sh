#!/usr/bin/env bash
# keyward-wasm: builds the npm package (wasm/pkg) and runs its three suites:
# wasm-bindgen tests under Node, `node --test` against the built package, and
# the example worker's tests under workerd. Installs what it needs, each step
# guarded by a version check, so it runs on a fresh machine and again on a
# used one. Respects CARGO_TARGET_DIR. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130 # = the `wasm-bindgen` pin in Cargo.toml
MAX_WASM_BYTES=307200        # 300 KiB

step() { printf '\n=== %s ===\n' "$*"; }

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step "wasm: toolchain"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if [[ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]] ||
    ! command -v wasm-bindgen-test-runner >/dev/null; then
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
wasm-bindgen --version
node --version

step "wasm: clippy for wasm32"
# --no-deps: lint these crates; keyward-core is linted by .ci/run.
cargo clippy -p keyward-wasm -p keyward-wasm-fixtures --target wasm32-unknown-unknown --all-targets --no-deps -- -D warnings

step "wasm: build the package"
bash wasm/build.sh
wasm_bytes=$(wc -c <wasm/pkg/keyward_wasm_bg.wasm)
if ((wasm_bytes >= MAX_WASM_BYTES)); then
    echo "wasm/pkg/keyward_wasm_bg.wasm is $wasm_bytes bytes; the budget is $MAX_WASM_BYTES" >&2
    exit 1
fi

step "wasm: test fixture"
cargo run -p keyward-wasm-fixtures -- wasm/fixtures/out

step "wasm: wasm-bindgen tests (Node)"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test -p keyward-wasm --target wasm32-unknown-unknown

step "wasm: node --test against wasm/pkg"
node --test wasm/test/*.test.mjs

step "wasm: workerd test"
(
    cd wasm/edge
    want="$(node -p 'require("./package.json").devDependencies.workerd')"
    have="$(node -p 'try { require("./node_modules/workerd/package.json").version } catch { "" }')"
    if [[ "$have" != "$want" ]]; then
        npm ci --no-audit --no-fund
    fi
    node_modules/.bin/workerd --version
    node_modules/.bin/workerd test config.capnp
)
