"""Loopback stand-ins for the parts of PagerDuty's REST API v2 and Opsgenie's REST API v2 that
``errorgate oncall sync`` calls. Neither vendor can run here, so these keep state (GETs return
what was written, with ids and extra fields the way the vendors add them), check the API token,
and validate every request body against the vendor's own published schema (the subsets in
``tests/support/vendor_schemas/``, extracted unchanged; see ``extract.py`` there for the repo,
path and commit). A body that fails is answered 400 and listed in ``violations``; a route that
does not exist is 404 and listed in ``unexpected``; nothing is stored for either.

    with PagerDutyStub(users={"alice@example.com": "PALICE1"}) as pd:
        ... sync to pd.url ...
        assert pd.violations == [] and pd.unexpected == []
        assert [(c.method, c.route) for c in pd.writes()] == [...]
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema

SCHEMAS = Path(__file__).parent / "vendor_schemas"


@dataclass
class Call:
    method: str
    path: str
    route: str  # "PUT /schedules/{id}"
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0


class Refused(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def _validator(vendor: str) -> Callable[[str, Any], list[str]]:
    doc = json.loads((SCHEMAS / f"{vendor}.json").read_text())

    def check(route: str, body: Any) -> list[str]:
        pointer = "#/requests/" + route.replace("~", "~0").replace("/", "~1")
        # OpenAPI 3.0 and Swagger 2.0 schema objects are JSON Schema draft 4 with extra keywords.
        validator = jsonschema.Draft4Validator({**doc, "$ref": pointer})
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
            for e in validator.iter_errors(body)
        ]

    return check


class _Stub:
    vendor = ""
    routes: list[tuple[str, str]] = []  # (method, template with {param}) served by self.<handler>

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.unexpected: list[str] = []
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.check = _validator(self.vendor)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                stub._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method != "GET" and 200 <= c.status < 300]

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):05d}"

    def authorized(self, headers: dict[str, str]) -> bool:
        raise NotImplementedError

    def _match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for m, template in self.routes:
            pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            found = re.match(pattern, path)
            if m == method and found:
                return f"{m} {template}", {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        method = h.command
        matched = self._match(method, parts.path)
        call = Call(method, parts.path, matched[0] if matched else "", query, headers, None)
        try:
            call.body = json.loads(raw) if raw else None
            status, body = self._answer(call, matched)
        except ValueError:
            status, body = 400, {"message": "body is not JSON"}
        call.status = status
        with self.lock:
            self.calls.append(call)
        payload = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _answer(self, call: Call, matched: tuple[str, dict[str, str]] | None) -> tuple[int, Any]:
        if not self.authorized(call.headers):
            return 401, self.error("unauthorized: missing or wrong API token")
        if matched is None:
            self.unexpected.append(f"{call.method} {call.path}")
            return 404, self.error(f"no route {call.method} {call.path}")
        route, params = matched
        if call.method in ("POST", "PUT", "PATCH"):
            problems = self.check(route, call.body)
            if problems:
                self.violations.append(f"{route}: " + "; ".join(problems))
                return 400, self.error("invalid request body", problems)
        handler = getattr(self, "h_" + re.sub(r"\W+", "_", route).strip("_").lower())
        try:
            with self.lock:
                return handler(call, **params)  # type: ignore[no-any-return]
        except Refused as e:
            self.violations.append(f"{route}: {e.body}")
            return e.status, e.body

    def error(self, message: str, errors: list[str] | None = None) -> Any:
        raise NotImplementedError


# ---------------------------------------------------------------------- PagerDuty REST API v2


class PagerDutyStub(_Stub):
    vendor = "pagerduty"
    routes = [
        ("GET", "/users"), ("GET", "/schedules"), ("POST", "/schedules"), ("GET", "/schedules/{id}"),
        ("PUT", "/schedules/{id}"), ("GET", "/schedules/{id}/overrides"), ("POST", "/schedules/{id}/overrides"),
        ("GET", "/escalation_policies"), ("POST", "/escalation_policies"), ("PUT", "/escalation_policies/{id}"),
    ]  # fmt: skip

    def __init__(self, users: dict[str, str], token: str = "pd-rest-t0ken") -> None:
        super().__init__()
        self.token = token
        self.users = {uid: {"id": uid, "type": "user", "email": mail, "name": mail.split("@")[0]}
                      for mail, uid in users.items()}  # fmt: skip
        self.schedules: dict[str, dict[str, Any]] = {}
        self.overrides: dict[str, list[dict[str, Any]]] = {}
        self.policies: dict[str, dict[str, Any]] = {}

    def authorized(self, headers: dict[str, str]) -> bool:
        if headers.get("accept") != "application/vnd.pagerduty+json;version=2":
            self.violations.append(f"Accept: {headers.get('accept')!r} is not PagerDuty's v2 media type")
        return headers.get("authorization") == f"Token token={self.token}"

    def error(self, message: str, errors: list[str] | None = None) -> Any:
        return {"error": {"message": message, "code": 2001, "errors": errors or []}}

    def _page(self, key: str, items: list[dict[str, Any]], call: Call) -> tuple[int, Any]:
        q = call.query.get("query", "").lower()
        found = [
            copy.deepcopy(i) for i in items if q in str(i.get("name", "")).lower() + str(i.get("email", ""))
        ]
        offset, limit = int(call.query.get("offset", 0)), int(call.query.get("limit", 25))
        page = found[offset : offset + limit]
        return 200, {
            key: page,
            "offset": offset,
            "limit": limit,
            "more": offset + limit < len(found),
            "total": None,
        }

    def _ref(self, ref: dict[str, Any], where: str) -> dict[str, Any]:
        known = {"user_reference": self.users, "schedule_reference": self.schedules}.get(ref["type"], {})
        if ref["id"] not in known:
            raise Refused(
                400, self.error("Invalid Input Provided", [f"{where}: {ref['type']} {ref['id']} not found"])
            )
        return {**ref, "summary": known[ref["id"]].get("name"), "self": f"{self.url}/x/{ref['id']}"}

    def _store_schedule(self, body: dict[str, Any], sid: str) -> dict[str, Any]:
        schedule = copy.deepcopy(body["schedule"])
        old = {layer["id"]: layer for layer in self.schedules.get(sid, {}).get("schedule_layers", [])}
        for i, layer in enumerate(schedule.get("schedule_layers", [])):
            if "id" in layer and layer["id"] not in old:
                raise Refused(400, self.error("Invalid Input Provided", [f"schedule_layers[{i}].id unknown"]))
            layer.setdefault("id", self.new_id("PL"))
            layer["users"] = [
                {"user": self._ref(u["user"], f"schedule_layers[{i}].users")} for u in layer["users"]
            ]
            layer.setdefault("restrictions", [])
        schedule.update(id=sid, summary=schedule.get("name"), self=f"{self.url}/schedules/{sid}")
        self.schedules[sid] = schedule
        return schedule

    def h_get_users(self, call: Call) -> tuple[int, Any]:
        return self._page("users", list(self.users.values()), call)

    def h_get_schedules(self, call: Call) -> tuple[int, Any]:
        brief = [{k: s[k] for k in ("id", "type", "name", "summary", "description", "time_zone", "self")}
                 for s in self.schedules.values()]  # fmt: skip
        return self._page("schedules", brief, call)

    def h_post_schedules(self, call: Call) -> tuple[int, Any]:
        return 201, {"schedule": self._store_schedule(call.body, self.new_id("PS"))}

    def h_get_schedules_id(self, call: Call, id: str) -> tuple[int, Any]:
        if id not in self.schedules:
            return 404, self.error("Not Found")
        return 200, {"schedule": copy.deepcopy(self.schedules[id])}

    def h_put_schedules_id(self, call: Call, id: str) -> tuple[int, Any]:
        if id not in self.schedules:
            return 404, self.error("Not Found")
        return 200, {"schedule": self._store_schedule(call.body, id)}

    def h_get_schedules_id_overrides(self, call: Call, id: str) -> tuple[int, Any]:
        if "since" not in call.query or "until" not in call.query:
            raise Refused(400, self.error("since and until are required"))
        since, until = (datetime.fromisoformat(call.query[k]) for k in ("since", "until"))
        found = [o for o in self.overrides.get(id, [])
                 if datetime.fromisoformat(o["end"]) > since and datetime.fromisoformat(o["start"]) < until]  # fmt: skip
        return 200, {"overrides": copy.deepcopy(found)}

    def h_post_schedules_id_overrides(self, call: Call, id: str) -> tuple[int, Any]:
        if id not in self.schedules:
            return 404, self.error("Not Found")
        made = []
        for o in call.body.get("overrides", []):
            stored = {
                **copy.deepcopy(o),
                "id": self.new_id("PO"),
                "user": self._ref(o["user"], "overrides.user"),
            }
            stored.pop("time_zone", None)
            self.overrides.setdefault(id, []).append(stored)
            made.append({"status": 201, "override": stored})
        return 201, made

    def _store_policy(self, body: dict[str, Any], pid: str) -> dict[str, Any]:
        policy = copy.deepcopy(body["escalation_policy"])
        for i, rule in enumerate(policy["escalation_rules"]):
            rule["id"] = self.new_id("PR")
            rule["targets"] = [self._ref(t, f"escalation_rules[{i}].targets") for t in rule["targets"]]
        policy.update(id=pid, summary=policy["name"], self=f"{self.url}/escalation_policies/{pid}",
                      services=[], teams=[], on_call_handoff_notifications="if_has_services")  # fmt: skip
        self.policies[pid] = policy
        return policy

    def h_get_escalation_policies(self, call: Call) -> tuple[int, Any]:
        return self._page("escalation_policies", list(self.policies.values()), call)

    def h_post_escalation_policies(self, call: Call) -> tuple[int, Any]:
        return 201, {"escalation_policy": self._store_policy(call.body, self.new_id("PE"))}

    def h_put_escalation_policies_id(self, call: Call, id: str) -> tuple[int, Any]:
        if id not in self.policies:
            return 404, self.error("Not Found")
        return 200, {"escalation_policy": self._store_policy(call.body, id)}


# ---------------------------------------------------------------------- Opsgenie REST API v2


class OpsgenieStub(_Stub):
    vendor = "opsgenie"
    routes = [
        ("GET", "/v2/schedules"), ("POST", "/v2/schedules"), ("PATCH", "/v2/schedules/{identifier}"),
        ("POST", "/v2/schedules/{identifier}/rotations"), ("PATCH", "/v2/schedules/{identifier}/rotations/{id}"),
        ("GET", "/v2/schedules/{identifier}/overrides"), ("POST", "/v2/schedules/{identifier}/overrides"),
        ("PUT", "/v2/schedules/{identifier}/overrides/{alias}"),
        ("GET", "/v2/escalations"), ("POST", "/v2/escalations"), ("PATCH", "/v2/escalations/{identifier}"),
    ]  # fmt: skip

    def __init__(self, users: list[str], key: str = "og-config-key") -> None:
        super().__init__()
        self.key = key
        self.users = set(users)
        self.schedules: dict[str, dict[str, Any]] = {}
        self.overrides: dict[str, dict[str, dict[str, Any]]] = {}
        self.escalations: dict[str, dict[str, Any]] = {}

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"GenieKey {self.key}"

    def error(self, message: str, errors: list[str] | None = None) -> Any:
        return {"message": message, "errors": errors or [], "took": 0.001, "requestId": "stub"}

    @staticmethod
    def ok(data: Any, result: str = "") -> Any:
        return {"result": result, "data": data, "took": 0.01, "requestId": "stub"}

    def _recipient(self, r: dict[str, Any], where: str) -> dict[str, Any]:
        if r["type"] == "user" and r.get("username") not in self.users:
            raise Refused(422, self.error(f"{where}: no user {r.get('username')!r}"))
        if r["type"] == "schedule" and not any(s["name"] == r.get("name") for s in self.schedules.values()):
            raise Refused(422, self.error(f"{where}: no schedule {r.get('name')!r}"))
        return {**r, "id": f"id-of-{r.get('username') or r.get('name')}"}

    def _rotation(self, body: dict[str, Any], rid: str, old: dict[str, Any] | None = None) -> dict[str, Any]:
        rotation = {**(old or {}), **copy.deepcopy(body), "id": rid}
        rotation["participants"] = [self._recipient(p, "participants") for p in rotation["participants"]]
        return rotation

    def _schedule(self, identifier: str, call: Call) -> dict[str, Any]:
        if call.query.get("identifierType", call.query.get("scheduleIdentifierType", "id")) != "id":
            raise Refused(400, self.error("the stub serves identifierType=id only"))
        if identifier not in self.schedules:
            raise Refused(404, self.error("Schedule not found"))
        return self.schedules[identifier]

    def h_get_v2_schedules(self, call: Call) -> tuple[int, Any]:
        expand = call.query.get("expand") == "rotation"
        data = [{k: v for k, v in s.items() if expand or k != "rotations"} for s in self.schedules.values()]
        return 200, {**self.ok(copy.deepcopy(data)), "expandable": ["rotation"]}

    def h_post_v2_schedules(self, call: Call) -> tuple[int, Any]:
        if any(s["name"] == call.body["name"] for s in self.schedules.values()):
            raise Refused(409, self.error("Schedule with this name already exists"))
        sid = self.new_id("sched-")
        rotations = [self._rotation(r, self.new_id("rot-")) for r in call.body.get("rotations", [])]
        self.schedules[sid] = {
            **copy.deepcopy(call.body),
            "id": sid,
            "ownerTeam": None,
            "rotations": rotations,
        }
        return 201, self.ok(
            {"id": sid, "name": call.body["name"], "enabled": call.body.get("enabled", True)}, "Created"
        )

    def h_patch_v2_schedules_identifier(self, call: Call, identifier: str) -> tuple[int, Any]:
        schedule = self._schedule(identifier, call)
        schedule.update(copy.deepcopy({k: v for k, v in call.body.items() if k != "rotations"}))
        return 200, self.ok({"id": identifier, "name": schedule["name"]}, "Updated")

    def h_post_v2_schedules_identifier_rotations(self, call: Call, identifier: str) -> tuple[int, Any]:
        schedule = self._schedule(identifier, call)
        rotation = self._rotation(call.body, self.new_id("rot-"))
        schedule["rotations"].append(rotation)
        return 201, self.ok({"id": rotation["id"], "name": rotation.get("name")}, "Created")

    def h_patch_v2_schedules_identifier_rotations_id(
        self, call: Call, identifier: str, id: str
    ) -> tuple[int, Any]:
        schedule = self._schedule(identifier, call)
        for i, old in enumerate(schedule["rotations"]):
            if old["id"] == id:
                schedule["rotations"][i] = self._rotation(call.body, id, old)
                return 200, self.ok({"id": id, "name": old.get("name")}, "Updated")
        raise Refused(404, self.error("Rotation not found"))

    def h_get_v2_schedules_identifier_overrides(self, call: Call, identifier: str) -> tuple[int, Any]:
        self._schedule(identifier, call)
        return 200, self.ok(copy.deepcopy(list(self.overrides.get(identifier, {}).values())))

    def h_post_v2_schedules_identifier_overrides(self, call: Call, identifier: str) -> tuple[int, Any]:
        self._schedule(identifier, call)
        alias = call.body.get("alias") or self.new_id("ovr-")
        stored = {
            **copy.deepcopy(call.body),
            "alias": alias,
            "user": self._recipient(call.body["user"], "user"),
        }
        self.overrides.setdefault(identifier, {})[alias] = stored
        return 201, self.ok({"alias": alias}, "Created")

    def h_put_v2_schedules_identifier_overrides_alias(
        self, call: Call, identifier: str, alias: str
    ) -> tuple[int, Any]:
        self._schedule(identifier, call)
        if alias not in self.overrides.get(identifier, {}):
            raise Refused(404, self.error("Override not found"))
        stored = {
            **copy.deepcopy(call.body),
            "alias": alias,
            "user": self._recipient(call.body["user"], "user"),
        }
        self.overrides[identifier][alias] = stored
        return 200, self.ok({"alias": alias}, "Updated")

    def _rules(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**copy.deepcopy(r), "recipient": self._recipient(r["recipient"], f"rules[{i}].recipient")}
                for i, r in enumerate(rules)]  # fmt: skip

    def h_get_v2_escalations(self, call: Call) -> tuple[int, Any]:
        return 200, self.ok(copy.deepcopy(list(self.escalations.values())))

    def h_post_v2_escalations(self, call: Call) -> tuple[int, Any]:
        eid = self.new_id("esc-")
        self.escalations[eid] = {
            **copy.deepcopy(call.body),
            "id": eid,
            "rules": self._rules(call.body["rules"]),
        }
        return 201, self.ok({"id": eid, "name": call.body["name"]}, "Created")

    def h_patch_v2_escalations_identifier(self, call: Call, identifier: str) -> tuple[int, Any]:
        if call.query.get("identifierType", "id") != "id" or identifier not in self.escalations:
            raise Refused(404, self.error("Escalation not found"))
        update = copy.deepcopy(call.body)
        if "rules" in update:
            update["rules"] = self._rules(update["rules"])
        self.escalations[identifier].update(update)
        return 200, self.ok({"id": identifier, "name": self.escalations[identifier]["name"]}, "Updated")
