"""``errorgate export training``: per-minute features + incident labels, pseudonymized and
k-anonymous; planted PII never leaves; a baseline detector trained on it finds a planted spike."""

from __future__ import annotations

import base64
import json
import random
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from errorgate.cli import main
from errorgate.config import default_config_text
from errorgate.incidents.engine import Engine
from errorgate.incidents.store import Store
from errorgate.incidents.training import QUASI_IDENTIFIERS, k_anonymize, scrub
from errorgate.incidents.webhooks import parse_alerts
from tests.support.incidents import Clock, alert, alertmanager_payload

T0 = 1_750_000_000 // 60 * 60
MINUTES = 180
SPIKE = T0 + 120 * 60
KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
PII = ("jane.doe@example.com", "alice.smith", "4111111111111111", "Jane Doe", "bob-laptop")
K = 3
# (service, kind, category) series the stub's errorgate_errors_total has; PII planted in labels.
SERIES = [
    ("checkout", "dependency", "timeout"), ("checkout", "dependency", "connection"),
    ("checkout", "application", "validation"), ("payments", "dependency", "timeout"),
    ("payments", "application", "validation"), ("payments", "application", "jane.doe@example.com"),
    ("svc-alice.smith", "application", "Jane Doe"),
]  # fmt: skip


def _series() -> dict[str, list[tuple[dict[str, str], dict[int, float]]]]:
    rng = random.Random(7)
    by_kind = []
    for service, kind, category in SERIES:
        values = {T0 + m * 60: float(rng.randint(2, 6)) for m in range(MINUTES)}
        if service == "checkout":
            values[SPIKE] = 90.0  # the planted anomaly
        by_kind.append(({"service": service, "kind": kind, "category": category}, values))
    # A one-minute blip of a service nobody else shares: cannot reach k, must be suppressed.
    by_kind.append(({"service": "4111111111111111", "kind": "x", "category": "y"}, {T0 + 7 * 60: 1.0}))
    by_version = [
        ({"service": "checkout", "version": "2.3.1-bob-laptop"}, {T0 + m * 60: 3.0 for m in range(MINUTES)}),
        ({"service": "checkout", "version": "2.4.0"}, {T0 + m * 60: 1.0 for m in range(MINUTES)}),
    ]
    return {"errorgate_errors_total": by_kind, "errorgate_errors_by_version_total": by_version}


