#!/usr/bin/env python3
"""A plain Python + Jinja2 render of the benchmark flows (scripts/gen-flow.py): the
reference transbordo's whole-process render is compared with (scripts/bench-vs-jinja2.sh).

It does what `transbordo render` does for these flows, the straightforward way: split each
string at `<? ?>`, compile each distinct expression once with Jinja2 (`$x` becomes
`context.x`), evaluate it against the store as it is when the action runs, apply the typed
whole-value rule, run `send_message` and `set_variables`, and print the document.

usage: jinja2_render.py FLOW CONTEXT [--compact]
"""
import json
import re
import sys

import jinja2

SEGMENT = re.compile(r"<\?(.*?)\?>", re.S)
VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def main():
    flow = json.load(open(sys.argv[1], encoding="utf-8"))
    ctx = json.load(open(sys.argv[2], encoding="utf-8"))
    compact = "--compact" in sys.argv[3:]
    env = jinja2.Environment()
    compiled = {}
    store = {"contact": ctx.get("contact", {}), "context": ctx.get("context", {})}

    def expr(src):
        e = compiled.get(src)
        if e is None:
            e = compiled[src] = env.compile_expression(VAR.sub(r"context.\1", src))
        return e

    def text_of(v):
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return v
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        if isinstance(v, (int, float)):
            return str(v)
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)

    def render(v):
        if isinstance(v, str):
            if "<?" not in v:
                return v
            parts = SEGMENT.split(v)
            if len(parts) == 3 and not parts[0].strip() and not parts[2].strip():
                out = expr(parts[1])(**store)
                return None if isinstance(out, jinja2.Undefined) else out
            return "".join(text_of(expr(p)(**store)) if i % 2 else p for i, p in enumerate(parts))
        if isinstance(v, list):
            return [render(x) for x in v]
        if isinstance(v, dict):
            return {k: render(x) for k, x in v.items()}
        return v

    messages = []
    for i, action in enumerate(flow):
        params = render(action.get("parameters", {}))
        if action["name"] == "send_message":
            messages.append({"action_index": i, "source": "send_message",
                             "message": {"type": "text", "text": params["text"]}})
        elif action["name"] == "set_variables":
            store["context"].update(params.get("context", {}))
            store["contact"].update(params.get("contact", {}))
    doc = {"messages": messages, "requests": [], "context": store["context"],
           "contact": store["contact"], "warnings": []}
    if compact:
        json.dump(doc, sys.stdout, ensure_ascii=False, separators=(",", ":"))
    else:
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
