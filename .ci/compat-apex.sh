#!/usr/bin/env bash
# APEX compatibility: the unmodified `notbank` 2.5.0 Python client
# authenticates against `keyward serve --tls-cert --tls-key` over HTTPS, calls
# an aptoken-protected tool and logs out (tests/compat/apex/compat.py).
# Builds the binary, makes a throwaway CA and server certificate with the
# `gencert` example, installs the client into a venv under the target
# directory, and runs the script. Installs what it needs, so it runs on a
# fresh machine and again on a used one. Respects CARGO_TARGET_DIR. Exits
# non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "apex: build keyward and the certificate generator"
cargo build -p keyward-cli --bin keyward --example gencert
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step "apex: test certificate"
"$target_dir/debug/examples/gencert" "$work/tls"

step "apex: python venv with notbank"
python3 --version
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv's pip bootstrap separately.
    apt-get update
    apt-get install -y python3-venv
fi
venv="$target_dir/compat-apex-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r tests/compat/apex/requirements.txt
"$venv/bin/python" -m pip show notbank | grep -x 'Version: 2.5.0'

step "apex: notbank against keyward serve over HTTPS"
KEYWARD_BIN="$target_dir/debug/keyward" KEYWARD_TLS_DIR="$work/tls" "$venv/bin/python" tests/compat/apex/compat.py
