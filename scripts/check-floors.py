#!/usr/bin/env python3
"""Checks the layering of the top-level modules of `src/` (issue 16).

Reads every `src/**/*.rs`, maps each file to its top-level module (`src/flow/load.rs`
-> `flow`; `src/lib.rs` and `src/main.rs` are the roof and may use anything), and
collects every reference from one top-level module to another:

- `use crate::x::...` (use trees included: `use crate::{a::X, b::Y}`),
- `crate::x::...` / `$crate::x::...` anywhere in code (comments and string literals
  are blanked first, so doc links and messages do not count),
- `super::...` chains that climb out of the top-level module (inline `mod m { }`
  blocks count as one level each),
- `crate::Name` where `Name` is re-exported by `lib.rs` (`pub use flow::Flow`) counts
  as a reference to the module it comes from.

Prints the graph as `a -> b (count, first file:line)`, finds cycles between top-level
modules (Tarjan's strongly connected components) and names each one with every edge
inside it. With `--floors a,b,c` (lowest floor first) it also lists every reference
that points from a lower floor to a higher one.

Exit status: 0 when the graph is acyclic (and, with `--floors`, no edge points upward),
1 when a cycle (or an upward edge) is found, 2 on a usage error.

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict, deque

ROOF = "(roof)"
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


# ---------------------------------------------------------------------------
# Lexing: blank comments, strings and char literals, keep offsets and newlines.
# ---------------------------------------------------------------------------


def blank(src: str) -> str:
    """Returns `src` with comments and string/char literal contents replaced by spaces.

    Newlines are kept so that line numbers stay right; the quotes of a string stay so
    that the code around it still reads as code.
    """
    out = list(src)
    n = len(src)
    i = 0

    def wipe(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        nxt = src[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif c == "/" and nxt == "*":
            # Rust block comments nest.
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            wipe(i, j)
            i = j
        elif c in "rb" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            # r"..", r#".."#, b"..", br#".."#, b'x'
            m = re.compile(r'(b?r)(#*)"|b"|b\'').match(src, i)
            if not m:
                i += 1
                continue
            tok = m.group(0)
            if tok == 'b"':
                i = skip_quoted(src, i + 1, '"', wipe)
            elif tok == "b'":
                i = skip_quoted(src, i + 1, "'", wipe)
            else:
                hashes = m.group(2)
                end = src.find('"' + hashes, m.end())
                end = n if end < 0 else end
                wipe(m.end(), end)
                i = end + 1 + len(hashes)
        elif c == '"':
            i = skip_quoted(src, i, '"', wipe)
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime/label ('a, 'static).
            m = re.compile(r"'(\\(u\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|.)|[^\\'\n])'").match(src, i)
            if m:
                wipe(i + 1, m.end() - 1)
                i = m.end()
            else:
                i += 1
        elif c.isalnum() or c == "_":
            # Skip the rest of an identifier so `br` inside `abr"` is not a raw string.
            j = i
            while j < n and (src[j].isalnum() or src[j] == "_"):
                j += 1
            i = j
        else:
            i += 1
    return "".join(out)


def skip_quoted(src: str, i: int, q: str, wipe) -> int:
    """Blanks the literal whose opening quote is at `i`; returns the offset after it."""
    n = len(src)
    j = i + 1
    while j < n and src[j] != q:
        j += 2 if src[j] == "\\" else 1
    wipe(i + 1, j)
    return j + 1


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------

PATH_START = re.compile(r"(?<![A-Za-z0-9_])(\$?crate|super)\s*::")
MOD_OPEN = re.compile(r"(?<![A-Za-z0-9_])mod\s+(" + IDENT + r")\s*\{")
CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]\s*(pub(\s*\([^)]*\))?\s+)?$")


def parse_path(code: str, i: int) -> tuple[list[list[str]], int]:
    """Parses a path (or a use tree) starting at `i`; returns its expansions and end.

    `crate::a::{b::C, d}` gives `[[crate, a, b, C], [crate, a, d]]`. Generic arguments
    and anything else stop the path where they start.
    """
    segs: list[str] = []
    n = len(code)
    while True:
        m = re.compile(r"\s*(\$?" + IDENT + r"|\*)").match(code, i)
        if not m:
            break
        segs.append(m.group(1))
        i = m.end()
        m = re.compile(r"\s*::\s*").match(code, i)
        if not m:
            return [segs], i
        i = m.end()
        if i < n and code[i] == "{":
            # A use tree: parse each branch, separated by commas.
            i += 1
            out: list[list[str]] = []
            while True:
                m = re.compile(r"\s*\}").match(code, i)
                if m:
                    return out or [segs], m.end()
                subs, i = parse_path(code, i)
                out.extend(segs + s for s in subs)
                m = re.compile(r"\s*(as\s+" + IDENT + r"\s*)?,?").match(code, i)
                i = m.end() if m else i
                if i >= n:
                    return out, i
                if not re.compile(r"\s*(\}|\$?" + IDENT + r"|\*)").match(code, i):
                    return out, i
    return [segs], i


def module_path(rel: str) -> list[str]:
    """`flow/load.rs` -> [flow, load]; `flow/mod.rs` -> [flow]; `lib.rs` -> []."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return []
    return parts


