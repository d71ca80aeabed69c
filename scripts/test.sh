#!/usr/bin/env bash
# The test command from the README: every test, doc tests included, with snapshots
# compared (never written) so a changed output fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export INSTA_UPDATE="${INSTA_UPDATE:-no}"
# PostgreSQL tests (the store suite's `::postgres` half, tests/service_pg.rs,
# tests/service_replicas.rs, the PostgreSQL crash test) need a server where they may create databases: by default
# postgres://postgres@127.0.0.1:5432/postgres, else TRANSBORDO_TEST_DATABASE_URL.
# Without one they pass as skipped (saying so on stderr); TRANSBORDO_REQUIRE_PG=1 (CI)
# makes them fail instead.
pg_url="${TRANSBORDO_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_hostport="$(printf '%s' "$pg_url" | sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#')"
pg_host="${pg_hostport%:*}"; pg_port="${pg_hostport##*:}"
[ "$pg_port" = "$pg_hostport" ] && pg_port=5432
if ! (exec 3<>"/dev/tcp/${pg_host:-127.0.0.1}/$pg_port") 2>/dev/null; then
  if [ "${TRANSBORDO_REQUIRE_PG:-}" = "1" ]; then
    echo "error: TRANSBORDO_REQUIRE_PG=1 but no PostgreSQL answers at $pg_host:$pg_port" >&2
    exit 1
  fi
  echo "note: no PostgreSQL at $pg_host:$pg_port: the PostgreSQL tests (service_store::*::postgres," >&2
  echo "      service_pg, service_replicas, service_crash ..._on_postgres) will pass as SKIPPED. Point them at a" >&2
  echo "      server with TRANSBORDO_TEST_DATABASE_URL=postgres://user@host:port/db" >&2
fi
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --all-features --no-fail-fast
else
  cargo test --all-features --no-fail-fast --lib --bins --tests
fi
cargo test --all-features --doc
