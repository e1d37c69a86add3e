"""The processor worker process itself: builds the hosted processors, then answers the
gateway's messages one at a time: urgent ones (a client waits) first, each class in the order
sent (see ``errorgate.pipeline.worker.client``)."""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal as os_signal
import time
from collections import Counter, deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from errorgate import lifeline
from errorgate.component import (
    EXTENSIONS,
    PROCESSORS,
    ComponentContext,
    Extension,
    Extensions,
    HttpAnswer,
    HttpQuery,
    Processor,
    component_type,
)
from errorgate.config import ConfigError
from errorgate.delivery.exporter import ITEMS_NOTE, SERIALIZED_NOTE
from errorgate.errors import raised_at
from errorgate.logs import configure_logging
from errorgate.pipeline.worker.protocol import NOTE_TYPES, Key, WorkerSettings, pack
from errorgate.signals import WIRE_NOTE, Batch, Signal, count_items
from errorgate.telemetry import Telemetry

log = logging.getLogger("errorgate.processor_worker")
# How long a background message (a trace release) may wait while urgent ones go first.
MAX_BACKGROUND_WAIT_SECONDS = 1.0
# Void once the request changed; the gateway sets its own from the bytes sent back.
_LOCAL_NOTES = frozenset({SERIALIZED_NOTE, ITEMS_NOTE, WIRE_NOTE})