class _Prometheus(BaseHTTPRequestHandler):
    """Answers ``/api/v1/query_range`` in Prometheus' response format from the series above."""

    data = _series()

    def do_GET(self) -> None:
        q = parse_qs(urlsplit(self.path).query)
        start, end = float(q["start"][0]), float(q["end"][0])
        metric = next(m for m in self.data if m in q["query"][0])
        result = [
            {
                "metric": labels,
                "values": [[ts, str(v)] for ts, v in sorted(values.items()) if start <= ts <= end],
            }
            for labels, values in self.data[metric]
        ]
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A data dir whose incident store holds one P1 on checkout spanning the spike, its alert
    carrying PII in labels and annotations."""
    clock = Clock(SPIKE)
    store = Store(f"sqlite:///{tmp_path / 'data' / 'incidents.db'}")
    store.upgrade()
    engine = Engine(store, clock=clock)
    starts = datetime.fromtimestamp(SPIKE, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    planted = alert("checkout", fingerprint="fp1", starts=starts, user="jane.doe@example.com",
                    kind="dependency", category="timeout", version="2.3.1+alice.smith")  # fmt: skip
    planted["annotations"]["summary"] = "Jane Doe's card 4111111111111111 failed"
    [incident_id] = engine.ingest(parse_alerts(json.dumps(alertmanager_payload(planted)).encode(), "alertmanager"),
                                  "alertmanager", "webhook")  # fmt: skip
    engine.note(incident_id, "bob-laptop", "called jane.doe@example.com")
    clock.now = SPIKE + 600
    engine.resolve(incident_id, "alice.smith")
    store.dispose()
    path = tmp_path / "errorgate.yaml"
    path.write_text(
        default_config_text() + f"\nincidents:\n  store: sqlite:///{tmp_path / 'data' / 'incidents.db'}\n"
    )
    return path


def _export(config: Path, prometheus: str, out: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("ERRORGATE_EXPORT_KEY", KEY)
    return main(["export", "training", "--config", str(config), "--prometheus", prometheus, "--since", "3h",
                 "--until", str(T0 + MINUTES * 60), "--format", fmt, "-o", str(out), "--k", str(K)])  # fmt: skip


def _groups(rows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(r[c] for c in ("family", *QUASI_IDENTIFIERS)) for r in rows)


def test_parquet_export_has_no_pii_is_k_anonymous_and_a_detector_finds_the_spike(
    config: Path, prometheus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    import pyarrow.parquet as pq
    from sklearn.ensemble import IsolationForest

    out = tmp_path / "train.parquet"
    assert _export(config, prometheus, out, "parquet", monkeypatch) == 0
    report = capsys.readouterr().err
    rows = pq.read_table(out).to_pylist()
    dump = out.read_bytes().decode("latin-1") + json.dumps(rows)
    for secret in (*PII, "checkout", "payments", "fp1"):
        assert secret not in dump and secret not in report, secret
    assert min(_groups(rows).values()) >= K  # k-anonymous, checked independently of the exporter
    suppressed, total = map(int, re.search(r"suppressed (\d+) of (\d+)", report).groups())  # type: ignore[union-attr]
    assert 1 <= suppressed < total / 100 and len(rows) == total - suppressed
    assert not [r for r in rows if r["kind"] == "x"]  # the one-minute blip of a unique service
    families = Counter(r["family"] for r in rows)
    assert families["by_kind"] and families["by_version"] and families["alerts"]
    assert all(r["version"] in ("*", "2.x", "2.3.1", "2.4.0", "other") for r in rows)

    # Per-minute totals per (pseudonymous) service, from the rows that kept their minute.
    totals: dict[tuple[str, int], float] = defaultdict(float)
    labels: dict[tuple[str, int], int] = {}
    for r in rows:
        if r["family"] == "by_kind" and r["granularity"] == 60 and r["service"] != "*":
            totals[(r["service"], r["minute"])] += r["errors"]
            labels[(r["service"], r["minute"])] = r["incident"]
    keys = sorted(totals)
    model = IsolationForest(n_estimators=100, contamination=0.005, random_state=0)
    flags = model.fit_predict([[totals[key]] for key in keys])
    flagged = [key for key, flag in zip(keys, flags, strict=True) if flag == -1]
    assert [minute for _, minute in flagged] == [SPIKE]
    assert labels[flagged[0]] == 1  # and the engine's label marks it as in an incident


def test_csv_export_and_pseudonyms_are_keyed(
    config: Path, prometheus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "train.csv"
    assert _export(config, prometheus, out, "csv", monkeypatch) == 0
    text = out.read_text()
    assert text.splitlines()[0].startswith("family,service,fingerprint,kind,category,version,minute")
    for secret in PII:
        assert secret not in text
    rows = [{"family": "f", "service": "checkout", "fingerprint": "a", "kind": "k", "category": "c",
             "version": "1.0", "minute": 0}]  # fmt: skip
    assert scrub(rows, b"a" * 32)[0]["service"] != scrub(rows, b"b" * 32)[0]["service"]


def test_rows_that_cannot_reach_k_are_suppressed_and_counted() -> None:
    rows = [{"family": "f", "service": f"s{i}", "fingerprint": "*", "kind": "k", "category": "c",
             "version": "1.0", "minute": i * 3600, "granularity": 60} for i in range(4)]  # fmt: skip
    result = k_anonymize(rows, 2)
    assert result.rows == [] and result.suppressed == 4
    same = [dict(r, minute=0) for r in rows]
    result = k_anonymize(same, 4)
    assert result.suppressed == 0 and {r["service"] for r in result.rows} == {"*"}


def test_a_missing_or_short_key_is_refused_naming_the_option(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ERRORGATE_EXPORT_KEY", "c2hvcnQ")
    out = tmp_path / "x.csv"
    assert main(["export", "training", "--config", str(config), "--format", "csv", "-o", str(out)]) == 2
    assert "--key-env" in capsys.readouterr().err and not out.exists()
