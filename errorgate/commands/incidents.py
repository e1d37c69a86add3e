"""``errorgate incidents serve|list|show|ack|resolve|close|note|report|action|postmortem``: the
incident engine."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from errorgate.cli import CommandError
from errorgate.config import Config, load_config, parse_duration

log = logging.getLogger(__name__)


def _store(config: Config):  # type: ignore[no-untyped-def]
    from errorgate.incidents.store import Store, default_url

    store = Store(config.incidents.store or default_url(config.service.data_dir))
    store.upgrade()
    return store


class EngineRole:
    """The incident engine as one unit (store, API, web page, escalation worker): ``errorgate
    incidents serve`` runs it alone, ``errorgate serve`` next to the gateway (a service role).
    Everything that can fail on the config fails here, before anything listens."""

    name = "incidents"

    def __init__(self, config: Config) -> None:
        self.started = False
        from errorgate.incidents.engine import Engine
        from errorgate.incidents.escalation import Escalator, Worker, opsgenie_webhook, pagerduty_webhook
        from errorgate.incidents.http import Api, HttpServer
        from errorgate.incidents.notify import DeliveryError, channels
        from errorgate.incidents.web import WebPage

        inc = config.incidents
        oncall = _oncall(inc.oncall, inc.catalog)
        try:
            paging = channels(inc.escalation)
        except DeliveryError as e:
            raise CommandError(str(e)) from None
        self.engine = Engine(_store(config))
        self.election, ledger, actor = _ha(config, self.engine)
        api = Api(self.engine, os.environ.get(inc.token_env) or None, inc.token_env)
        try:
            self.http = HttpServer(api, inc.endpoint)
        except OSError as e:
            raise CommandError(f"incidents.endpoint: cannot listen on {inc.endpoint}: {e.strerror}") from None
        WebPage(api, lambda at: [oncall.now(team, at) for team in sorted(oncall.spec.teams)]).install()
        escalator = Escalator(
            self.engine,
            oncall,
            paging,
            inc.public_url or self.http.url,
            ledger,
            actor,
            retry=inc.escalation.retry,
        )
        silences = _silence_jobs(config, self.engine, ledger, actor)
        jobs = [escalator.tick, *_postmortem_jobs(config, self.engine, api, ledger, actor), *silences]
        self.worker = Worker(jobs, inc.escalation.check_interval)
        api.on_change = self.worker.wake
        if inc.escalation.pagerduty and inc.escalation.pagerduty.webhook_secret_env:
            secret = os.environ.get(inc.escalation.pagerduty.webhook_secret_env)
            api.routes[("POST", "/api/v1/webhooks/pagerduty")] = pagerduty_webhook(
                self.engine, secret, self.worker.wake
            )
        if inc.escalation.opsgenie and inc.escalation.opsgenie.webhook_token_env:
            token = os.environ.get(inc.escalation.opsgenie.webhook_token_env)
            api.routes[("POST", "/api/v1/webhooks/opsgenie")] = opsgenie_webhook(
                self.engine, token, self.worker.wake
            )

    @property
    def url(self) -> str:
        return str(self.http.url)

    def describe(self) -> str:
        store = self.engine.store.engine.url.render_as_string(hide_password=True)
        return f"incident engine on {self.url} (store {store})"

    def start(self) -> None:
        if self.election is not None:
            self.election.start()
        self.http.start()
        self.worker.start()
        self.started = True
        log.info("incident engine started", extra={"url": self.url})

    def stop(self) -> None:
        if self.started:
            self.worker.stop()
            self.http.stop()
            if self.election is not None:
                self.election.stop()  # revokes the lease: a standby leads at once
        else:  # built, never started (another role failed): free the socket all the same
            self.http.server.server_close()
        self.engine.store.dispose()
        log.info("incident engine stopped")


def service_roles(config: Config) -> list[EngineRole]:
    """The roles ``errorgate serve`` runs next to the gateway: the engine when the file has an
    ``incidents:`` section (``enabled: false`` opts out) or says ``enabled: true``."""
    enabled = config.incidents.enabled
    if enabled is None:
        enabled = "incidents" in config.model_fields_set
    return [EngineRole(config)] if enabled else []


def _serve(args: argparse.Namespace) -> int:
    from errorgate.logs import configure_logging

    config = load_config(args.config)
    configure_logging(config.service.telemetry.logs.level, config.service.telemetry.logs.encoding)
    role = EngineRole(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    role.start()
    print(role.describe(), flush=True)
    stop.wait()
    role.stop()
    return 0


def _oncall(path: str | None, catalog: str | None):  # type: ignore[no-untyped-def]
    from errorgate.governance.catalog import CatalogError, load_catalog
    from errorgate.governance.oncall import OnCallError, load_oncall

    try:
        return load_oncall(path, load_catalog(catalog))
    except (OnCallError, CatalogError) as e:
        raise CommandError(f"incidents.oncall: {e}") from None


def _postmortem_jobs(
    config: Config, engine: Any, api: Any, ledger: Any = None, actor: str = "engine"
) -> list[Any]:
    """Postmortems, action items and the Jira webhook (action items are taken without Jira too,
    and wait in the store until it is configured). Filing is claimed in ``ledger`` (``ha:``)."""
    jira = config.incidents.jira
    if jira is None:
        from errorgate.incidents.actions import ActionItems

        ActionItems(engine).install(api)
        return []
    from errorgate.incidents.jira_webhook import jira_webhook
    from errorgate.incidents.postmortem import Postmortems
    from errorgate.incidents.review import Reviewer

    reviewer = Reviewer(redact_person_spans) if jira.review else None
    pm = Postmortems(engine, jira, reviewer=reviewer, ledger=ledger, actor=actor)
    pm.install(api)
    if jira.webhook_secret_env:
        secret = os.environ.get(jira.webhook_secret_env)
        if not secret:
            raise CommandError(
                f"incidents.jira.webhook_secret_env: environment variable {jira.webhook_secret_env} is not set"
            )
        jira_webhook(api, secret, pm.apply_status)
    return [pm.tick]


def redact_person_spans() -> Any:
    """PERSON spans as the redact processor finds them (its default policy and recognizers, in
    process; the model loads on the first check), for the postmortem reviewer check."""
    from errorgate.processors.redact import RedactConfig
    from errorgate.processors.redaction.pool import Detector

    config = RedactConfig(workers=0)
    detector = Detector(
        config.engine_settings(config.effective_policy()), workers=0, cache_size=0, timeout=60.0
    )
    lock = threading.Lock()

    def spans(text: str) -> list[tuple[int, int]]:
        with lock:
            found = detector.detect([(text, True)]).get((text, True))
        if found is None:  # analysis failed: say so rather than call the text clean
            raise RuntimeError("name detection failed")
        return [(f.start, f.end) for f in found if f.entity_type == "PERSON"]

    return spans


def _ha(config: Config, engine: Any) -> tuple[Any, Any, str]:
    """(election, ledger, timeline actor) of the engine's singleton actions (pages, silences,
    postmortem and action-item filing):
    with ``ha:``, a leader elected on etcd for the role ``incidents`` whose claims are fenced;
    without, (None, None, "engine"): this instance acts alone."""
    if config.ha is None:
        return None, None, "engine"
    from errorgate.ha.election import export_leadership, from_config
    from errorgate.ha.ledger import FencedLedger

    election = from_config(config.ha, "incidents")
    export_leadership(election, engine.registry, "incidents")
    return election, FencedLedger(election), f"engine {election.identity}"


def _silence_jobs(config: Config, engine: Any, ledger: Any = None, actor: str = "engine") -> list[Any]:
    silence = config.incidents.silence
    if silence is None:
        return []
    from errorgate.incidents.silences import AlertmanagerSilences, GrafanaSilences, Silencer

    targets: list[AlertmanagerSilences] = []
    if silence.alertmanager is not None:
        if not silence.alertmanager.startswith(("http://", "https://")):
            raise CommandError(
                f"incidents.silence.alertmanager: {silence.alertmanager!r} is not an http(s) URL"
            )
        token = os.environ.get(silence.token_env) if silence.token_env else None
        targets.append(AlertmanagerSilences(silence.alertmanager, token))
    if silence.grafana is not None:
        # Grafana answers every API call without a token with 401: fail here, not at the first incident.
        grafana_token = os.environ.get(silence.grafana.token_env)
        if not grafana_token:
            raise CommandError(
                f"incidents.silence.grafana.token_env: environment variable {silence.grafana.token_env} "
                "is not set (a Grafana service-account token)"
            )
        targets.append(GrafanaSilences(silence.grafana.url, grafana_token))
    return [Silencer(engine, silence, targets, ledger, actor).tick]


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    config = load_config(args.config)
    base = args.url or f"http://{config.incidents.endpoint}"
    req = urllib.request.Request(base.rstrip("/") + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)  # fmt: skip
    token = os.environ.get(config.incidents.token_env)
    if method == "POST":
        if not token:
            raise CommandError(
                f"incidents.token_env: set {config.incidents.token_env} to the engine's API token"
            )
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            reason = e.reason
        raise CommandError(f"HTTP {e.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise CommandError(f"--url {base}: cannot connect ({getattr(e, 'reason', e)})") from None


def _emit(args: argparse.Namespace, doc: Any, text: Callable[[Any], Iterator[str]]) -> None:
    """``doc`` as the API returned it with ``--format json``, else the lines ``text`` makes of it."""
    if args.format == "json":
        print(json.dumps(doc, indent=2))
        return
    for line in text(doc):
        print(line)


def _incident_rows(doc: Any) -> Iterator[str]:
    for i in doc["incidents"]:
        yield f"{i['id']:>5} {i['severity']} {i['status']:<12} {i['opened_at']} {','.join(i['services'])}  {i['title']}"


def _list(args: argparse.Namespace) -> int:
    doc = _api(args, "GET", "/api/v1/incidents" + (f"?status={args.status}" if args.status else ""))
    _emit(args, doc, _incident_rows)
    return 0


def _timeline(doc: Any) -> Iterator[str]:
    yield f"incident {doc['id']} {doc['severity']} {doc['status']}: {doc['title']}"
    for e in doc["timeline"]:
        yield f"  {e['at']}  {e['kind']:<14} {e['actor']:<14} {e['message']}"


def _show(args: argparse.Namespace) -> int:
    _emit(args, _api(args, "GET", f"/api/v1/incidents/{args.id}"), _timeline)
    return 0


def _change(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"by": args.by or os.environ.get("USER", "cli")}
    if args.action == "note":
        body["text"] = args.text
    doc = _api(args, "POST", f"/api/v1/incidents/{args.id}/{args.action}", body)
    print(f"incident {doc['id']}: {doc['status']}")
    return 0


def _action_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "team": args.team,
        "summary": args.summary,
        "by": args.by or os.environ.get("USER", "cli"),
    }
    if args.due:
        body["due"] = args.due
    doc = _api(args, "POST", f"/api/v1/incidents/{args.id}/actions", body)
    print(f"incident {doc['incident']}: action item {doc['id']} for team {doc['team']} ({doc['status']})")
    return 0


def _action_rows(doc: Any) -> Iterator[str]:
    for a in doc["action_items"]:
        late = " OVERDUE" if a["overdue"] else ""
        yield f"{a['id']:>5} {a['key'] or '-':<10} {a['status'] or '-':<12} {a['team']:<14} due {a['due'] or '-'}{late}  {a['summary']}"


def _action_list(args: argparse.Namespace) -> int:
    _emit(args, _api(args, "GET", f"/api/v1/incidents/{args.id}/actions"), _action_rows)
    return 0


def _findings(doc: Any) -> Iterator[str]:
    yield f"postmortem {doc['postmortem']} of incident {doc['incident']}: {len(doc['findings'])} finding(s)"
    for f in doc["findings"]:
        what = f"blame wording '{f['term']}'" if f["kind"] == "blame" else "personal name"
        yield f"  {f['line']}:{f['column']} {what} ({f['length']} chars): {f['why']}"


def _postmortem_check(args: argparse.Namespace) -> int:
    """Exit 0 when the postmortem reads blameless, 1 with findings (positions, never names)."""
    doc = _api(args, "GET", f"/api/v1/incidents/{args.id}/postmortem/check")
    _emit(args, doc, _findings)
    return 1 if doc["findings"] else 0


def _report(args: argparse.Namespace) -> int:
    from errorgate.incidents.actions import ActionItems
    from errorgate.incidents.engine import Engine
    from errorgate.incidents.report import build_report, to_html, to_markdown

    try:
        window = parse_duration(args.since)
    except ValueError as e:
        raise CommandError(f"--since: {e}") from None
    engine = Engine(_store(load_config(args.config)))
    now = time.time()
    found = engine.find(since=now - window)
    actions = ActionItems(engine).find([i.id for i in found])
    report = build_report(found, now - window, now, actions)
    text = {"json": lambda: json.dumps(report, indent=2), "markdown": lambda: to_markdown(report),
            "html": lambda: to_html(report)}[args.format]()  # fmt: skip
    print(text)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("incidents", help="the incident engine: serve, list, ack, resolve, report",
                              description="Incidents from alerts, with a timeline and MTTD/MTTA/MTTR.")  # fmt: skip
    sub = p.add_subparsers(dest="incidents_command", metavar="ACTION", required=True)
    s = sub.add_parser("serve", help="run the engine (HTTP on incidents.endpoint)")
    s.set_defaults(func=_serve)
    s = sub.add_parser("list", help="incidents, newest first")
    s.add_argument("--status", help="comma-separated: open,acknowledged,resolved,closed")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=_list)
    s = sub.add_parser("show", help="one incident and its timeline")
    s.add_argument("id")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=_show)
    for action in ("ack", "resolve", "close", "note"):
        s = sub.add_parser(action, help=f"{action} an incident (needs the API token)")
        s.add_argument("id")
        if action == "note":
            s.add_argument("text")
        s.add_argument("--by", help="who acts (default $USER)")
        s.set_defaults(func=_change, action=action)
    _add_postmortem_commands(sub)
    s = sub.add_parser("report", help="MTTD/MTTA/MTTR medians, per team, service and severity")
    s.add_argument("--since", default="30d", help="window, e.g. 30d (default 30d)")
    s.add_argument("--format", choices=("json", "markdown", "html"), default="markdown")
    s.set_defaults(func=_report)
    for s in sub.choices.values():
        if s.get_default("func") is None:
            continue  # a group (action, postmortem): its own commands take the options
        s.add_argument("--config", metavar="FILE", help="config file (default: the embedded default)")
        if s.get_default("func") not in (_serve, _report):
            s.add_argument("--url", help="engine URL (default: http://<incidents.endpoint>)")


def _add_postmortem_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("action", help="a postmortem's action items (linked Jira issues)")
    actions = p.add_subparsers(dest="action_command", metavar="ACTION", required=True)
    s = actions.add_parser("add", help="add an action item owned by a team (needs the API token)")
    s.add_argument("id")
    s.add_argument("--team", required=True, help="the owning team")
    s.add_argument("--summary", required=True, help="what is to be done (no personal names)")
    s.add_argument("--due", help="due date, YYYY-MM-DD")
    s.add_argument("--by", help="who adds it (default $USER)")
    s.set_defaults(func=_action_add)
    s = actions.add_parser("list", help="an incident's action items and their Jira state")
    s.add_argument("id")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=_action_list)
    p = sub.add_parser("postmortem", help="the P1 postmortem in Jira")
    pm = p.add_subparsers(dest="postmortem_command", metavar="ACTION", required=True)
    s = pm.add_parser("check", help="reviewer check: blame wording and personal names (exit 1 on findings)")
    s.add_argument("id")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=_postmortem_check)
    for group in (actions, pm):
        for s in group.choices.values():
            s.add_argument("--config", metavar="FILE", help="config file (default: the embedded default)")
            s.add_argument("--url", help="engine URL (default: http://<incidents.endpoint>)")
