"""Re-creates the schema subsets in this folder from the vendors' published API descriptions.

    python tests/support/vendor_schemas/extract.py pagerduty PATH/TO/api-schema/reference/REST/openapiv3.json COMMIT
    python tests/support/vendor_schemas/extract.py opsgenie PATH/TO/opsgenie-oas/swagger.json COMMIT

Only the request bodies ``errorgate oncall sync`` sends and the definitions they reference
(transitively) are kept, unchanged, so the stubs validate against the vendor's own text."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SOURCES = {
    "pagerduty": (
        "github.com/PagerDuty/api-schema",
        "reference/REST/openapiv3.json",
        "#/components/schemas/",
    ),
    "opsgenie": ("github.com/opsgenie/opsgenie-oas", "swagger.json", "#/definitions/"),
}
# (method, path) -> JSON pointer of the request body schema inside the vendor document.
REQUESTS = {
    "pagerduty": {
        f"{m} {p}": f"/paths/{p.replace('/', '~1')}/{m.lower()}/requestBody/content/application~1json/schema"
        for m, p in [
            ("POST", "/schedules"),
            ("PUT", "/schedules/{id}"),
            ("POST", "/schedules/{id}/overrides"),
            ("POST", "/escalation_policies"),
            ("PUT", "/escalation_policies/{id}"),
        ]
    },
    "opsgenie": {
        "POST /v2/schedules": "/definitions/CreateSchedulePayload",
        "PATCH /v2/schedules/{identifier}": "/definitions/UpdateSchedulePayload",
        "POST /v2/schedules/{identifier}/rotations": "/definitions/CreateScheduleRotationPayload",
        "PATCH /v2/schedules/{identifier}/rotations/{id}": "/definitions/UpdateScheduleRotationPayload",
        "POST /v2/schedules/{identifier}/overrides": "/definitions/CreateScheduleOverridePayload",
        "PUT /v2/schedules/{identifier}/overrides/{alias}": "/definitions/UpdateScheduleOverridePayload",
        "POST /v2/escalations": "/definitions/CreateEscalationPayload",
        "PATCH /v2/escalations/{identifier}": "/definitions/UpdateEscalationPayload",
    },
}


def pointer(doc: Any, ptr: str) -> Any:
    for part in ptr.lstrip("/").split("/"):
        doc = doc[part.replace("~1", "/").replace("~0", "~")]
    return doc


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def main(vendor: str, path: str, commit: str) -> None:
    repo, file, prefix = SOURCES[vendor]
    doc = json.loads(Path(path).read_text())
    requests = {k: pointer(doc, p) for k, p in REQUESTS[vendor].items()}
    names: set[str] = set()
    todo = set().union(*(refs(s) for s in requests.values()))
    while todo:
        name = todo.pop().removeprefix(prefix).split("/")[0]
        if name not in names:
            names.add(name)
            todo |= refs(pointer(doc, prefix.lstrip("#") + name))
    definitions = {n: pointer(doc, prefix.lstrip("#") + n) for n in sorted(names)}
    container: dict[str, Any] = (
        {"components": {"schemas": definitions}} if vendor == "pagerduty" else {"definitions": definitions}
    )
    out = {
        "$comment": f"subset of {repo} {file} at commit {commit}, unchanged; see extract.py",
        "requests": requests,
        **container,
    }
    (HERE / f"{vendor}.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
