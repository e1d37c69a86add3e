"""Chaos Toolkit probes for the network experiments and alert routing
(``"module": "kit.chaos.probes_net"``); they raise ``ActivityFailed`` when the pattern failed."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from prometheus_client.parser import text_string_to_metric_families

from errorgate.alert_rules.alertmanager import build_alertmanager_config
from errorgate.alert_rules.generate import dump_yaml
from errorgate.alert_rules.policy import load_policy
from errorgate.alert_rules.rules import build_specs
from errorgate.governance.catalog import load_catalog
from kit.chaos import _shop
from kit.chaos._shop import Configuration

CATALOG = Path(__file__).resolve().parent / "services.yaml"  # who owns the demo shop's services


def _submit(state: dict[str, Any], key: str, timeout: float) -> _shop.Answer:
    """One submission as an impatient client makes it: status 0 when it gave up waiting."""
    body = json.dumps({"sku": _shop.SKU, "qty": 1}).encode()
    started = time.monotonic()
    try:
        return _shop.http(f"{state['orders']['url']}/orders", body, {"Idempotency-Key": key}, timeout=timeout)
    except OSError:  # the client's timeout: the order may still be placed behind its back
        return _shop.Answer(0, {}, time.monotonic() - started)


def orders_survive_loss(
    orders: int = 10,
    client_timeout: float = 0.6,
    client_attempts: int = 20,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """``orders`` orders through a lossy link, each from a client that gives up after
    ``client_timeout`` s and resubmits with the same Idempotency-Key: every order ends accepted,
    and the shop has exactly one order event and one charge per order (no duplicates)."""
    state = _shop.load(configuration)
    client = _shop.queue(state)
    events, charges = client.xlen("orders"), client.llen("charges")
    finals, resubmits, ids = [], 0, set()
    for _ in range(orders):
        key = f"chaos-loss-{uuid.uuid4().hex}"
        answer = _submit(state, key, client_timeout)
        for _retry in range(client_attempts):
            if answer.status == 201:
                break
            resubmits += 1
            time.sleep(0.2)
            answer = _submit(state, key, client_timeout)
        finals.append(answer.status)
        ids.add(answer.body.get("order"))
    _shop.poll(lambda: client.llen("charges") - charges >= orders, within=10)
    time.sleep(0.5)  # a duplicate charge would land now
    figures = {"final_statuses": sorted(set(finals)), "client_resubmits": resubmits, "distinct_orders": len(ids),
               "new_events": client.xlen("orders") - events, "new_charges": client.llen("charges") - charges}  # fmt: skip
    if set(finals) != {201}:
        raise ActivityFailed(f"orders not accepted through the lossy link: {figures}")
    if figures["new_events"] != orders or figures["new_charges"] != orders or len(ids) != orders:
        raise ActivityFailed(f"duplicate or lost orders: {figures}")
    return figures


def _errors_by_service(port: int) -> dict[str, dict[str, str]]:
    """Per service errorgate counted errors for: the labels of its largest errors series."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    best: dict[str, tuple[float, dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "errorgate_errors":
            for sample in family.samples:
                service = sample.labels.get("service", "")
                if sample.name.endswith("_total") and sample.value > best.get(service, (0.0, {}))[0]:
                    best[service] = (sample.value, dict(sample.labels))
    return {service: labels for service, (_, labels) in best.items()}


def _routes(alertmanager_yml: Path, labels: dict[str, str]) -> list[str]:
    amtool = shutil.which("amtool")
    if amtool is None:
        raise ActivityFailed("amtool not installed (Debian package prometheus-alertmanager)")
    argv = [amtool, "config", "routes", "test", f"--config.file={alertmanager_yml}",
            *(f"{k}={v}" for k, v in sorted(labels.items()))]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise ActivityFailed(f"amtool config routes test: {done.stderr.strip()}")
    return sorted(r.strip() for r in done.stdout.strip().split(","))


def alert_routes_to_owner(
    service: str, within: float = 20.0, configuration: Configuration = None
) -> dict[str, Any]:
    """The error-rate alert errorgate's generated rules raise for ``service`` (labels: the rule's
    team/severity/service plus the kind and category errorgate counted for it) is routed by the
    generated Alertmanager config (``amtool config routes test``) to the receivers of the team the
    catalog (kit/chaos/services.yaml) names as its owner, and to no other team's."""
    state = _shop.load(configuration)
    catalog, policy = load_catalog(str(CATALOG)), load_policy(None)
    owner = catalog.services[service].owner
    seen = _shop.poll(
        lambda: _errors_by_service(state["errorgate"]["metrics"]).get(service), within, every=0.5
    )
    if not seen:
        raise ActivityFailed(f"errorgate counted no errors for {service}")
    [spec] = [s for s in build_specs(catalog, policy)
              if s.alertname == "ErrorgateErrorRateHigh" and s.labels.get("service") == service]  # fmt: skip
    labels = {"alertname": spec.alertname, **spec.labels, "kind": seen["kind"], "category": seen["category"]}
    with tempfile.TemporaryDirectory(prefix="errorgate-chaos-am-") as tmp:
        config = Path(tmp) / "alertmanager.yml"
        config.write_text(dump_yaml(build_alertmanager_config(catalog, policy)))
        receivers = _routes(config, labels)
    teams = sorted(
        {t for t in [*catalog.teams, *catalog.owners] if any(r.startswith(f"{t}-") for r in receivers)}
    )
    figures = {"alert": labels, "receivers": receivers, "owner": owner}
    if teams != [owner]:
        raise ActivityFailed(
            f"the alert for {service} reaches teams {teams}, not its owner {owner!r}: {figures}"
        )
    return figures
