#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target in fuzz/ once, then runs each
# for a short while from its committed seeds. Runs every target even if one
# fails, prints exec/s per target, and exits non-zero if any target found a
# crash. A crash's input is left in fuzz/artifacts/<target>/.
#
#   .ci/fuzz.sh              # 20 s per target
#   FUZZ_SECONDS=300 .ci/fuzz.sh
#   .ci/fuzz.sh limits token # only these targets
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
cargo_fuzz_version="0.13.2"

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo-fuzz ${cargo_fuzz_version}"
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz ${cargo_fuzz_version}"; then
    cargo install cargo-fuzz --version "${cargo_fuzz_version}" --locked
fi
cargo fuzz --version

# libFuzzer's instrumentation with AddressSanitizer needs nightly; on stable,
# cargo-fuzz still builds with coverage instrumentation but no sanitizer.
if rustup toolchain list | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
    sanitizer=()
else
    fuzz=(cargo fuzz)
    sanitizer=(-s none)
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

step "build (${fuzz[*]} ${sanitizer[*]})"
"${fuzz[@]}" build "${sanitizer[@]}"

logs="fuzz/target/smoke-logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    step "run ${t} for ${seconds} s"
    log="${logs}/${t}.log"
    if "${fuzz[@]}" run "${sanitizer[@]}" "$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        tail -n 80 "$log"
    fi
    grep -E '^(INFO: seed corpus|Done [0-9]+ runs)' "$log" || true
    execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$(printf '%-12s %-7s %8s exec/s %10s runs' "$t" "$status" "${execs:-?}" "${runs:-?}")")
done

step "summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/; logs in ${logs}/)" >&2
    exit 1
fi
