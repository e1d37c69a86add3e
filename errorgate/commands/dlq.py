"""``errorgate dlq list|replay``: inspect and re-send the dead-letter store (``<data_dir>/dlq``).

``list`` shows metadata only (id, time, signal, items, reason, source, detail) — never payload
values. Entries a *processor* failed on were dead-lettered as received, before redaction and
encryption, so ``replay`` sends them back through the running gateway's own OTLP receiver
(every processor runs again) and refuses to hand them to an exporter directly. Entries the
receiver rejected as invalid are kept for inspection only: they would be rejected again.
Other entries (export failures) are sent straight through the named exporter (default: every
exporter of the pipelines of the entry's signal), retrying transient failures with the
exporter's backoff until ``--max-time``; an entry is removed only once every target accepted it
(so an entry that failed for one of two exporters may reach the other twice on a re-run).
With an ``ha:`` section, a replay holds a lock on etcd while it runs and refuses to start
while another holds it: two replays of one store would send its entries twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from errorgate.codec import BytesCodec
from errorgate.component import EXPORTERS, ComponentContext, Exporter, ExportStatus, component_type
from errorgate.config import Config, RetryConfig, delivery_settings, load_config
from errorgate.delivery.dlq import DeadLetterEntry, DeadLetterStore
from errorgate.delivery.policy import Backoff
from errorgate.ha.election import Election, from_config
from errorgate.ha.etcd import EtcdUnavailable
from errorgate.signals import Batch, Signal
from errorgate.telemetry import Telemetry


class DlqCommandError(Exception):
    pass


_ROW = "{:<26} {:<20} {:<8} {:>6}  {:<24} {:<24} {}"


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "dlq",
        help="inspect or replay the dead-letter store",
        description="Inspect (list) or re-send (replay) batches in the dead-letter store <data_dir>/dlq.",
    )
    sub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="list dead-lettered batches (metadata only, never payload values)")
    ls.add_argument("--config", metavar="FILE", help="config file (default: the embedded default config)")
    ls.add_argument("--format", choices=("text", "json"), default="text")
    ls.set_defaults(func=run_list)

    rp = sub.add_parser(
        "replay",
        help="re-send dead-lettered batches",
        description="Send entries through an exporter with retries; remove each entry only after success.",
    )
    rp.add_argument("--config", metavar="FILE", help="config file (default: the embedded default config)")
    rp.add_argument(
        "--exporter", metavar="ID", help="exporter id from the config (default: the pipelines' ones)"
    )
    rp.add_argument("--id", dest="entry_id", metavar="ENTRY", help="replay only this entry")
    rp.add_argument(
        "--max-time", type=float, default=30.0, help="seconds to keep retrying one entry (default 30)"
    )
    rp.set_defaults(func=run_replay)


# ------------------------------------------------------------------ shared


def _open_store(config: Config) -> DeadLetterStore:
    data_dir = Path(config.service.data_dir)
    directory = data_dir / "dlq"
    if not directory.is_dir():
        raise DlqCommandError(
            f"no dead-letter store at {directory} (service.data_dir = {config.service.data_dir})"
        )
    return DeadLetterStore(directory, Telemetry(), _codec(config, data_dir))


def _codec(config: Config, data_dir: Path) -> BytesCodec | None:
    """The at-rest codec the gateway uses for this config (the same keyring, as ``serve`` builds it)."""
    from errorgate.service.builder import build_extensions

    return build_extensions(config, data_dir, Telemetry()).at_rest_codec()


def _fail(message: str) -> int:
    print(f"errorgate dlq: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------ list


def run_list(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        store = _open_store(config)
    except DlqCommandError as e:
        if args.format == "json":
            print("[]")
            return 0
        print(f"dead-letter store is empty ({e})")
        return 0
    entries = store.list()
    if args.format == "json":
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print("dead-letter store is empty")
        return 0
    print(_ROW.format("ID", "TIME (UTC)", "SIGNAL", "ITEMS", "REASON", "SOURCE", "DETAIL"))
    for entry in entries:
        when = datetime.fromtimestamp(entry.time, UTC).strftime("%Y-%m-%d %H:%M:%S")
        row = (entry.id, when, entry.signal.value, entry.items, entry.reason, entry.source, entry.detail)
        print(_ROW.format(*row))
    print(f"{len(entries)} entries, {sum(x.items for x in entries)} items")
    return 0


# ------------------------------------------------------------------ replay


def run_replay(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        store = _open_store(config)
    except DlqCommandError as e:
        return _fail(str(e))
    entries = store.list()
    if args.entry_id:
        entries = [e for e in entries if e.id == args.entry_id]
        if not entries:
            return _fail(f"--id: no dead-letter entry {args.entry_id!r}")
    if args.exporter and args.exporter not in config.exporters:
        known = ", ".join(sorted(config.exporters)) or "none"
        return _fail(f"--exporter: {args.exporter!r} is not defined under exporters: (known: {known})")
    try:
        lock = _replay_lock(config)
    except DlqCommandError as e:
        return _fail(str(e))
    replayer = _Replayer(config, args.max_time)
    ok = failed = items = 0
    try:
        for entry in entries:
            refusal = _replay_refusal(entry, args.exporter)
            if lock is not None and not lock.is_leader:
                refusal = "lost the replay lock on etcd (ha:); run the replay again"
            if refusal is not None:
                failed += 1
                print(f"{entry.id}: not replayed: {refusal}", file=sys.stderr)
                continue
            if entry.source.startswith("processor:"):
                outcome = _replay_through_gateway(config, store, entry)
                if outcome is None:
                    store.remove(entry.id)
                    ok += 1
                    items += entry.items
                    print(
                        f"{entry.id}: re-sent {entry.items} {entry.signal.value} item(s) through the gateway"
                    )
                else:
                    failed += 1
                    print(f"{entry.id}: not replayed: {outcome}", file=sys.stderr)
                continue
            targets = [args.exporter] if args.exporter else replayer.default_targets(entry.signal)
            if not targets:
                print(
                    f"{entry.id}: no pipeline exports {entry.signal.value}; use --exporter", file=sys.stderr
                )
                failed += 1
                continue
            outcome = replayer.replay(store, entry, targets)
            if outcome is None:
                store.remove(entry.id)
                ok += 1
                items += entry.items
                print(
                    f"{entry.id}: replayed {entry.items} {entry.signal.value} item(s) to {', '.join(targets)}"
                )
            else:
                failed += 1
                print(f"{entry.id}: not replayed: {outcome}", file=sys.stderr)
    finally:
        replayer.shutdown()
        if lock is not None:
            lock.stop()  # revokes its lease: the next replay may start at once
    print(f"replayed {ok} of {ok + failed} entries ({items} items); {failed} failed")
    return 1 if failed else 0


def _replay_lock(config: Config) -> Election | None:
    """With ``ha:``, one ``dlq replay`` at a time among the instances sharing ``ha.prefix``:
    the lock is the leadership of the role ``dlq-replay`` (an etcd lease kept alive while the
    replay runs; a replay that dies frees it after ``ha.lease_ttl``). Without ``ha:``: None."""
    if config.ha is None:
        return None
    election = from_config(config.ha, "dlq-replay")
    election.step()
    if election.is_leader:
        election.start()
        return election
    try:
        holder = election.client.get(election.key)
    except EtcdUnavailable:
        holder = None
    election.stop()
    if holder is None:
        raise DlqCommandError(
            "ha.etcd.endpoints: cannot take the replay lock (etcd unreachable or without quorum)"
        )
    raise DlqCommandError(
        f"another replay is running ({holder} holds {election.key}); run it again when it ends"
    )


class _Replayer:
    def __init__(self, config: Config, max_time: float) -> None:
        self.config = config
        self.max_time = max_time
        self._exporters: dict[str, tuple[Exporter, Any]] = {}

    def default_targets(self, signal: Signal) -> list[str]:
        out: list[str] = []
        for name, pipeline in self.config.service.pipelines.items():
            if component_type(name) == signal.value:
                out.extend(e for e in pipeline.exporters if e not in out)
        return out

    def _exporter(self, exporter_id: str) -> tuple[Exporter, Any]:
        if exporter_id not in self._exporters:
            cfg = self.config.exporters[exporter_id]
            factory = EXPORTERS.get(component_type(exporter_id))
            if factory is None:
                raise DlqCommandError(f"exporter {exporter_id!r}: unknown type")
            context = ComponentContext(
                component_id=exporter_id,
                data_dir=Path(self.config.service.data_dir),
                telemetry=Telemetry(),
                logger=logging.getLogger(f"errorgate.{exporter_id}"),
            )
            self._exporters[exporter_id] = (factory.create(cfg, context), cfg)
        return self._exporters[exporter_id]

    def replay(self, store: DeadLetterStore, entry: DeadLetterEntry, targets: list[str]) -> str | None:
        """None on success, else why it failed (PII-free)."""
        try:
            signal, request = store.load(entry.id)
        except (KeyError, ValueError) as e:
            return f"cannot load entry ({type(e).__name__}: {e})"
        for exporter_id in targets:
            try:
                exporter, cfg = self._exporter(exporter_id)
            except (DlqCommandError, ValueError) as e:
                return str(e)
            if signal not in exporter.signals:
                return f"exporter {exporter_id} does not export {signal.value}"
            error = self._send(exporter, cfg, Batch(signal, request))
            if error is not None:
                return f"exporter {exporter_id}: {error}"
        return None

    def _send(self, exporter: Exporter, cfg: Any, batch: Batch) -> str | None:
        delivery = delivery_settings(cfg)
        retry: RetryConfig = delivery.retry_on_failure
        timeout = delivery.timeout or 5.0
        backoff = Backoff(retry)
        deadline = time.monotonic() + self.max_time
        attempt = 0
        while True:
            attempt += 1
            try:
                result = exporter.export(batch, timeout)
            except Exception as e:
                return f"exporter raised {type(e).__name__}"
            if result.status is ExportStatus.SUCCESS:
                if result.rejected_items:
                    print(
                        f"  backend rejected {result.rejected_items} item(s) (partial success)",
                        file=sys.stderr,
                    )
                return None
            if result.status is ExportStatus.PERMANENT:
                return f"permanent error {result.reason}"
            delay = backoff.delay(attempt, result.retry_after)
            if time.monotonic() + delay > deadline:
                return f"still failing after {attempt} attempt(s) ({result.reason}); --max-time reached"
            time.sleep(delay)

    def shutdown(self) -> None:
        for exporter, _cfg in self._exporters.values():
            try:
                exporter.shutdown()
            except Exception:
                pass


def _replay_refusal(entry: DeadLetterEntry, exporter: str | None) -> str | None:
    if entry.source.startswith("receiver:"):
        return f"invalid items ({entry.detail}) would be rejected again; fix them at the source"
    if entry.source.startswith("processor:") and exporter:
        return (
            f"the batch failed in {entry.source.removeprefix('processor:')} before redaction and encryption; "
            "it can only be replayed through the gateway (omit --exporter)"
        )
    return None


def _replay_through_gateway(config: Config, store: DeadLetterStore, entry: DeadLetterEntry) -> str | None:
    """Send the batch to the running gateway's OTLP/gRPC receiver so every processor runs again."""
    import grpc

    from errorgate.receiver import OtlpReceiverConfig

    endpoint = token = None
    credentials = None
    for receiver in config.receivers.values():
        if isinstance(receiver, OtlpReceiverConfig) and receiver.protocols.grpc is not None:
            grpc_cfg = receiver.protocols.grpc
            endpoint = grpc_cfg.endpoint
            if grpc_cfg.tls is not None:
                credentials = grpc.ssl_channel_credentials(Path(grpc_cfg.tls.cert_file).read_bytes())
            if receiver.auth is not None:
                token = _first_token(receiver.auth)
            break
    if endpoint is None:
        return "no OTLP/gRPC receiver in the config to replay through"
    try:
        signal, request = store.load(entry.id)
    except (KeyError, ValueError) as e:
        return f"cannot load entry ({type(e).__name__})"
    host, _, port = endpoint.rpartition(":")
    target = f"{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"
    service = {
        Signal.TRACES: "trace.v1.TraceService",
        Signal.LOGS: "logs.v1.LogsService",
        Signal.METRICS: "metrics.v1.MetricsService",
    }[signal]
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        call = channel.unary_unary(
            f"/opentelemetry.proto.collector.{service}/Export",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        metadata = [("authorization", f"Bearer {token}")] if token else None
        try:
            call(request.SerializeToString(), timeout=30, metadata=metadata)
        except grpc.RpcError as e:
            return f"gateway at {target} answered {e.code().name}: {e.details()}"
    return None


def _first_token(auth: Any) -> str | None:
    import os

    if auth.bearer_token_env and os.environ.get(auth.bearer_token_env):
        return os.environ[auth.bearer_token_env].strip()
    if auth.bearer_tokens_file:
        for line in Path(auth.bearer_tokens_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
    return None