class Ref:
    """One reference from a file to another top-level module."""

    __slots__ = ("src", "dst", "file", "line", "path", "test")

    def __init__(self, src, dst, file, line, path, test):
        self.src, self.dst, self.file, self.line = src, dst, file, line
        self.path, self.test = path, test

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def root_reexports(lib_code: str, top: set[str]) -> dict[str, str]:
    """Names `lib.rs` re-exports (`pub use flow::{Flow, ...}`) -> their module."""
    names: dict[str, str] = {}
    for m in re.finditer(r"(?<![A-Za-z0-9_])pub\s+use\s+", lib_code):
        for p in parse_path(lib_code, m.end())[0]:
            if p and p[0] == "crate":
                p = p[1:]
            if len(p) >= 2 and p[0] in top:
                names[p[-1]] = p[0]
    return names


def scan_file(rel: str, code: str, top: set[str], reexp: dict[str, str]) -> list[Ref]:
    base = module_path(rel)
    src_mod = base[0] if base else ROOF
    line_starts = [0] + [k + 1 for k, ch in enumerate(code) if ch == "\n"]

    def line_of(off: int) -> int:
        lo, hi = 0, len(line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if line_starts[mid] <= off:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    # Inline modules: where each `mod m {` opens, its name and whether it is cfg(test).
    opens = {}
    for m in MOD_OPEN.finditer(code):
        brace = m.end() - 1
        is_test = bool(CFG_TEST.search(code[max(0, m.start() - 200) : m.start()]))
        opens[brace] = (m.group(1), is_test)
    starts = {m.start(): m for m in PATH_START.finditer(code)}

    refs: list[Ref] = []
    stack: list[tuple[str, bool, int]] = []  # (name, is_test, depth inside its braces)
    depth = 0
    skip_until = -1
    for off, ch in enumerate(code):
        if off in starts and off >= skip_until:
            paths, end = parse_path(code, off)
            skip_until = end
            inline = [s[0] for s in stack]
            is_test = any(s[1] for s in stack)
            for p in paths:
                dst = resolve(p, base + inline, top, reexp)
                if dst is not None and dst != src_mod:
                    refs.append(Ref(src_mod, dst, rel, line_of(off), "::".join(p), is_test))
        if ch == "{":
            depth += 1
            if off in opens:
                name, t = opens[off]
                stack.append((name, t, depth))
        elif ch == "}":
            if stack and stack[-1][2] == depth:
                stack.pop()
            depth -= 1
    return refs


def resolve(p: list[str], here: list[str], top: set[str], reexp: dict[str, str]):
    """The top-level module a path names, `ROOF` for a root item, None if unknown."""
    if not p:
        return None
    if p[0] in ("crate", "$crate"):
        rest = p[1:]
    else:
        cur = list(here)
        k = 0
        while k < len(p) and p[k] == "super":
            if not cur:
                return None  # climbs above the crate: not valid Rust
            cur.pop()
            k += 1
        if cur:
            return cur[0]
        rest = p[k:]
    if not rest:
        return None
    head = rest[0]
    if head in top:
        return head
    if head in reexp:
        return reexp[head]
    return ROOF


# ---------------------------------------------------------------------------
# Graph
# ---------------------------------------------------------------------------


def tarjan(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components (iterative Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    st: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succ.get(root, [])))]
        index[root] = low[root] = counter
        counter += 1
        st.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    st.append(w)
                    on.add(w)
                    work.append((w, iter(succ.get(w, []))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = st.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def shortest_path(succ, a: str, b: str, allowed: set[str]):
    """Shortest path a ... b inside `allowed` (BFS), as a node list, or None."""
    prev = {a: None}
    q = deque([a])
    while q:
        v = q.popleft()
        if v == b:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in sorted(succ.get(v, [])):
            if w in allowed and w not in prev:
                prev[w] = v
                q.append(w)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Import graph of the top-level modules of src/; cycles and upward edges."
    )
    ap.add_argument("--src", default=None, help="the src/ folder (default: ../src from here)")
    ap.add_argument(
        "--floors",
        help="comma-separated modules, lowest floor first (`template,flow,...`); "
        "every reference from a floor to a higher one is listed and fails the check",
    )
    ap.add_argument("--no-tests", action="store_true", help="ignore `#[cfg(test)] mod` blocks")
    ap.add_argument("--refs", action="store_true", help="list every reference, not just edges")
    args = ap.parse_args()

    src = args.src or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    src = os.path.normpath(src)
    if not os.path.isdir(src):
        print(f"check-floors: no such folder: {src}", file=sys.stderr)
        return 2

    files: list[str] = []
    for d, _, fs in os.walk(src):
        for f in fs:
            if f.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/"))
    files.sort()
    top = {module_path(f)[0] for f in files if module_path(f)}

    codes = {}
    for f in files:
        with open(os.path.join(src, f), encoding="utf-8") as fh:
            codes[f] = blank(fh.read())
    reexp = root_reexports(codes.get("lib.rs", ""), top)

    refs: list[Ref] = []
    for f in files:
        refs.extend(scan_file(f, codes[f], top, reexp))
    if args.no_tests:
        refs = [r for r in refs if not r.test]
    # The roof may use anything; a module naming a root item that is no re-export is
    # shown but takes no part in the cycles.
    refs = [r for r in refs if r.src != ROOF]

    edges: dict[tuple[str, str], list[Ref]] = defaultdict(list)
    for r in refs:
        edges[(r.src, r.dst)].append(r)

    print(f"# {len(files)} files, {len(top)} top-level modules, {len(refs)} cross-module references")
    print("# edges: a -> b (references, first file:line)")
    for (a, b), rs in sorted(edges.items()):
        tests = sum(r.test for r in rs)
        extra = f", {tests} in tests" if tests else ""
        print(f"{a} -> {b} ({len(rs)}{extra}, {rs[0].where()})")
        if args.refs:
            for r in rs:
                print(f"    {r.where()}  {r.path}{'  [test]' if r.test else ''}")

    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        if b != ROOF:
            succ[a].append(b)
    nodes = sorted(top)
    failed = False
    cyclic = [c for c in tarjan(nodes, succ) if len(c) > 1]
    if not cyclic:
        print("\nno cycle between top-level modules")
    for k, comp in enumerate(cyclic, 1):
        failed = True
        members = set(comp)
        print(f"\nCYCLE {k}: {len(comp)} modules: {', '.join(comp)}")
        inside = sorted(e for e in edges if e[0] in members and e[1] in members)
        print(f"  {len(inside)} edges inside it:")
        for a, b in inside:
            rs = edges[(a, b)]
            print(f"    {a} -> {b} ({len(rs)}, {rs[0].where()})")
        # Why each edge is in the cycle: the shortest way back from its head.
        print("  shortest cycle through each edge:")
        seen = set()
        for a, b in inside:
            back = shortest_path(succ, b, a, members)
            if back is None:
                continue
            cyc = [a] + back
            key = frozenset(zip(cyc, cyc[1:]))
            if key in seen:
                continue
            seen.add(key)
            print("    " + " -> ".join(cyc))

    if args.floors:
        order = [m.strip() for m in args.floors.split(",") if m.strip()]
        dup = {m for m in order if order.count(m) > 1}
        unknown = [m for m in order if m not in top]
        missing = sorted(top - set(order))
        if dup or unknown or missing:
            if dup:
                print(f"check-floors: named twice in --floors: {', '.join(sorted(dup))}", file=sys.stderr)
            if unknown:
                print(f"check-floors: not a top-level module: {', '.join(unknown)}", file=sys.stderr)
            if missing:
                print(f"check-floors: missing from --floors: {', '.join(missing)}", file=sys.stderr)
            return 2
        floor = {m: i for i, m in enumerate(order)}
        up = [(e, rs) for e, rs in sorted(edges.items()) if e[1] != ROOF and floor[e[1]] > floor[e[0]]]
        n_refs = sum(len(rs) for _, rs in up)
        print(f"\nfloors (lowest first): {' < '.join(order)}")
        if not up:
            print("no edge points upward")
        else:
            failed = True
            print(f"{len(up)} edges point upward ({n_refs} references):")
            for (a, b), rs in up:
                print(f"  {a} -> {b} ({len(rs)})")
                for r in rs:
                    print(f"    {r.where()}  {r.path}{'  [test]' if r.test else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
