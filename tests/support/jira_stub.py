"""A loopback Jira (REST v2) that checks every request body against Jira's published OpenAPI
schema (``tests/support/jira_openapi.py``) and keeps issues, statuses and links in memory.

Routes: ``POST /rest/api/2/issue`` (IssueUpdateDetails; Jira also requires project, issue type
and summary on create), ``GET /rest/api/2/issue/{key}``, ``GET /rest/api/2/issueLinkType``,
``POST /rest/api/2/issueLink`` (LinkIssueRequestJsonBean). A body that breaks the schema gets
Jira's 400 (``errorMessages``) and is kept in ``rejected`` so tests can assert there were none."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.jira_openapi import request_errors, response_errors

LINK_TYPES = [
    {"id": "10000", "name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
    {"id": "10003", "name": "Relates", "inward": "relates to", "outward": "relates to"},
]
CATEGORIES = {"new": (2, "To Do"), "indeterminate": (4, "In Progress"), "done": (3, "Done")}


class JiraStub:
    def __init__(self, project: str = "OPS") -> None:
        self.project = project
        self.issues: dict[str, dict[str, Any]] = {}  # key -> {name, category, fields}
        self.created: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.rejected: list[tuple[str, list[str]]] = []
        self.auth: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def set_status(self, key: str, name: str, category: str) -> None:
        self.issues[key].update(name=name, category=category)

    def issue_json(self, key: str) -> dict[str, Any]:
        """The issue as Jira returns it (and as a webhook carries it), an IssueBean."""
        s = self.issues[key]
        cat_id, cat_name = CATEGORIES[s["category"]]
        status = {"self": f"{self.url}/rest/api/2/status/1", "name": s["name"], "id": "1",
                  "statusCategory": {"self": f"{self.url}/rest/api/2/statuscategory/{cat_id}", "id": cat_id,
                                     "key": s["category"], "colorName": "blue", "name": cat_name}}  # fmt: skip
        body = {"id": s["id"], "key": key, "self": f"{self.url}/rest/api/2/issue/{s['id']}",
                "fields": {**s["fields"], "status": status}}  # fmt: skip
        assert not response_errors("IssueBean", body), response_errors("IssueBean", body)
        return body

    def _create(self, body: Any) -> tuple[int, Any]:
        errors = request_errors("IssueUpdateDetails", body)
        fields = body.get("fields") if isinstance(body, dict) else None
        if not errors and not isinstance(fields, dict):
            errors = ["fields: required on create"]
        elif not errors:
            errors = [
                f"fields.{k}: required on create"
                for k in ("project", "issuetype", "summary")
                if k not in fields
            ]
        if errors:
            self.rejected.append(("POST /rest/api/2/issue", errors))
            return 400, {"errorMessages": errors, "errors": {}}
        key = f"{self.project}-{len(self.issues) + 1}"
        self.created.append(body)
        self.issues[key] = {
            "id": str(10000 + len(self.issues)),
            "name": "To Do",
            "category": "new",
            "fields": fields,
        }
        return 201, {"id": self.issues[key]["id"], "key": key, "self": f"{self.url}/rest/api/2/issue/{key}"}

    def _link(self, body: Any) -> tuple[int, Any]:
        errors = request_errors("LinkIssueRequestJsonBean", body)
        if not errors:
            names = {t["name"] for t in LINK_TYPES}
            if body["type"].get("name") not in names:
                errors = [f"type.name: no issue link type {body['type'].get('name')!r}"]
            errors += [f"{side}: no issue {body[side].get('key')!r}" for side in ("inwardIssue", "outwardIssue")
                       if body[side].get("key") not in self.issues]  # fmt: skip
        if errors:
            self.rejected.append(("POST /rest/api/2/issueLink", errors))
            return 400, {"errorMessages": errors, "errors": {}}
        self.links.append(body)
        return 201, None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                stub.auth.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = self.path.split("?")[0]
                if path == "/rest/api/2/issue":
                    return self._send(*stub._create(body))
                if path == "/rest/api/2/issueLink":
                    return self._send(*stub._link(body))
                return self._send(404, {"errorMessages": ["no such resource"]})

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/rest/api/2/issueLinkType":
                    return self._send(200, {"issueLinkTypes": LINK_TYPES})
                key = path.rsplit("/", 1)[-1]
                if not path.startswith("/rest/api/2/issue/") or key not in stub.issues:
                    return self._send(404, {"errorMessages": ["Issue does not exist"]})
                self._send(200, stub.issue_json(key))

        return Handler

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
