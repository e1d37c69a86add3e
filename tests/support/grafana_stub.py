"""A stand-in for the parts of Grafana's HTTP API that ``errorgate grafana push`` calls.

A real Grafana cannot be installed here, so the push client is tested against this server. It
checks exact paths, methods, headers (``Authorization: Bearer``, ``Content-Type``,
``X-Disable-Provenance`` on provisioning writes) and bodies (schema-like checks: a dashboard has
uid/title/panels, a rule group's rules name an existing refId as condition, policies name
existing receivers and mute timings...), keeps state so GETs return what was written, answers
like Grafana does (ids, versions, provenance added; secure settings read back as
``[REDACTED]``), and records every call. Silences of Grafana's built-in Alertmanager (what the
incident engine makes, ``incidents.silence.grafana``) are checked against Grafana's own OpenAPI
text, transcribed in ``vendor_schemas/grafana_silences.json``. Anything it does not know is a 404 and an entry in
``unexpected``; anything malformed is a 400 and an entry in ``violations``.

    with GrafanaStub(token="t0ken") as grafana:
        ... push to grafana.url ...
        assert grafana.violations == [] and grafana.unexpected == []
        assert [c.method for c in grafana.writes()] == [...]
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema

SILENCE_SCHEMA = json.loads((Path(__file__).parent / "vendor_schemas" / "grafana_silences.json").read_text())
SILENCES = "/api/alertmanager/grafana/api/v2/silences"

# Contact point settings Grafana stores encrypted and never returns.
SECURE_SETTINGS = {
    "pagerduty": {"integrationKey"},
    "opsgenie": {"apiKey"},
    "slack": {"url", "token"},
    "webhook": {"password", "authorization_credentials"},
}
CONTACT_POINT_TYPES = {"pagerduty", "opsgenie", "slack", "webhook", "email"}
NO_DATA_STATES = {"OK", "NoData", "Alerting"}
EXEC_ERR_STATES = {"OK", "Error", "Alerting"}


@dataclass
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    status: int = 0


class Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class State:
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    rule_groups: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    contact_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, Any] | None = None
    mute_timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    silences: dict[str, dict[str, Any]] = field(default_factory=dict)


class GrafanaStub:
    def __init__(self, token: str = "glsa_test_token") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.unexpected: list[str] = []
        self.state = State()
        self._lock = threading.Lock()
        self._next_id = 1
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                stub._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> GrafanaStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> GrafanaStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- inspection

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method != "GET"]

    # -------------------------------------------------------------- request handling

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        body: Any = None
        call = Call(h.command, parts.path, parts.query, headers, None)
        with self._lock:
            self.calls.append(call)
            try:
                if headers.get("authorization") != f"Bearer {self.token}":
                    raise Invalid(401, "invalid API key")
                if h.command in ("POST", "PUT"):
                    if not headers.get("content-type", "").startswith("application/json"):
                        raise Invalid(415, f"{h.command} {parts.path}: Content-Type must be application/json")
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise Invalid(400, f"{h.command} {parts.path}: body is not JSON") from None
                    call.body = body
                    if (
                        parts.path.startswith("/api/v1/provisioning/")
                        and headers.get("x-disable-provenance") != "true"
                    ):
                        raise Invalid(400, f"{h.command} {parts.path}: missing X-Disable-Provenance: true")
                status, answer = self._route(h.command, parts.path, body)
            except Invalid as e:
                status, answer = e.status, {"message": e.message}
                if e.status == 404:
                    self.unexpected.append(f"{h.command} {parts.path}: {e.message}")
                else:
                    self.violations.append(e.message)
            call.status = status
        data = json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"/api/folders/([^/]+)", self._get_folder),
            ("POST", r"/api/folders", self._create_folder),
            ("PUT", r"/api/folders/([^/]+)", self._update_folder),
            ("GET", r"/api/dashboards/uid/([^/]+)", self._get_dashboard),
            ("POST", r"/api/dashboards/db", self._save_dashboard),
            ("GET", r"/api/v1/provisioning/folder/([^/]+)/rule-groups/([^/]+)", self._get_rule_group),
            ("PUT", r"/api/v1/provisioning/folder/([^/]+)/rule-groups/([^/]+)", self._put_rule_group),
            ("GET", r"/api/v1/provisioning/contact-points", self._list_contact_points),
            ("POST", r"/api/v1/provisioning/contact-points", self._create_contact_point),
            ("PUT", r"/api/v1/provisioning/contact-points/([^/]+)", self._update_contact_point),
            ("GET", r"/api/v1/provisioning/policies", self._get_policies),
            ("PUT", r"/api/v1/provisioning/policies", self._put_policies),
            ("GET", r"/api/v1/provisioning/mute-timings", self._list_mute_timings),
            ("POST", r"/api/v1/provisioning/mute-timings", self._create_mute_timing),
            ("PUT", r"/api/v1/provisioning/mute-timings/([^/]+)", self._update_mute_timing),
            ("GET", r"/api/v1/provisioning/templates", self._list_templates),
            ("PUT", r"/api/v1/provisioning/templates/([^/]+)", self._put_template),
            ("GET", SILENCES, self._list_silences),
            ("POST", SILENCES, self._create_silence),
            ("DELETE", r"/api/alertmanager/grafana/api/v2/silence/([^/]+)", self._delete_silence),
        ]
        for m, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and m == method:
                args = [unquote(g) for g in match.groups()]
                return handler(*args, body) if method in ("POST", "PUT") else handler(*args)
        raise Invalid(404, "not an endpoint errorgate should call")

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -------------------------------------------------------------- folders

    def _get_folder(self, uid: str) -> tuple[int, Any]:
        if uid not in self.state.folders:
            return 404, {"message": "folder not found"}
        return 200, self.state.folders[uid]

    def _create_folder(self, body: Any) -> tuple[int, Any]:
        _require(body, {"title": str, "uid": str}, "folder")
        if body["uid"] in self.state.folders:
            raise Invalid(409, "a folder with the same uid already exists")
        folder = {"id": self._id(), "uid": body["uid"], "title": body["title"], "version": 1}
        self.state.folders[body["uid"]] = folder
        return 200, folder

    def _update_folder(self, uid: str, body: Any) -> tuple[int, Any]:
        if uid not in self.state.folders:
            return 404, {"message": "folder not found"}
        _require(body, {"title": str}, "folder")
        folder = self.state.folders[uid]
        folder.update(title=body["title"], version=folder["version"] + 1)
        return 200, folder

    # -------------------------------------------------------------- dashboards

    def _get_dashboard(self, uid: str) -> tuple[int, Any]:
        if uid not in self.state.dashboards:
            return 404, {"message": "Dashboard not found"}
        return 200, copy.deepcopy(self.state.dashboards[uid])

    def _save_dashboard(self, body: Any) -> tuple[int, Any]:
        _require(body, {"dashboard": dict, "folderUid": str}, "dashboard save")
        dash = body["dashboard"]
        _require(dash, {"uid": str, "title": str, "panels": list}, "dashboard")
        if body["folderUid"] not in self.state.folders:
            raise Invalid(400, f"dashboard {dash['uid']}: folder {body['folderUid']} does not exist")
        for panel in dash["panels"]:
            _require(panel, {"type": str, "title": str, "gridPos": dict}, f"dashboard {dash['uid']} panel")
        existing = self.state.dashboards.get(dash["uid"])
        if existing is not None and not body.get("overwrite"):
            raise Invalid(412, "version-mismatch: the dashboard has been changed by someone else")
        version = existing["dashboard"]["version"] + 1 if existing else 1
        stored = {
            **copy.deepcopy(dash),
            "id": existing["dashboard"]["id"] if existing else self._id(),
            "version": version,
        }
        self.state.dashboards[dash["uid"]] = {
            "dashboard": stored,
            "meta": {"folderUid": body["folderUid"], "slug": dash["title"].lower(), "version": version},
        }
        return 200, {"status": "success", "uid": dash["uid"], "version": version}

    # -------------------------------------------------------------- rule groups

    def _get_rule_group(self, folder: str, group: str) -> tuple[int, Any]:
        if (folder, group) not in self.state.rule_groups:
            return 404, {"message": "rule group does not exist"}
        return 200, copy.deepcopy(self.state.rule_groups[(folder, group)])

    def _put_rule_group(self, folder: str, group: str, body: Any) -> tuple[int, Any]:
        _require(body, {"title": str, "folderUid": str, "interval": int, "rules": list}, "rule group")
        if body["folderUid"] != folder or body["title"] != group:
            raise Invalid(400, f"rule group {group}: folderUid/title do not match the path")
        if folder not in self.state.folders:
            raise Invalid(400, f"rule group {group}: folder {folder} does not exist")
        if body["interval"] <= 0 or body["interval"] % 10:
            raise Invalid(400, f"rule group {group}: interval must be a positive multiple of 10s")
        uids = set()
        for rule in body["rules"]:
            where = f"rule group {group} rule {rule.get('uid')}"
            _require(rule, {"uid": str, "title": str, "condition": str, "data": list, "for": str}, where)
            _require(rule, {"noDataState": str, "execErrState": str, "labels": dict}, where)
            if rule.get("folderUID") != folder or rule.get("ruleGroup") != group:
                raise Invalid(400, f"{where}: folderUID/ruleGroup must match the group")
            if rule["noDataState"] not in NO_DATA_STATES or rule["execErrState"] not in EXEC_ERR_STATES:
                raise Invalid(400, f"{where}: invalid noDataState/execErrState")
            ref_ids = []
            for query in rule["data"]:
                _require(
                    query,
                    {"refId": str, "datasourceUid": str, "model": dict, "relativeTimeRange": dict},
                    where,
                )
                ref_ids.append(query["refId"])
            if rule["condition"] not in ref_ids:
                raise Invalid(
                    400, f"{where}: condition {rule['condition']} is not one of the refIds {ref_ids}"
                )
            if rule["uid"] in uids:
                raise Invalid(400, f"{where}: duplicate uid")
            uids.add(rule["uid"])
        stored = copy.deepcopy(body)
        for rule in stored["rules"]:
            rule.update(id=self._id(), orgID=1, updated="2026-01-01T00:00:00Z", provenance="")
        self.state.rule_groups[(folder, group)] = stored
        return 200, stored

    # -------------------------------------------------------------- contact points

    def _list_contact_points(self) -> tuple[int, Any]:
        out = []
        for cp in self.state.contact_points.values():
            cp = copy.deepcopy(cp)
            for key in SECURE_SETTINGS.get(cp["type"], set()) & set(cp["settings"]):
                cp["settings"][key] = "[REDACTED]"
            out.append(cp)
        return 200, out

    def _check_contact_point(self, body: Any) -> None:
        _require(body, {"uid": str, "name": str, "type": str, "settings": dict}, "contact point")
        if body["type"] not in CONTACT_POINT_TYPES:
            raise Invalid(400, f"contact point {body['uid']}: unknown type {body['type']}")
        for value in body["settings"].values():
            if isinstance(value, str) and "$__file{" in value:
                raise Invalid(400, f"contact point {body['uid']}: unexpanded $__file reference")

    def _create_contact_point(self, body: Any) -> tuple[int, Any]:
        self._check_contact_point(body)
        if body["uid"] in self.state.contact_points:
            raise Invalid(409, f"contact point {body['uid']} already exists")
        self.state.contact_points[body["uid"]] = {**copy.deepcopy(body), "provenance": ""}
        return 202, body

    def _update_contact_point(self, uid: str, body: Any) -> tuple[int, Any]:
        self._check_contact_point(body)
        if uid not in self.state.contact_points or body["uid"] != uid:
            raise Invalid(404, f"contact point {uid} not found")
        self.state.contact_points[uid] = {**copy.deepcopy(body), "provenance": ""}
        return 202, {"message": "contactpoint updated"}

    # -------------------------------------------------------------- policies

    def _get_policies(self) -> tuple[int, Any]:
        # A fresh Grafana has a default tree pointing at its default email receiver.
        return 200, copy.deepcopy(
            self.state.policies
            or {"receiver": "grafana-default-email", "group_by": ["grafana_folder", "alertname"]}
        )

    def _put_policies(self, body: Any) -> tuple[int, Any]:
        receivers = {cp["name"] for cp in self.state.contact_points.values()}
        timings = set(self.state.mute_timings)

        def check(route: Any, where: str) -> None:
            if not isinstance(route, dict):
                raise Invalid(400, f"{where}: a route must be an object")
            if "receiver" in route and route["receiver"] not in receivers:
                raise Invalid(400, f"{where}: receiver {route['receiver']!r} does not exist")
            for name in route.get("mute_time_intervals", []):
                if name not in timings:
                    raise Invalid(400, f"{where}: mute timing {name!r} does not exist")
            for matcher in route.get("object_matchers", []):
                if not (
                    isinstance(matcher, list) and len(matcher) == 3 and matcher[1] in ("=", "!=", "=~", "!~")
                ):
                    raise Invalid(400, f"{where}: invalid object_matchers entry {matcher!r}")
            for i, child in enumerate(route.get("routes", [])):
                check(child, f"{where}.routes[{i}]")

        _require(body, {"receiver": str}, "policy tree")
        check(body, "policy tree")
        self.state.policies = {**copy.deepcopy(body), "provenance": ""}
        return 202, {"message": "policies updated"}

    # -------------------------------------------------------------- mute timings and templates

    def _list_mute_timings(self) -> tuple[int, Any]:
        return 200, [{**copy.deepcopy(t), "version": "v1"} for t in self.state.mute_timings.values()]

    def _create_mute_timing(self, body: Any) -> tuple[int, Any]:
        _require(body, {"name": str, "time_intervals": list}, "mute timing")
        if body["name"] in self.state.mute_timings:
            raise Invalid(409, f"mute timing {body['name']} already exists")
        self.state.mute_timings[body["name"]] = copy.deepcopy(body)
        return 201, body

    def _update_mute_timing(self, name: str, body: Any) -> tuple[int, Any]:
        _require(body, {"name": str, "time_intervals": list}, "mute timing")
        if name not in self.state.mute_timings or body["name"] != name:
            raise Invalid(404, f"mute timing {name} not found")
        self.state.mute_timings[name] = copy.deepcopy(body)
        return 200, body

    def _list_templates(self) -> tuple[int, Any]:
        # Grafana answers null, not [], when there are none.
        return 200, [copy.deepcopy(t) for t in self.state.templates.values()] or None

    def _put_template(self, name: str, body: Any) -> tuple[int, Any]:
        _require(body, {"template": str}, f"template {name}")
        if "{{ define" not in body["template"] and "{{define" not in body["template"]:
            raise Invalid(400, f"template {name}: must define at least one template")
        self.state.templates[name] = {"name": name, "template": body["template"], "provenance": ""}
        return 202, self.state.templates[name]

    # -------------------------------------------------------------- silences (built-in Alertmanager)

    def active_silences(self) -> list[dict[str, Any]]:
        return [s for s in self.state.silences.values() if s["status"]["state"] == "active"]

    def _list_silences(self) -> tuple[int, Any]:
        return 200, [copy.deepcopy(s) for s in self.state.silences.values()]

    def _create_silence(self, body: Any) -> tuple[int, Any]:
        errors = _schema_errors("POST " + SILENCES, body)
        if errors:
            raise Invalid(400, f"silence: {'; '.join(errors)}")
        if body.get("id"):  # an update: errorgate only ever creates
            raise Invalid(400, "silence: errorgate should create silences, not update them by id")
        for key in ("startsAt", "endsAt"):
            try:
                datetime.fromisoformat(body[key].replace("Z", "+00:00"))
            except ValueError:
                raise Invalid(400, f"silence: {key} is not an RFC 3339 time") from None
        if body["endsAt"] <= body["startsAt"]:
            raise Invalid(400, "silence: endsAt must be after startsAt")
        silence_id = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.state.silences[silence_id] = {**copy.deepcopy(body), "id": silence_id,
                                           "status": {"state": "active"}, "updatedAt": now}  # fmt: skip
        answer = {"silenceID": silence_id}
        assert not _schema_errors("POST " + SILENCES, answer, "responses")
        return 202, answer

    def _delete_silence(self, silence_id: str) -> tuple[int, Any]:
        silence = self.state.silences.get(silence_id)
        if silence is None:
            return 404, {"message": "silence not found"}
        silence["status"]["state"] = "expired"
        return 200, {"message": "silence deleted"}


def _schema_errors(route: str, body: Any, part: str = "requests") -> list[str]:
    pointer = f"#/{part}/" + route.replace("~", "~0").replace("/", "~1")
    validator = jsonschema.Draft4Validator({**SILENCE_SCHEMA, "$ref": pointer})
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in validator.iter_errors(body)
    ]


def _require(obj: Any, fields: dict[str, type], where: str) -> None:
    if not isinstance(obj, dict):
        raise Invalid(400, f"{where}: expected a JSON object")
    for key, typ in fields.items():
        if key not in obj:
            raise Invalid(400, f"{where}: missing {key}")
        if not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            raise Invalid(400, f"{where}: {key} must be {typ.__name__}")
