#!/usr/bin/env bash
# The README's first command: builds transbordo, starts the provider sandbox on
# 127.0.0.1:8910, runs the example node for real against it (a LivePerson handoff),
# shows the conversation the "agent" now sees, and stops the sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/transbordo
log=$(mktemp)
"$bin" sandbox serve --port 8910 >"$log" 2>&1 &
sandbox=$!
trap 'kill "$sandbox" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 50); do
  "$bin" sandbox conversations >/dev/null 2>&1 && break
  sleep 0.1
done
echo "== transbordo run examples/node.json (against the sandbox)"
"$bin" run examples/node.json --context examples/context.json --integrations examples/sandbox-integrations.toml
echo
echo "== what the agent sees: transbordo sandbox conversations"
"$bin" sandbox conversations
