#!/usr/bin/env python3
"""Checks schemas/flow.schema.json (and flow-test.schema.json) with an independent
validator, Python's `jsonschema` (draft 2020-12):

- every flow in examples/ and every `flow` of tests/fixtures/flows/*.json (the seed
  examples among them) is valid;
- an unknown action, a misspelt parameter, a wrong type and other mistakes are not;
- templated values are accepted where a number or an object is expected;
- examples/*.test.json and *.test.toml are valid flow test files.

Run from anywhere: `python3 scripts/validate-schema.py`. Exit 0 when all hold.
"""
import copy
import json
import pathlib
import sys

try:
    import jsonschema
except ImportError:
    sys.exit("python3 jsonschema is not installed: pip install jsonschema")

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Files in examples/ that are not flows.
NOT_FLOWS = {"context.json", "service-run.json"}

failures = []


def validator(name):
    schema = json.loads((ROOT / "schemas" / name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft202012Validator, f"{name}: not draft 2020-12 ({cls})"
    cls.check_schema(schema)
    return cls(schema)


flow = validator("flow.schema.json")
flow_test = validator("flow-test.schema.json")


def must_be_valid(v, doc, what):
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        failures.append(f"{what}: should be valid, but at /{'/'.join(map(str, best.absolute_path))}: {best.message}")


def must_be_invalid(v, doc, what):
    if v.is_valid(doc):
        failures.append(f"{what}: should be invalid, but the schema accepts it")


valid = 0
for p in sorted((ROOT / "examples").glob("*.json")):
    if p.name in NOT_FLOWS or p.name.endswith(".test.json"):
        continue
    must_be_valid(flow, json.loads(p.read_text(encoding="utf-8")), f"examples/{p.name}")
    valid += 1
for p in sorted((ROOT / "tests/fixtures/flows").glob("*.json")):
    must_be_valid(flow, json.loads(p.read_text(encoding="utf-8"))["flow"], f"tests/fixtures/flows/{p.name}")
    valid += 1
for p in sorted((ROOT / "examples").glob("*.test.json")):
    must_be_valid(flow_test, json.loads(p.read_text(encoding="utf-8")), f"examples/{p.name}")
try:
    import tomllib

    for p in sorted((ROOT / "examples").glob("*.test.toml")):
        must_be_valid(flow_test, tomllib.loads(p.read_text(encoding="utf-8")), f"examples/{p.name}")
except ImportError:  # Python < 3.11: no TOML reader in the standard library.
    pass

lp = {"name": "start_live_chat", "parameters": {"integration_id": 7, "skill_id": "1589664150"}}


def with_params(action, **params):
    a = copy.deepcopy(action)
    a["parameters"].update(params)
    return [a]


# Templated values where other types are expected.
for what, doc in {
    "templated integration_id": with_params(lp, integration_id="<? $integration ?>"),
    "templated campaign_info": with_params(lp, campaign_info="<? $campaign ?>"),
    "templated transcript": with_params(lp, transcript="<? $history ?>"),
    "templated transcript entry field": with_params(lp, transcript=[{"from": "<? $who ?>", "text": "<? input.text ?>"}]),
    "templated timeout": [{"name": "http_request", "parameters": {"config": {"url": "https://x.example", "timeout": "<? $t ?>"}}}],
    "templated tags": with_params({"name": "start_live_chat", "parameters": {"integration_id": "1", "subject": "s"}}, tags="<? $tags ?>"),
    "a node": {"context": {"n": "<? 1 + 1 ?>"}, "actions": [lp], "output": [{"default": {"type": "text", "text": "oi"}}]},
    "a transcript": with_params(lp, transcript=[{"from": "user", "text": "oi", "at": "2026-11-26T10:02:11-03:00"}], transcript_max_messages=20),
}.items():
    must_be_valid(flow, doc, what)

# Mistakes the schema must catch.
for what, doc in {
    "an unknown action": [{"name": "start_live_chats", "parameters": {"integration_id": 7}}],
    "a misspelt parameter": with_params(lp, skil_id="1"),
    "a misspelt http_request config key": [{"name": "http_request", "parameters": {"config": {"url": "https://x.example", "methd": "GET"}}}],
    "a wrong type (integration_id: true)": with_params(lp, integration_id=True),
    "a wrong type (tags: a string)": with_params(lp, tags="vip"),
    "a wrong type (timeout: text with a template inside)": [{"name": "http_request", "parameters": {"config": {"url": "https://x.example", "timeout": "5 <? $s ?>"}}}],
    "a wrong type (transcript_max_messages: 0)": with_params(lp, transcript_max_messages=0),
    "a transcript entry from an agent": with_params(lp, transcript=[{"from": "agent", "text": "oi"}]),
    "a transcript entry without text": with_params(lp, transcript=[{"from": "user"}]),
    "start_live_chat without integration_id": [{"name": "start_live_chat", "parameters": {"skill_id": "1"}}],
    "set_variables with neither context nor contact": [{"name": "set_variables", "parameters": {}}],
    "send_message with neither text nor type": [{"name": "send_message", "parameters": {"txt": "oi"}}],
    "an unknown key in an action": [{"name": "send_message", "parameters": {"text": "oi"}, "result_var": "x"}],
    "an unknown key in a node": {"actions": [lp], "outputs": []},
    "a node whose actions is an object": {"actions": lp},
}.items():
    must_be_invalid(flow, doc, what)

for what, doc in {
    "a test file with a misspelt key": {"flow": "f.json", "case": []},
    "a case that checks nothing": {"flow": "f.json", "cases": [{"name": "x"}]},
    "an unknown expect key": {"flow": "f.json", "cases": [{"name": "x", "expect": {"request": []}}]},
}.items():
    must_be_invalid(flow_test, doc, what)

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"schemas ok: {valid} flows valid, mistakes rejected")
