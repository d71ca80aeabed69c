#!/usr/bin/env bash
# Whole-process render of large flows: `transbordo render` against a plain Python + Jinja2
# implementation (scripts/jinja2_render.py), in the same run, on the same machine.
# Generates the flows (scripts/gen-flow.py), runs each command RUNS times (default 5),
# prints the median wall time, the peak RSS and the ratio. Installs Jinja2 when missing.
#
#   bash scripts/bench-vs-jinja2.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
python3 -c 'import jinja2' 2>/dev/null || python3 -m pip install --quiet jinja2
cargo build --release --quiet --bin transbordo
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 scripts/gen-flow.py repeated 40000 > "$dir/repeated.json"
python3 scripts/gen-flow.py distinct 40000 > "$dir/distinct.json"
cat > "$dir/context.json" <<'JSON'
{"contact": {"name": "Ana", "cpf": "123.456.789-00", "extra": {"plano": "gold"}},
 "context": {"a": 1, "tag": "vip"}}
JSON
python3 - "$dir" "$runs" <<'PY'
import os, statistics, subprocess, sys, time
d, runs = sys.argv[1], int(sys.argv[2])

def measure(cmd):
    walls, rss = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        walls.append(time.perf_counter() - t)
        if status != 0:
            sys.exit(f"failed: {' '.join(cmd)}")
        rss = max(rss, ru.ru_maxrss)
    return statistics.median(walls), rss / 1024

print(f"{'flow':<34} {'command':<28} {'wall (median)':>13} {'peak RSS':>10}")
for name, flags in [("repeated", []), ("repeated", ["--compact"]), ("distinct", []), ("distinct", ["--compact"])]:
    flow, ctx = f"{d}/{name}.json", f"{d}/context.json"
    size = os.path.getsize(flow) / 1e6
    t_ours, m_ours = measure(["target/release/transbordo", "render", flow, "--context", ctx, *flags])
    t_py, m_py = measure(["python3", "scripts/jinja2_render.py", flow, ctx, *flags])
    label = f"{name} 40,000 actions, {size:.1f} MB"
    style = " ".join(flags) or "pretty"
    print(f"{label:<34} {'transbordo render ' + style:<28} {t_ours:>12.3f}s {m_ours:>8.1f}MB")
    print(f"{'':<34} {'python3 + Jinja2 ' + style:<28} {t_py:>12.3f}s {m_py:>8.1f}MB")
    print(f"{'':<34} {'ratio transbordo / Jinja2':<28} {t_ours / t_py:>13.2f}")
PY
