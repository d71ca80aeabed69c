#!/usr/bin/env bash
# Load on `transbordo serve` (not a test; the README's table comes from it): N LivePerson
# handoffs against the in-process sandbox, N user messages and N agent messages (signed
# webhooks, relayed to the builder), then N user closes, C requests at a time,
# through 1 replica on SQLite and 1 and 3 replicas on PostgreSQL. Prints one Markdown
# table row per setup (handoffs/s, /run p50/p99, user messages/s (/messages p99), agent
# messages/s (webhook p99 / webhook-to-builder-event p99), closes/s, /close p50/p99, endings/s
# until every live_chat_ended reached the builder, RSS per open live chat, peak RSS of
# the replicas together, CPU ms per operation of the replicas / their PostgreSQL
# backends / the load generator). See examples/load_service.rs.
#
#   bash scripts/load-service.sh [N] [C]     (PostgreSQL: TRANSBORDO_TEST_DATABASE_URL)
#   SETUPS="sqlite pg1" TRANSBORDO_BIN=/work/main/target/release/transbordo bash scripts/load-service.sh
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
c="${2:-64}"
pg="${TRANSBORDO_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo build --release --quiet --bin transbordo --example load_service
bin=target/release/examples/load_service
echo "| store | replicas | N | handoffs/s | /run p50 / p99 ms | user msgs/s (p99 ms) | agent msgs/s (webhook / to builder p99 ms) | closes/s | /close p50 / p99 ms | endings/s | RSS per open live chat | peak RSS | CPU ms/op (replicas / PostgreSQL / load) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
# SETUPS picks the rows (default all three); TRANSBORDO_BIN another transbordo build;
# TRANSBORDO_LOAD_CONNECTIONS the replicas' database_connections (PostgreSQL);
# TRANSBORDO_LOAD_WORKER_THREADS each replica's runtime threads.
for setup in ${SETUPS:-sqlite pg1 pg3}; do
    case "$setup" in
        sqlite) "$bin" sqlite 1 "$n" "$c" ;;
        pg1) "$bin" "$pg" 1 "$n" "$c" ;;
        pg3) "$bin" "$pg" 3 "$n" "$c" ;;
        *) echo "unknown setup $setup (sqlite, pg1, pg3)" >&2; exit 2 ;;
    esac
done
