#!/usr/bin/env bash
# Whole-process `transbordo check` at the sizes builders hold (80 KB, 1 MB, 5 MB, 20 MB;
# the repeated- and distinct-expression flows of scripts/gen-flow.py): median wall time,
# CPU time, throughput and peak RSS over RUNS runs (default 5).
#
#   bash scripts/bench-load.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --quiet --bin transbordo
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" "$runs" <<'PY'
import os, statistics, subprocess, sys, time
d, runs = sys.argv[1], int(sys.argv[2])
print(f"{'flow':<10} {'size':>8} {'wall':>8} {'cpu':>8} {'MB/s (wall)':>12} {'peak RSS':>10}")
for mode in ["repeated", "distinct"]:
    for label, size in [("80KB", 80_000), ("1MB", 1_000_000), ("5MB", 5_000_000), ("20MB", 20_000_000)]:
        path = f"{d}/{mode}-{label}.json"
        with open(path, "w") as f:
            subprocess.run(["python3", "scripts/gen-flow.py", "bytes", mode, str(size)], stdout=f, check=True)
        walls, cpus, rss = [], [], 0
        for _ in range(runs):
            t = time.perf_counter()
            p = subprocess.Popen(["target/release/transbordo", "check", path], stdout=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            walls.append(time.perf_counter() - t)
            cpus.append(ru.ru_utime + ru.ru_stime)
            rss = max(rss, ru.ru_maxrss)
        real = os.path.getsize(path)
        w, c = statistics.median(walls), statistics.median(cpus)
        print(f"{mode:<10} {real / 1e6:>6.2f}MB {w:>7.3f}s {c:>7.3f}s {real / 1e6 / w:>12.1f} {rss / 1024:>8.1f}MB")
PY