def worker_main(conn: Connection, settings: WorkerSettings, guardians: tuple[int, ...]) -> None:
    # First, before the slow start: the worker ends with the gateway, at whatever moment that
    # ends. Its pipe closing is not enough: it is read only between batches, and a worker that
    # returns on it then waits forever for redact's pool workers (multiprocessing joins child
    # processes before the pool's own exit handler would tell them to stop).
    lifeline.bind(guardians)
    # Ctrl-C and a SIGTERM to the process group are for the gateway, which still needs this
    # process to flush held traces; the worker ends on "shutdown", or with the gateway.
    os_signal.signal(os_signal.SIGINT, os_signal.SIG_IGN)
    os_signal.signal(os_signal.SIGTERM, os_signal.SIG_IGN)
    # A SIGHUP to the process group is the gateway's too: it forwards a reload message.
    os_signal.signal(os_signal.SIGHUP, os_signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(settings.environ)
    configure_logging(settings.log_level, settings.log_encoding)
    telemetry = Telemetry(settings.label_caps)
    gateway_families = {m.name for m in telemetry.registry.collect()}
    try:
        processors = _build_processors(settings, telemetry)
    except ConfigError as e:
        conn.send(("error", str(e)))
        return
    # Started (and the start-up heap collected) before "ready": the gateway opens its receivers
    # once the worker is ready, and this one-off work (redact waits for its detection workers)
    # should not take the cores from the first traffic.
    for processor in processors.values():
        processor.start()
    gc.collect()
    gc.freeze()  # what was built at start lives as long as the process (as in ``errorgate serve``)
    gc.set_threshold(20_000, *gc.get_threshold()[1:])
    conn.send(("ready", {key: processor.signals for key, processor in processors.items()}))
    _serve(conn, processors, telemetry, gateway_families)
    conn.close()


def _build_processors(settings: WorkerSettings, telemetry: Telemetry) -> dict[Key, Processor]:
    """The hosted processors, with the extensions they use built in this process too."""

    def context(component_id: str, extensions: Extensions) -> ComponentContext:
        return ComponentContext(
            component_id=component_id,
            data_dir=settings.data_dir,
            telemetry=telemetry,
            logger=logging.getLogger(f"errorgate.{component_id}"),
            extensions=extensions,
            ha=settings.ha,
        )

    built: dict[str, Extension] = {}
    for extension_id, cfg in settings.extensions.items():
        factory = EXTENSIONS.get(component_type(extension_id))
        assert factory is not None  # the gateway validated the config
        built[extension_id] = factory.create(cfg, context(extension_id, Extensions()))
    extensions = Extensions(built)
    processors: dict[Key, Processor] = {}
    for key, cfg in settings.components.items():
        component_id = key[0]
        processor_factory = PROCESSORS.get(component_type(component_id))
        assert processor_factory is not None
        processors[key] = processor_factory.create(cfg, context(component_id, extensions))
    return processors


def _serve(
    conn: Connection, processors: dict[Key, Processor], telemetry: Telemetry, gateway_families: set[str]
) -> None:
    """Answer the gateway's messages until it says "shutdown" or goes away."""
    inbox = _Inbox(conn)
    while True:
        try:
            sequence, message = inbox.next()
        except (EOFError, OSError):
            return  # the gateway is gone
        kind = message[0]
        if kind == "run":
            conn.send_bytes(pack((sequence, _run(processors, *message[1:]))))
        elif kind == "answer":
            conn.send_bytes(pack((sequence, ("ok", _answer(processors, message[1], message[2])))))
        elif kind == "metrics":
            families = [m for m in telemetry.registry.collect() if m.name not in gateway_families]
            conn.send_bytes(pack((sequence, ("ok", families))))
        elif kind == "reload":
            _reload(processors)
            conn.send_bytes(pack((sequence, ("ok",))))
        elif kind == "shutdown":
            _shut_down(processors)
            conn.send_bytes(pack((sequence, ("ok",))))
            return


def _answer(processors: dict[Key, Processor], key: Key, query: HttpQuery) -> HttpAnswer:
    try:
        return processors[key].answer(query)
    except Exception as e:  # the route's fault, not the worker's: answer and carry on
        log.error("route failed", extra={"component": key[0], "error_type": type(e).__name__})
        return HttpAnswer(500, {"error": f"{key[0]}: {type(e).__name__}"})


def _reload(processors: dict[Key, Processor]) -> None:
    for processor in processors.values():
        try:
            processor.reload()
        except Exception as e:  # one processor's reload must not stop the others'
            log.error("processor reload failed", extra={"error_type": type(e).__name__})


def _shut_down(processors: dict[Key, Processor]) -> None:
    for processor in processors.values():
        try:
            processor.shutdown()
        except Exception as e:
            log.error("processor shutdown failed", extra={"error_type": type(e).__name__})


class _Inbox:
    """The messages sent so far, read as they arrive, handed out urgent ones first: a request a
    client waits for does not wait behind a release of many traces already sent. A background
    message that has waited ``max_background_wait`` seconds goes first, so a steady stream of
    urgent work cannot hold a release back until the gateway's timeout gives up on it."""

    def __init__(
        self,
        conn: Connection,
        max_background_wait: float = MAX_BACKGROUND_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.max_background_wait = max_background_wait
        self.clock = clock
        self.urgent: deque[tuple[int, tuple[Any, ...]]] = deque()
        self.background: deque[tuple[float, int, tuple[Any, ...]]] = deque()

    def next(self) -> tuple[int, tuple[Any, ...]]:
        if not self.urgent and not self.background:
            self._take(pickle.loads(self.conn.recv_bytes()))
        while self.conn.poll(0):
            self._take(pickle.loads(self.conn.recv_bytes()))
        background = self.background
        if self.urgent and not (background and self.clock() - background[0][0] >= self.max_background_wait):
            return self.urgent.popleft()
        _, sequence, message = background.popleft()
        return sequence, message

    def _take(self, received: tuple[int, bool, tuple[Any, ...]]) -> None:
        sequence, urgent, message = received
        if urgent:
            self.urgent.append((sequence, message))
        else:
            self.background.append((self.clock(), sequence, message))


def _run(
    processors: dict[Key, Processor],
    keys: list[Key],
    signal_value: str,
    data: bytes,
    notes: dict[str, object],
    received_at: float,
    receiver: str,
    tenant: str,
) -> tuple[Any, ...]:
    signal = Signal(signal_value)
    batch = Batch(signal, signal.parse(data), received_at=received_at, receiver=receiver, tenant=tenant)
    batch.notes.update(notes)
    batch.notes[WIRE_NOTE] = data
    batches = [batch]
    dropped: Counter[str] = Counter()
    timings: list[tuple[str, float]] = []
    for key in keys:
        processor = processors[key]
        nxt: list[Batch] = []
        for b in batches:
            begin = time.perf_counter()
            try:
                out = processor.process(b)
            except Exception as e:
                timings.append((key[0], time.perf_counter() - begin))
                return ("failed", key[0], type(e).__name__, raised_at(e), timings)
            timings.append((key[0], time.perf_counter() - begin))
            for made in out.batches:
                # The received bytes are for the first processor only: whoever ran may have changed
                # the request without popping them (only readers pop), and a later reader (redact's
                # item signatures) would take stale bytes for the content. No hosted processor makes
                # fresh ones (the trace assembler and the log hold stay in the gateway).
                made.notes.pop(WIRE_NOTE, None)
            nxt.extend(out.batches)
            if out.dropped:
                dropped.update(out.dropped)
        batches = nxt
        if not batches:
            break
    parts = []
    for b in batches:
        kept = {k: v for k, v in b.notes.items() if isinstance(v, NOTE_TYPES) and k not in _LOCAL_NOTES}
        data = b.request.SerializeToString()
        parts.append(
            (b.signal.value, data, count_items(b.request), kept, b.received_at, b.receiver, b.tenant)
        )
    return ("ok", parts, dict(dropped), timings)
