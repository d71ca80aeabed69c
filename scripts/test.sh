#!/usr/bin/env bash
# The test command from the README: every test, doc tests included, with snapshots
# compared (never written) so a changed output fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export INSTA_UPDATE="${INSTA_UPDATE:-no}"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --all-features --no-fail-fast
else
  cargo test --all-features --no-fail-fast --lib --bins --tests
fi
cargo test --all-features --doc
