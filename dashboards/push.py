"""Pushes the dashboards and the Grafana alerting objects to a live Grafana, idempotently.

Everything goes into one folder: dashboards through ``/api/dashboards/db``; rule groups,
contact points, the notification policy tree, mute timings and templates through the alerting
provisioning API (``/api/v1/provisioning/...``). Each object is read first and written only if it
differs, so a second push makes no writes. Comparison looks only at the keys errorgate sets
(Grafana adds ids, versions and provenance of its own) and treats Grafana's ``[REDACTED]``
placeholder for secure settings as equal, since secrets cannot be read back.

Provisioning writes carry ``X-Disable-Provenance: true`` so on-call engineers can still edit a
contact point or mute timing in the UI during an incident; the next push restores the source of truth.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from errorgate.governance.changes import Change, ChangeSet

REDACTED = "[REDACTED]"
# Settings whose values are credentials (PagerDuty/Opsgenie keys, Slack webhook URLs, passwords).
_SECRET_KEY = re.compile(r"(key|token|password|secret|credentials?)$|^url$", re.IGNORECASE)
_SECRET_REF = re.compile(r"\$__(file|env)\{([^}]*)\}")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class PushError(RuntimeError):
    """A push failed; the message names the object and the HTTP call, never a secret."""


# Change kinds here: "folder", "dashboard", "rule group", "contact point", "policies", "mute timing", "template".
PushResult = ChangeSet


def folder_uid_for(name: str) -> str:
    """A stable folder uid from its title (Grafana uids: at most 40 of [A-Za-z0-9_-])."""
    uid = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:40]
    if not uid:
        raise PushError(f"--folder {name!r}: needs at least one letter or digit")
    return uid


# ------------------------------------------------------------------ comparison


def _seconds(value: str) -> int | None:
    m = _DURATION.match(value)
    if not m or not value:
        return None
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def project(actual: Any, desired: Any) -> Any:
    """``actual`` reduced to the shape of ``desired``: keys errorgate does not set are ignored,
    Grafana's redaction placeholders and equivalent durations ("5m" / "5m0s") count as equal."""
    if isinstance(desired, dict) and isinstance(actual, dict):
        return {k: project(actual[k], v) for k, v in desired.items() if k in actual}
    if isinstance(desired, list) and isinstance(actual, list) and len(desired) == len(actual):
        return [project(a, d) for a, d in zip(actual, desired, strict=True)]
    if isinstance(desired, str) and actual == REDACTED:
        return desired
    if isinstance(desired, str) and isinstance(actual, str) and actual != desired:
        a, d = _seconds(actual), _seconds(desired)
        if a is not None and a == d:
            return desired
    return actual


