// Node entry point (the "node" export condition): instantiates the module
// synchronously from the .wasm beside this file, so `import { Verifier } from
// "keyward-wasm"` is ready to use.
import { readFileSync } from "node:fs";

import { initSync } from "./keyward_wasm.js";

initSync({ module: readFileSync(new URL("./keyward_wasm_bg.wasm", import.meta.url)) });

export * from "./keyward_wasm.js";
