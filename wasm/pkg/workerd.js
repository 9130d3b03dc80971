// Cloudflare Workers / workerd entry point (the "workerd" export condition).
// The runtime compiles the .wasm import ahead of time (a `wasm` module in a
// workerd config; wrangler does the same for `.wasm` imports), and it is
// instantiated here at load. Neither the glue nor the module reads the clock
// or randomness at load, which workerd forbids outside a request.
import module from "./keyward_wasm_bg.wasm";
import { initSync } from "./keyward_wasm.js";

initSync({ module });

export * from "./keyward_wasm.js";
