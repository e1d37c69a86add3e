"""``POST /api/v1/webhooks/jira``: Jira tells the engine at once that a postmortem or an action
item changed status, instead of the next poll.

Authenticated by the secret in ``incidents.jira.webhook_secret_env``, compared in constant time:
Jira Cloud admin webhooks registered with that secret sign the raw body
(``X-Hub-Signature: sha256=<hex HMAC-SHA256>``); Jira Data Center, which cannot sign, sends it
in the URL (``...?token=<secret>``). A body that is not a ``jira:issue_*`` event with the
issue's key and status is refused with 400 naming the field; nothing is stored then."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from errorgate.incidents.http import Api, Request, Response

PATH = "/api/v1/webhooks/jira"
# Events that carry an issue; the others (sprint, project, comment...) are accepted and ignored.
ISSUE_EVENTS = ("jira:issue_updated", "jira:issue_created")


class PayloadError(ValueError):
    """The message names the field."""


def _authentic(req: Request, secret: str) -> bool:
    given = req.headers.get("x-hub-signature", "")
    if given.startswith("sha256="):
        digest = hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given[7:].encode(), digest.encode())
    token = req.query.get("token", "")
    return bool(token) and hmac.compare_digest(token.encode(), secret.encode())


def _field(doc: Any, path: str, kind: type) -> Any:
    node = doc
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            # name the first missing level ("issue", not "issue.key", when there is no issue)
            raise PayloadError(f"{'.'.join(parts[: i + 1])}: missing")
        node = node[part]
    if not isinstance(node, kind):
        raise PayloadError(f"{path}: must be a {'string' if kind is str else 'JSON object'}")
    return node


def parse(body: bytes) -> tuple[str, str | None, dict[str, Any] | None]:
    """(event, issue key, status) of a webhook body; key and status are None for events that
    carry no issue."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise PayloadError(f"body: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise PayloadError("body: must be a JSON object")
    event = _field(doc, "webhookEvent", str)
    if event not in ISSUE_EVENTS:
        return event, None, None
    key = _field(doc, "issue.key", str)
    status = _field(doc, "issue.fields.status", dict)
    _field(doc, "issue.fields.status.name", str)
    return event, key, status


def jira_webhook(api: Api, secret: str, apply_status: Callable[[str, dict[str, Any], str], bool]) -> None:
    """Install the route. ``apply_status(key, status, via)`` is ``Postmortems.apply_status``."""

    def handle(req: Request) -> Response:
        req.actor = "jira"
        if not _authentic(req, secret):
            api.engine.audit_denied("jira", "webhook:jira", "-")
            return Response(
                401, {"error": "X-Hub-Signature or ?token=: the Jira webhook secret does not match"}
            )
        try:
            event, key, status = parse(req.body)
        except PayloadError as e:
            return Response(400, {"error": str(e)})
        if key is None or status is None:
            return Response(200, {"event": event, "matched": False})
        matched = apply_status(key, status, "jira-webhook")
        if matched:
            api.on_change()
        return Response(200, {"event": event, "issue": key, "matched": matched})

    api.routes[("POST", PATH)] = handle
