#!/usr/bin/env bash
# Property-based checks of the HTTP API against its OpenAPI document: starts
# `transbordo serve` (debug build) with a token and the sandbox integrations, runs
# schemathesis (PyPI) on /openapi.json, and fails on any 5xx or any answer that does not
# match the document. `positive_data_acceptance` is left out on purpose: a request that
# matches the schema can still be refused for reasons a schema cannot say (a flow
# document that does not load is 422 with diagnostics, a missing flows_dir is 400).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-100}"
WORK="$(mktemp -d)"
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# schemathesis in a virtualenv (or the user's site-packages when venv is missing).
if python3 -m venv "$WORK/venv" >/dev/null 2>&1; then
  "$WORK/venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
  ST="$WORK/venv/bin/schemathesis"
else
  python3 -m pip install -q --user "schemathesis==$SCHEMATHESIS_VERSION" ||
    python3 -m pip install -q --user --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
  ST="$(python3 -m site --user-base)/bin/schemathesis"
fi

cargo build -q --bin transbordo
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
TOKEN="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
cp "$ROOT/examples/sandbox-integrations.toml" "$WORK/integrations.toml"
mkdir -p "$WORK/flows"
echo '[{"name": "send_message", "parameters": {"text": "hi"}}]' > "$WORK/flows/hello.json"
cat > "$WORK/service.toml" <<TOML
listen = "127.0.0.1:$PORT"
database = "state.db"
integrations = "integrations.toml"
flows_dir = "flows"
[builder]
callback_url = "http://127.0.0.1:9/events"
signing_secret = "schemathesis-signing-secret"
[api]
tokens = ["\${ST_API_TOKEN}"]
TOML
ST_API_TOKEN="$TOKEN" "$ROOT/target/debug/transbordo" --log-format json serve \
  --config "$WORK/service.toml" 2>"$WORK/serve.log" &
PID=$!
# Ready when /readyz answers (python3, not curl: CI has no curl).
python3 - "$PORT" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("transbordo serve did not become ready")
PY

"$ST" run "http://127.0.0.1:$PORT/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$EXAMPLES" --seed 1 --workers 2

# Belt and braces: the service's own log of every request it answered.
if grep -q '"status":5[0-9][0-9]' "$WORK/serve.log"; then
  echo "the service answered 5xx:" >&2
  grep '"status":5[0-9][0-9]' "$WORK/serve.log" >&2
  exit 1
fi
echo "schemathesis: no 5xx, every answer matches docs/openapi.json"
