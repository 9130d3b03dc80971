#!/usr/bin/env bash
# Builds the npm package in wasm/pkg/: the .wasm (Cargo profile release-wasm
# at opt-level 3 with SIMD, see below; wasm-opt is not used) plus
# wasm-bindgen's JavaScript glue, the crate's own JavaScript (snippets/) and
# TypeScript types for the `web` target. package.json, node.js and workerd.js
# in wasm/pkg/ are committed; everything this writes is ignored.
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

# Speed over size, unlike the profile's opt-level "z": built at "z", the
# verifier took 1.6x as long to refuse an unknown key and 2.4x as long to load
# a snapshot as at opt-level 2 (measured before the boundary rewrite), and
# opt-level 3 adds under 2 KB to the .wasm. simd128 lets sha2 use its SIMD
# backend: ~25% off hashing a token, ~13% off the snapshot's MAC. Every
# runtime the package targets has WebAssembly SIMD (V8 in Node >= 16.4,
# workerd, Chrome 91, Firefox 89, Safari 16.4, Deno).
cargo build -p keyward-wasm --profile release-wasm --target wasm32-unknown-unknown \
    --config 'profile.release-wasm.opt-level=3' \
    --config 'target.wasm32-unknown-unknown.rustflags=["-Ctarget-feature=+simd128"]'
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')"
rm -rf wasm/pkg/snippets
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir wasm/pkg \
    "$target_dir/wasm32-unknown-unknown/release-wasm/keyward_wasm.wasm"

# wasm-bindgen puts the crate's JavaScript (src/boundary.js) under
# snippets/keyward-wasm-<hash of the crate's name and version>/; move it to
# snippets/keyward-wasm/, a path that stays put across versions, so that a
# workerd config (edge/config.capnp) can list it.
hashed=(wasm/pkg/snippets/keyward-wasm-*)
if [[ ${#hashed[@]} -ne 1 || ! -d ${hashed[0]} ]]; then
    echo "build.sh: expected one wasm/pkg/snippets/keyward-wasm-* directory, found: ${hashed[*]}" >&2
    exit 1
fi
from="${hashed[0]#wasm/pkg/}"
mv "${hashed[0]}" wasm/pkg/snippets/keyward-wasm
# Only the import statements: the .wasm names its imports' module by the
# hashed path, so the keys of the imports object keep it.
sed -i -E "/^import /s#\./$from/#./snippets/keyward-wasm/#" wasm/pkg/keyward_wasm.js
if grep -E "^import " wasm/pkg/keyward_wasm.js | grep -q "$from" ||
    ! grep -q "^import .*'./snippets/keyward-wasm/src/boundary.js'" wasm/pkg/keyward_wasm.js; then
    echo "build.sh: could not point keyward_wasm.js's imports at snippets/keyward-wasm/" >&2
    exit 1
fi

wasm=wasm/pkg/keyward_wasm_bg.wasm
raw=$(wc -c <"$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
echo "build.sh: $wasm is $raw bytes ($gz gzipped)"
