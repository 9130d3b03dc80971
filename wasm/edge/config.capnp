# workerd config for the keyward-wasm example worker.
#
#   npm ci
#   node_modules/.bin/workerd test config.capnp    # runs test.js's `test` handler
#   node_modules/.bin/workerd serve config.capnp   # http://127.0.0.1:8787
#
# Needs ../pkg built (wasm/build.sh) and the fixture written to
# ../fixtures/out (cargo run -p keyward-wasm-fixtures -- wasm/fixtures/out):
# a snapshot exported by the engine from a throwaway test database. For a real
# deployment, embed your engine's exported snapshot and make SNAPSHOT_KEY a
# secret.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "keyward", worker = .keywardWorker)],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "keyward")],
);

const keywardWorker :Workerd.Worker = (
  modules = [
    (name = "test.js", esModule = embed "test.js"),
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "pkg/workerd.js", esModule = embed "../pkg/workerd.js"),
    (name = "pkg/keyward_wasm.js", esModule = embed "../pkg/keyward_wasm.js"),
    # The crate's own JavaScript, which keyward_wasm.js imports.
    (name = "pkg/snippets/keyward-wasm/src/boundary.js", esModule = embed "../pkg/snippets/keyward-wasm/src/boundary.js"),
    # The .wasm as a CompiledWasm module: workerd compiles it, workerd.js
    # instantiates it with initSync.
    (name = "pkg/keyward_wasm_bg.wasm", wasm = embed "../pkg/keyward_wasm_bg.wasm"),
    (name = "snapshot.bin", data = embed "../fixtures/out/snapshot.bin"),
    (name = "cases.json", json = embed "../fixtures/out/cases.json"),
  ],
  bindings = [
    (name = "SNAPSHOT_KEY", text = embed "../fixtures/out/snapshot.key"),
    (name = "TRUST_CF_CONNECTING_IP", text = "true"),
  ],
  compatibilityDate = "2025-09-01",
);