def mask(obj: Any, key: str = "") -> Any:
    """A copy safe to print: credential-like settings replaced by ``<secret>``."""
    if isinstance(obj, dict):
        return {k: mask(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask(v, key) for v in obj]
    if isinstance(obj, str) and _SECRET_KEY.search(key) and obj not in ("", REDACTED):
        return "<secret>"
    return obj


def unified_diff(kind: str, name: str, actual: Any, desired: Any) -> str:
    before = (
        [] if actual is None else json.dumps(mask(actual), indent=2, sort_keys=True).splitlines(keepends=True)
    )
    after = json.dumps(mask(desired), indent=2, sort_keys=True).splitlines(keepends=True)
    label = f"{kind}/{name}"
    return "".join(difflib.unified_diff(before, after, f"grafana:{label}", f"errorgate:{label}", n=2))


def expand_secrets(obj: Any, where: str, strict: bool = True, secrets_dir: Path | None = None) -> Any:
    """Expands Grafana's ``$__file{path}`` / ``$__env{NAME}`` references, as Grafana does for files.

    ``secrets_dir`` looks files up by name there instead (the paths are where Grafana's host keeps
    them, not necessarily where the push runs). With ``strict=False`` (dry runs) an unreadable
    reference is left as it is."""
    if isinstance(obj, dict):
        return {k: expand_secrets(v, f"{where}.{k}", strict, secrets_dir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_secrets(v, f"{where}[{i}]", strict, secrets_dir) for i, v in enumerate(obj)]
    if not isinstance(obj, str) or "$__" not in obj:
        return obj

    def repl(m: re.Match[str]) -> str:
        source, ref = m.group(1), m.group(2)
        try:
            if source == "file":
                path = secrets_dir / Path(ref).name if secrets_dir is not None else Path(ref)
                return path.read_text(encoding="utf-8").strip()
            return os.environ[ref]
        except (OSError, KeyError):
            if not strict:
                return m.group(0)
            what = f"file {ref}" if source == "file" else f"environment variable {ref}"
            raise PushError(f"{where}: cannot read the {what} it refers to") from None

    return _SECRET_REF.sub(repl, obj)


# ------------------------------------------------------------------ the push


class GrafanaPusher:
    """Plans and applies the writes for one folder of one Grafana organisation."""

    def __init__(
        self,
        api: GrafanaApi,
        folder: str = "errorgate",
        out: TextIO | None = None,
        secrets_dir: Path | None = None,
    ) -> None:
        self.api = api
        self.secrets_dir = secrets_dir
        self.folder_title = folder
        self.folder_uid = folder_uid_for(folder)
        self.out = out
        self.result = PushResult()

    # -------------------------------------------------------------- HTTP helpers

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except GrafanaException as e:
            message = e.response.get("message", "") if isinstance(e.response, dict) else ""
            raise PushError(f"{what}: HTTP {e.status_code} {message}".rstrip()) from None
        except OSError as e:
            raise PushError(f"{what}: cannot reach Grafana ({type(e).__name__})") from None

    def _get_or_none(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None when Grafana answers 404 (the object does not exist yet)."""

        def get() -> Any:
            try:
                return fn()
            except GrafanaClientError as e:
                if e.status_code == 404:
                    return None
                raise

        return self._call(what, get)

    def _put_provisioning(self, path: str, body: Any) -> Any:
        # grafana-client's update_mute_timing cannot send the provenance header, so go one level lower.
        return self.api.client.PUT(path, json=body, headers={"X-Disable-Provenance": "true"})

    def _record(
        self, kind: str, name: str, actual: Any, desired: Any, write: Callable[[], Any], dry_run: bool
    ) -> None:
        if actual is not None and project(actual, desired) == desired:
            self.result.changes.append(Change(kind, name, "unchanged"))
            return
        action = "create" if actual is None else "update"
        projected = None if actual is None else project(actual, desired)
        change = Change(kind, name, action, unified_diff(kind, name, projected, desired))
        self.result.changes.append(change)
        if dry_run:
            if self.out is not None:
                self.out.write(change.diff or f"{action} {kind}/{name}\n")
            return
        self._call(f"{action} {kind} {name!r}", write)
        if self.out is not None:
            self.out.write(f"{action}d {kind} {name}\n")

    # -------------------------------------------------------------- objects

    def folder(self, dry_run: bool) -> None:
        uid, title = self.folder_uid, self.folder_title
        actual = self._get_or_none(f"read folder {uid}", lambda: self.api.folder.get_folder(uid))
        desired = {"uid": uid, "title": title}
        if actual is None:
            write = partial(self.api.folder.create_folder, title, uid=uid)
        else:
            write = partial(self.api.folder.update_folder, uid, title=title, overwrite=True)
        self._record("folder", uid, actual, desired, write, dry_run)

    def dashboard(self, model: Mapping[str, Any], dry_run: bool) -> None:
        uid = str(model["uid"])
        current = self._get_or_none(f"read dashboard {uid}", lambda: self.api.dashboard.get_dashboard(uid))
        actual = None
        if current is not None:
            actual = {
                "folderUid": current.get("meta", {}).get("folderUid"),
                "dashboard": current.get("dashboard"),
            }
        desired = {"folderUid": self.folder_uid, "dashboard": dict(model)}
        body = {**desired, "overwrite": True, "message": "errorgate grafana push"}
        self._record(
            "dashboard", uid, actual, desired, partial(self.api.dashboard.update_dashboard, body), dry_run
        )

    def rule_group(self, group: Mapping[str, Any], dry_run: bool) -> None:
        title = str(group["title"])
        desired = dict(group, folderUid=self.folder_uid)
        desired["rules"] = [
            dict(r, folderUID=self.folder_uid, ruleGroup=title) for r in group.get("rules", [])
        ]
        f, g = quote(self.folder_uid, safe=""), quote(title, safe="")
        ap = self.api.alertingprovisioning
        actual = self._get_or_none(f"read rule group {title!r}", lambda: ap.get_rule_group(f, g))
        write = partial(ap.update_rule_group, f, g, desired, disable_provenance=True)
        self._record("rule group", title, actual, desired, write, dry_run)

    def contact_points(self, points: Sequence[Mapping[str, Any]], dry_run: bool) -> None:
        ap = self.api.alertingprovisioning
        existing = self._call("read contact points", ap.get_contactpoints) or []
        by_uid = {p.get("uid"): p for p in existing}
        for point in points:
            desired = expand_secrets(
                dict(point),
                f"contact point {point['name']!r}",
                strict=not dry_run,
                secrets_dir=self.secrets_dir,
            )
            uid = desired.get("uid")
            if not uid:
                raise PushError(f"contact point {point['name']!r}: needs a uid so pushes can find it again")
            actual = by_uid.get(uid)
            if actual is None:
                write = partial(ap.create_contactpoint, desired, disable_provenance=True)
            else:
                write = partial(ap.update_contactpoint, uid, desired, disable_provenance=True)
            self._record("contact point", uid, actual, desired, write, dry_run)

    def policies(self, tree: Mapping[str, Any], dry_run: bool) -> None:
        ap = self.api.alertingprovisioning
        actual = self._get_or_none("read notification policies", ap.get_notification_policy_tree)
        desired = dict(tree)
        write = partial(ap.set_notification_policy_tree, desired, disable_provenance=True)
        self._record("policies", "tree", actual, desired, write, dry_run)

    def mute_timings(self, timings: Sequence[Mapping[str, Any]], dry_run: bool) -> None:
        ap = self.api.alertingprovisioning
        existing = {t.get("name"): t for t in (self._call("read mute timings", ap.get_mute_timings) or [])}
        for timing in timings:
            name, desired = str(timing["name"]), dict(timing)
            if name not in existing:
                write = partial(ap.create_mute_timing, desired, disable_provenance=True)
            else:
                path = f"/v1/provisioning/mute-timings/{quote(name, safe='')}"
                write = partial(self._put_provisioning, path, desired)
            self._record("mute timing", name, existing.get(name), desired, write, dry_run)

    def templates(self, templates: Sequence[Mapping[str, Any]], dry_run: bool) -> None:
        ap = self.api.alertingprovisioning
        existing = {t.get("name"): t for t in (self._call("read templates", ap.get_templates) or [])}
        for tmpl in templates:
            name = str(tmpl["name"])
            desired = {"name": name, "template": tmpl["template"]}
            body = {"template": tmpl["template"]}
            write = partial(ap.create_or_update_template, quote(name, safe=""), body, disable_provenance=True)
            self._record("template", name, existing.get(name), desired, write, dry_run)

    def push(
        self,
        dashboards: Sequence[Mapping[str, Any]],
        provisioning: Mapping[str, Any] | None,
        dry_run: bool = False,
    ) -> PushResult:
        """Folder, dashboards, then templates, contact points and mute timings before the policy
        tree that names them, and rule groups last."""
        self.result = PushResult(dry_run=dry_run)
        self.folder(dry_run)
        for model in dashboards:
            self.dashboard(model, dry_run)
        if provisioning:
            self.templates(provisioning.get("templates", []), dry_run)
            self.contact_points(provisioning.get("contact_points", []), dry_run)
            self.mute_timings(provisioning.get("mute_timings", []), dry_run)
            if provisioning.get("policies"):
                self.policies(provisioning["policies"], dry_run)
            for group in provisioning.get("rule_groups", []):
                self.rule_group(group, dry_run)
        return self.result


def connect(url: str, token: str, timeout: float = 10.0) -> GrafanaApi:
    """A client for ``url`` (e.g. https://grafana.example.com or http://127.0.0.1:3000/grafana)."""
    if not re.match(r"^https?://[^/]+", url):
        raise PushError(f"--url {url!r}: expected http(s)://host[:port][/path]")
    if not token:
        raise PushError("--token: a Grafana service-account token is required (or set GRAFANA_TOKEN)")
    return GrafanaApi.from_url(url.rstrip("/"), credential=token, timeout=timeout)


def push(
    api: GrafanaApi,
    dashboards: Sequence[Mapping[str, Any]],
    provisioning: Mapping[str, Any] | None,
    *,
    folder: str = "errorgate",
    dry_run: bool = False,
    out: TextIO | None = None,
    secrets_dir: Path | None = None,
) -> PushResult:
    """Push ``dashboards`` (JSON models) and ``provisioning`` (``build_grafana_provisioning()``'s
    shapes) into ``folder``. ``dry_run`` only reads, and writes a unified diff per object to ``out``;
    otherwise ``out`` gets one line per write. ``secrets_dir``: see ``expand_secrets``."""
    return GrafanaPusher(api, folder, out, secrets_dir).push(dashboards, provisioning, dry_run)
