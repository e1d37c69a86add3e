"""Anonymized training data for anomaly models (``errorgate export training``).

Rows are per minute and per series (service, fingerprint, kind, category, version) with
measures (``errors``, ``alerts_firing``) and the engine's labels (``incident``,
``incident_severity``). Sources, and what each really knows:

- ``prometheus``: error counts per minute from errorgate's own metrics over the Prometheus query
  API: ``errorgate_errors_total`` by service/kind/category (family ``by_kind``) and
  ``errorgate_errors_by_version_total`` by service/version (family ``by_version``). The metrics
  carry no fingerprint (bounded cardinality), so ``fingerprint`` is ``*`` there.
- the incident store: the alerts the engine received, one row per minute an alert fired
  (family ``alerts``; ``errors`` is empty, ``alerts_firing`` is 1), with the fingerprint,
  kind, category and version from the alert's labels when it has them.

Privacy: no free text leaves (titles, summaries, notes, actors are never read); service and
fingerprint are replaced by a keyed HMAC; kind and category must be short slugs and version
a version number, anything else becomes ``other``. Then the quasi-identifiers are generalized
step by step (``LADDER``) for the rows whose group is still smaller than k, and what cannot
reach k is suppressed and counted. ``check_k_anonymity`` re-reads the output.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from errorgate.incidents.engine import Engine
from errorgate.incidents.store import alerts

QUASI_IDENTIFIERS = ("service", "fingerprint", "kind", "category", "version", "minute", "granularity")
COLUMNS = ("family", *QUASI_IDENTIFIERS, "errors", "alerts_firing", "incident", "incident_severity")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
VERSION = re.compile(r"^v?(\d{1,6})(?:\.(\d{1,6})){0,3}(?:[-+][0-9A-Za-z.]{1,32})?$")
QUERIES = {
    "by_kind": "sum by (service, kind, category) (increase(errorgate_errors_total[1m]))",
    "by_version": "sum by (service, version) (increase(errorgate_errors_by_version_total[1m]))",
}

Row = dict[str, Any]


class ExportError(Exception):
    """The export cannot be made as asked; the message names the option or key."""


# ------------------------------------------------------------------ sources


def from_prometheus(url: str, since: float, until: float, token: str | None = None) -> list[Row]:
    """Per-minute error counts from errorgate's metrics (``query_range``, step 60 s)."""
    rows: list[Row] = []
    for family, query in QUERIES.items():
        params = urllib.parse.urlencode({"query": query, "start": since, "end": until, "step": 60})
        req = urllib.request.Request(f"{url.rstrip('/')}/api/v1/query_range?{params}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                doc = json.loads(resp.read())
        except (OSError, ValueError) as e:
            raise ExportError(f"--prometheus {url}: query failed ({type(e).__name__})") from None
        if doc.get("status") != "success":
            raise ExportError(f"--prometheus {url}: {doc.get('error', 'query failed')}")
        for series in doc["data"]["result"]:
            labels = series["metric"]
            for ts, value in series["values"]:
                rows.append({
                    "family": family, "service": labels.get("service", ""), "fingerprint": "*",
                    "kind": labels.get("kind", "*"), "category": labels.get("category", "*"),
                    "version": labels.get("version", "*"), "minute": int(float(ts)) // 60 * 60,
                    "errors": float(value), "alerts_firing": 0,
                })  # fmt: skip
    return rows


def from_store(engine: Engine, since: float, until: float) -> list[Row]:
    """One row per minute each alert fired (the alert's labels; never its annotations)."""
    rows: list[Row] = []
    with engine.store.begin() as conn:
        query = sa.select(alerts.c.fingerprint, alerts.c.labels, alerts.c.starts_at, alerts.c.ends_at)
        found = conn.execute(query.where(alerts.c.starts_at < until)).all()
    for fingerprint, labels_json, starts, ends in found:
        labels = json.loads(labels_json)
        first = int(max(starts, since)) // 60 * 60
        last = min(ends if ends is not None else until, until)
        for minute in range(first, int(last), 60):
            rows.append({
                "family": "alerts", "service": labels.get("service", ""),
                "fingerprint": labels.get("fingerprint", fingerprint), "kind": labels.get("kind", "*"),
                "category": labels.get("category", "*"), "version": labels.get("version", "*"),
                "minute": minute, "errors": None, "alerts_firing": 1,
            })  # fmt: skip
    return rows


def add_labels(rows: list[Row], engine: Engine, since: float) -> None:
    """``incident`` 1 and its severity on every row of a service while one of its incidents was
    open (opened -> resolved); the label the detector is judged against."""
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for inc in engine.find(since=since - 86400):
        end = inc.resolved_at if inc.resolved_at is not None else float("inf")
        for service in inc.services:
            spans.setdefault(service, []).append((inc.opened_at, end, inc.severity))
    for row in rows:
        hits = [sev for start, end, sev in spans.get(row["service"], ()) if start <= row["minute"] + 59 and row["minute"] < end]  # fmt: skip
        row["incident"] = 1 if hits else 0
        row["incident_severity"] = min(hits) if hits else ""


# ------------------------------------------------------------------ anonymization


def pseudonymizer(key: bytes) -> Callable[[str, str], str]:
    def pseudonym(kind: str, value: str) -> str:
        if value in ("*", ""):
            return value
        digest = hmac.new(key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind[:3]}_{digest[:16]}"

    return pseudonym


def _slug(value: Any) -> str:
    text = str(value)
    return text if text == "*" or SLUG.match(text) else "other"


def _version(value: Any) -> str:
    text = str(value)
    if text == "*":
        return text
    match = VERSION.match(text)
    # The pre-release/build suffix is free text (a branch, a name): never kept.
    return re.sub(r"[-+].*$", "", text) if match else "other"


def scrub(rows: Iterable[Row], key: bytes) -> list[Row]:
    """Identifiers pseudonymized, closed vocabularies enforced: nothing free-form is left."""
    pseudonym = pseudonymizer(key)
    out = []
    for row in rows:
        clean = dict(row)
        clean["service"] = pseudonym("service", str(row["service"]))
        clean["fingerprint"] = pseudonym("fingerprint", str(row["fingerprint"]))
        clean["kind"], clean["category"] = _slug(row["kind"]), _slug(row["category"])
        clean["version"] = _version(row["version"])
        clean["granularity"] = 60
        out.append(clean)
    return out


def _major(row: Row) -> None:
    match = VERSION.match(str(row["version"]))
    row["version"] = f"{match.group(1)}.x" if match else row["version"]


def _set(column: str, value: Any) -> Callable[[Row], None]:
    def apply(row: Row) -> None:
        row[column] = value

    return apply


def _five_minutes(row: Row) -> None:
    row["minute"] = row["minute"] // 300 * 300
    row["granularity"] = 300


# Generalization steps, least information lost first: a row moves down only while its group
# is smaller than k.
LADDER: tuple[tuple[str, Callable[[Row], None]], ...] = (
    ("fingerprint", _set("fingerprint", "*")),
    ("version_major", _major),
    ("version", _set("version", "*")),
    ("category", _set("category", "*")),
    ("kind", _set("kind", "*")),
    ("time_5m", _five_minutes),
    ("service", _set("service", "*")),
)


def _key(row: Row) -> tuple[Any, ...]:
    return (row["family"], *(row[c] for c in QUASI_IDENTIFIERS))


@dataclass
class Anonymized:
    rows: list[Row]
    suppressed: int
    generalized: dict[str, int]  # rows that went through each step


def k_anonymize(rows: list[Row], k: int) -> Anonymized:
    if k < 1:
        raise ExportError(f"--k: must be 1 or more, got {k}")
    released: list[Row] = []
    pending = rows
    generalized: dict[str, int] = {}
    for step, apply in (("none", None), *LADDER):
        if apply is not None:
            generalized[step] = len(pending)
            for row in pending:
                apply(row)
        sizes = Counter(_key(r) for r in [*released, *pending])
        released.extend(r for r in pending if sizes[_key(r)] >= k)
        pending = [r for r in pending if sizes[_key(r)] < k]
        if not pending:
            break
    ok, small = check_k_anonymity(released, k)
    while not ok:  # a later step can split nothing, but re-check rather than trust that
        released = [r for r in released if _key(r) not in small]
        ok, small = check_k_anonymity(released, k)
    return Anonymized(released, len(rows) - len(released), generalized)


def check_k_anonymity(rows: Iterable[Row], k: int) -> tuple[bool, set[tuple[Any, ...]]]:
    sizes = Counter(_key(r) for r in rows)
    small = {key for key, n in sizes.items() if n < k}
    return not small, small
