#!/usr/bin/env bash
# The OpenAPI document (`GET /openapi.json`) against a live server: the
# document must be valid OpenAPI, and schemathesis's generated calls must
# get no 5xx and only answers the document describes. Needs the venv that
# .ci/run sets up in target/api-venv. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/api-venv/bin
cargo build -p keyward-cli --bin keyward
bin=target/debug/keyward

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

root=$("$bin" init --db "$work/k.redb" --json | "$venv/python" -c 'import json,sys; print(json.load(sys.stdin)["root_key"])')
"$bin" serve --db "$work/k.redb" --listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
pid=$!
base=
for _ in $(seq 1 100); do
    base=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/serve.log" | head -n1 || true)
    [ -n "$base" ] && break
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "keyward serve did not start:" >&2
    cat "$work/serve.log" >&2
    exit 1
fi

curl -fsS "$base/openapi.json" -o "$work/openapi.json"
"$venv/openapi-spec-validator" "$work/openapi.json"
"$venv/python" .ci/api_check.py "$base" "$root"

st() {
    "$venv/schemathesis" run "$base/openapi.json" \
        -H "Authorization: Bearer $root" \
        --checks not_a_server_error,response_schema_conformance \
        --max-examples 20 --seed 1 --exclude-path '/api/v2/{tool}' "$@"
}
# Operations that can take the run's own key or workspace away (rotate,
# revoke, delete or change the key; turn the workspace's access off) are
# tested apart, without the stateful phase that would feed them the
# run's own ids from earlier answers.
st --exclude-path-regex '^/v1/(api-keys/\{id\}(/revoke|/rotate)?|workspaces/\{id\})$'
st --include-path-regex '^/v1/(api-keys/\{id\}(/revoke|/rotate)?|workspaces/\{id\})$' \
    --phases examples,coverage,fuzzing
