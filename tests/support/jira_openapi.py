"""Jira's published REST schema, cut down to what errorgate sends, for the loopback Jira stub.

``python -m tests.support.jira_openapi SPEC.json`` extracts the request-body component schemas
the stub checks (and everything they reference) from Atlassian's published OpenAPI document
(``https://developer.atlassian.com/cloud/jira/platform/swagger-v3.v3.json``) into
``tests/support/jira_openapi_subset.json``. The stored copy came from the nightly mirror
github.com/salto-io/jira-swaggers, ``platform-swagger.v3.json`` at commit
e9edd0efc751bbc5b2a2c33f8755f9ed04e14158 (2022-07-17); its source is written into the file.

The document describes ``/rest/api/3``; errorgate talks ``/rest/api/2`` through the ``jira``
client. Both versions take the same request beans (IssueUpdateDetails, LinkIssueRequestJsonBean);
they differ in rich-text values (v3: Atlassian Document Format, v2: wiki text), which these
schemas leave untyped (``fields`` is a free map, ``Comment.body`` has no type)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import validators

SUBSET = Path(__file__).with_name("jira_openapi_subset.json")
# The bodies errorgate sends: create issue (POST /issue), link issues (POST /issueLink) and a
# transition (POST /issue/{key}/transitions, IssueUpdateDetails with ``transition``); the issue
# read back by a poll and carried by a webhook (IssueBean, to check the stub's own replies).
ROOTS = ("IssueUpdateDetails", "LinkIssueRequestJsonBean", "IssueBean", "StatusDetails")
SOURCE = {
    "published": "https://developer.atlassian.com/cloud/jira/platform/swagger-v3.v3.json",
    "repo": "github.com/salto-io/jira-swaggers",
    "path": "platform-swagger.v3.json",
    "commit": "e9edd0efc751bbc5b2a2c33f8755f9ed04e14158",
}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def extract(spec: dict[str, Any], roots: tuple[str, ...] = ROOTS) -> dict[str, Any]:
    """The named component schemas and every schema they reference, unchanged."""
    schemas = spec["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep[name] = schemas[name]
            todo.extend(_refs(schemas[name]))
    return {
        "$comment": "Extracted by tests/support/jira_openapi.py from Jira's published OpenAPI document; "
        "do not edit by hand.",
        "source": {**SOURCE, "info_version": spec["info"]["version"]},
        "components": {"schemas": dict(sorted(keep.items()))},
    }


def _read_only(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    # OpenAPI marks response-only properties readOnly: a request that sends one is wrong.
    if value is True:
        yield jsonschema.ValidationError("is read-only: a request must not send it")


RequestValidator = validators.extend(jsonschema.Draft7Validator, {"readOnly": _read_only})


@cache
def _subset() -> dict[str, Any]:
    return dict(json.loads(SUBSET.read_text()))


def request_errors(bean: str, body: Any) -> list[str]:
    """Where ``body`` breaks Jira's published schema for ``bean`` ("path: message"), as a
    request: read-only properties count as errors."""
    doc = _subset()
    schema = {"$ref": f"#/components/schemas/{bean}", "components": doc["components"]}
    out = []
    for err in RequestValidator(schema).iter_errors(body):
        out.append(f"{'.'.join(map(str, err.absolute_path)) or '<body>'}: {err.message}")
    return out


def response_errors(bean: str, body: Any) -> list[str]:
    doc = _subset()
    schema = {"$ref": f"#/components/schemas/{bean}", "components": doc["components"]}
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(body)
    ]


if __name__ == "__main__":
    subset = extract(json.loads(Path(sys.argv[1]).read_text()))
    SUBSET.write_text(json.dumps(subset, indent=1, sort_keys=False) + "\n")
    print(f"{SUBSET}: {len(subset['components']['schemas'])} schemas")
