#!/usr/bin/env bash
# Builds the npm package in wasm/pkg/: the .wasm (Cargo profile release-wasm,
# optimised for size; wasm-opt is not used) plus wasm-bindgen's JavaScript glue
# and TypeScript types for the `web` target. package.json, node.js and
# workerd.js in wasm/pkg/ are committed; everything this writes is ignored.
#
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli 0.2.130, the
# version the `wasm-bindgen` crate is pinned to (.ci/wasm.sh installs both).
# Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

want="wasm-bindgen 0.2.130"
have="$(wasm-bindgen --version 2>/dev/null || true)"
if [[ "$have" != "$want" ]]; then
    echo "build.sh: need $want, found '${have:-nothing}'" >&2
    echo "build.sh: cargo install wasm-bindgen-cli --version ${want#wasm-bindgen }" >&2
    exit 1
fi

cargo build -p keyward-wasm --profile release-wasm --target wasm32-unknown-unknown
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')"
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir wasm/pkg \
    "$target_dir/wasm32-unknown-unknown/release-wasm/keyward_wasm.wasm"

wasm=wasm/pkg/keyward_wasm_bg.wasm
raw=$(wc -c <"$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
echo "build.sh: $wasm is $raw bytes ($gz gzipped)"
