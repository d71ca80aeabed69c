#!/usr/bin/env python3
"""Generates large flows for the load/render benchmarks (issue: the engine at production sizes).

  gen-flow.py repeated N   N actions, send_message and set_variables alternating, the same
                            three expressions repeated (~115 bytes of JSON per action)
  gen-flow.py distinct N   N actions whose expressions are all distinct (`contact.name + ' #i'`,
                            `$a + i`, ...; 2.5 per action)
  gen-flow.py bytes MODE B  the smallest flow of MODE at least B bytes long

Prints the flow (an actions array, one action per line) to stdout.
"""
import json
import sys


def action(mode, i):
    if mode == "repeated":
        if i % 2 == 0:
            return {"name": "send_message",
                    "parameters": {"text": "Olá <? contact.name ?>, plano <? contact.extra.plano ?> #17"}}
        return {"name": "set_variables",
                "parameters": {"context": {"a": "<? $a + 1 ?>", "t": "<? $tag ?>-<? contact.cpf ?>"}}}
    if i % 2 == 0:
        return {"name": "send_message",
                "parameters": {"text": f"<? contact.name + ' #{i}' ?>"}}
    return {"name": "set_variables",
            "parameters": {"context": {"a": f"<? $a + {i} ?>", "b": f"<? contact.cpf + '-{i}' ?>",
                                       "c": f"<? $tag + '-{i}' ?>", "d": f"<? contact.extra.plano + ' {i}' ?>"}}}


def dump(mode, i):
    # The distinct flow is written compactly so that 100,000 expressions fit in ~4.8 MB.
    sep = (",", ":") if mode == "distinct" else (", ", ": ")
    return json.dumps(action(mode, i), ensure_ascii=False, separators=sep)


def write(mode, n, out):
    out.write("[\n")
    for i in range(n):
        out.write(dump(mode, i))
        out.write(",\n" if i + 1 < n else "\n")
    out.write("]\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] in ("repeated", "distinct"):
        write(sys.argv[1], int(sys.argv[2]), sys.stdout)
    elif len(sys.argv) == 4 and sys.argv[1] == "bytes":
        mode, target = sys.argv[2], int(sys.argv[3])
        per = sum(len(dump(mode, i).encode()) + 2 for i in range(1000)) / 1000
        write(mode, max(2, int(target / per) + 1), sys.stdout)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
