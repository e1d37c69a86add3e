"""Reliable delivery around one exporter: sending queue, retries, circuit breaker, dead letters.

``QueuedExporter`` owns a queue (persistent when ``sending_queue.storage`` is set) and
``sending_queue.num_consumers`` consumer threads. Records are handed to consumers in queue
order; with more than one consumer, batches are *in flight* concurrently, so the backend may
see batch n+1 complete before batch n (the Collector behaves the same). Set
``num_consumers: 1`` for strict delivery order. Each consumer owns its record until it is
exported or dead-lettered, and only then acknowledges it to the queue — so a crash or
shutdown mid-retry leaves the record in a persistent queue for the next start.

Retry loop (hand-rolled around tenacity's full-jitter wait): it has to wait on the circuit
breaker shared by all consumers, honour the server's delay hint, wake promptly on shutdown
and decide dead-lettering on ``max_elapsed_time`` — more state than tenacity's ``Retrying``
loop carries comfortably.

Accounting: every item leaves exactly one way — exported (``errorgate_exported_items_total``),
dropped with a reason (backend ``partial_success`` rejections: ``rejected_by_backend``), or
dead-lettered (``errorgate_dead_lettered_items_total``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

from google.protobuf.message import DecodeError

from errorgate.codec import BytesCodec
from errorgate.component import ComponentConfig, ComponentContext, Exporter, ExportResult, ExportStatus
from errorgate.config import CircuitBreakerConfig, QueueConfig, RetryConfig, delivery_settings
from errorgate.delivery.diskqueue import PersistentQueue
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.delivery.policy import Backoff, CircuitBreaker, CircuitState
from errorgate.delivery.queue import ExportQueue, MemoryQueue, QueueRecord
from errorgate.errors import StorageUnavailable
from errorgate.signals import Batch, Signal, WireBatch

log = logging.getLogger(__name__)

# Batch.notes key under which the serialized request travels, so exporters need not re-encode.
SERIALIZED_NOTE = "_errorgate_serialized"
# Batch.notes key for the request's item count, set by whoever set SERIALIZED_NOTE when it knew
# the count (saves walking the request again); like SERIALIZED_NOTE, void once the request changes.
ITEMS_NOTE = "_errorgate_items"
# Without ``sending_queue.batch``, a backlog of at least MERGE_MIN_BACKLOG records is still
# merged, up to MERGE_MAX_RECORDS records of one signal (at most MERGE_MAX_BYTES together): a
# gRPC call costs about as much CPU as everything else errorgate does with a batch.
MERGE_MIN_BACKLOG = 8
MERGE_MAX_RECORDS = 16
MERGE_MAX_BYTES = 1048576
DEFAULT_TIMEOUT = 5.0


class QueuedExporter:
    def __init__(
        self,
        component_id: str,
        exporter: Exporter,
        config: ComponentConfig,
        context: ComponentContext,
        dlq: DeadLetterStore,
        codec: BytesCodec | None = None,
        *,
        queue_dir: Path | None = None,
        fsync: bool = False,
    ) -> None:
        """The persistent queue lives in ``<sending_queue.storage>/<component id, / as _>`` (a
        relative storage path is relative to the working directory, as in the Collector), or in
        ``queue_dir`` when given. ``sending_queue.enabled: false`` means an in-memory queue."""
        self.component_id = component_id
        self.exporter = exporter
        self.context = context
        self.dlq = dlq
        delivery = delivery_settings(config)
        self.timeout: float = delivery.timeout or DEFAULT_TIMEOUT
        self.retry: RetryConfig = delivery.retry_on_failure
        self.queue_config: QueueConfig = delivery.sending_queue
        breaker_config: CircuitBreakerConfig = delivery.circuit_breaker
        telemetry = context.telemetry
        self._telemetry = telemetry
        self._label = telemetry.cap("exporter", component_id)
        self._source = f"exporter:{component_id}"
        self.backoff = Backoff(self.retry)
        self.breaker = CircuitBreaker(breaker_config, on_change=self._circuit_changed)
        telemetry.circuit_state.labels(self._label).set(0)
        telemetry.child(telemetry.queue_recovery_skipped, self._label)  # exists at 0 (see Telemetry)
        max_bytes = int(self.queue_config.max_size_mib * 1048576)
        storage = queue_dir
        if storage is None and self.queue_config.storage and self.queue_config.enabled:
            # One sub-directory per exporter, so several exporters may name the same storage.
            storage = Path(self.queue_config.storage) / component_id.replace("/", "_")
        self.queue: ExportQueue = (
            PersistentQueue(storage, max_bytes, codec, fsync=fsync, on_damage=self._damaged)
            if storage
            else MemoryQueue(max_bytes)
        )
        self.persistent = storage is not None
        self.queue_directory: Path | None = storage
        # Exporters that only send the serialized request (OTLP) get queued bytes without a parse.
        self._sends_bytes = exporter.capabilities.sends_serialized
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Recent (reason, chosen delay) pairs: what the retry policy decided, for tests and debugging.
        self.retry_log: deque[tuple[str, float]] = deque(maxlen=1000)
        self._bind_gauges()

    # -------------------------------------------------------------- public interface

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        n = self.queue_config.num_consumers
        for i in range(n):
            t = threading.Thread(target=self._consume, name=f"export-{self.component_id}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def enqueue(self, batch: Batch) -> None:
        """Queue ``batch`` (durable on return for a persistent queue); Backpressure when full."""
        items = item_count(batch)
        if not items:
            return
        data = batch.notes.get(SERIALIZED_NOTE)
        if not isinstance(data, bytes):
            # An exporter that sends bytes needs them anyway; with them the batch can be merged.
            data = batch.request.SerializeToString() if self.persistent or self._sends_bytes else None
            if data is not None:
                # Fan-out: the next persistent exporter of this batch reuses the bytes.
                batch.notes[SERIALIZED_NOTE] = data
        # With the bytes in hand, a batch not parsed yet (from the processor worker) stays so.
        request = batch.request if data is None else batch.parsed_request()
        try:
            self.queue.put(batch.signal, request, items, data)
        except StorageUnavailable as e:
            if isinstance(e.__cause__, OSError):
                self._telemetry.record_write_error("queue", e.__cause__)
            raise

    def has_room(self, nbytes: int) -> bool:
        return self.queue.has_room(nbytes)

    def state(self) -> dict[str, object]:
        return {
            "circuit": self.breaker.state.label,
            "queue_items": self.queue.items,
            "queue_bytes": self.queue.nbytes,
            "accepting": self.queue.has_room(0),
        }

    def drain(self, timeout: float) -> bool:
        return self.queue.wait_empty(timeout)

    def shutdown(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        self._threads.clear()
        self.queue.close()
        try:
            self.exporter.shutdown()
        except Exception:
            log.exception("exporter %s: shutdown failed", self.component_id)

    # -------------------------------------------------------------- consumers

    def _damaged(self, skipped_bytes: int) -> None:
        self._telemetry.child(self._telemetry.queue_recovery_skipped, self._label).inc(skipped_bytes)

    def _consume(self) -> None:
        """A consumer thread: it survives every error (a full disk writing the cursor, a read
        error), so what is queued is always delivered once the cause is gone."""
        while not self._stop.is_set():
            try:
                self._consume_once()
            except Exception as e:
                if isinstance(e, OSError):
                    self._telemetry.record_write_error("queue", e)
                log.error(
                    "exporter %s: consumer error (%s); retrying in 1s", self.component_id, type(e).__name__
                )
                self._stop.wait(1.0)

    def _consume_once(self) -> None:
        record = self.queue.get(timeout=0.2)
        if record is not None:
            self._send_taken(record)

    def _send_taken(self, record: QueueRecord) -> None:
        """Deliver ``record`` and whatever ``_gather`` takes with it, acknowledging each."""
        for group in self._gather(record):
            if len(group) > 1 and self._deliver_merged(group):
                for r in group:
                    self.queue.ack(r.seq)
                continue
            for r in group:
                if self._stop.is_set():
                    break  # unacknowledged: a persistent queue hands them out again at the next start
                self._deliver_one(r)

    def _deliver_one(self, record: QueueRecord) -> None:
        try:
            done = self._deliver(record)
        except Exception:
            # A bug here must not lose the record or kill the consumer: keep it for the next start.
            log.exception("exporter %s: delivery loop failed", self.component_id)
            done = False
            self._stop.wait(1.0)
        if done:
            self.queue.ack(record.seq)
        elif not self._stop.is_set():
            # Only reachable after an internal error: retry the same record rather than skip it.
            self._requeue_inline(record)

    def _gather(self, first: QueueRecord) -> list[list[QueueRecord]]:
        """``first`` and the records taken with it, in groups that may each go out as one export
        request (one signal, within the size limits; queue order kept within a signal).

        With ``sending_queue.batch`` the consumer keeps taking records until ``flush_timeout``
        after ``first`` or until a group is full or holds ``min_size`` items; without it only a
        backlog already waiting is merged. Records that cannot be merged form groups of one."""
        batching = self.queue_config.batch
        if not self._mergeable(first):
            return [[first]]
        if batching.enabled:
            min_items, max_items = batching.min_size, batching.max_size
            max_bytes, max_records = int(batching.max_size_mib * 1048576), batching.max_size
            deadline = time.monotonic() + batching.flush_timeout
        elif self.queue.waiting() >= MERGE_MIN_BACKLOG:
            min_items = max_items = 1 << 62
            max_records, max_bytes, deadline = MERGE_MAX_RECORDS, MERGE_MAX_BYTES, 0.0
        else:
            return [[first]]
        groups: list[list[QueueRecord]] = [[first]]
        open_groups: dict[Signal, tuple[list[QueueRecord], list[int]]] = {
            first.signal: (groups[0], [len(first.data or b""), first.items])
        }
        full = first.items >= min_items
        while not full and not self._stop.is_set():
            try:
                nxt = self.queue.get(timeout=0)
            except Exception as e:  # a read error: send what was taken (its records are in hand)
                log.error("exporter %s: queue read failed (%s)", self.component_id, type(e).__name__)
                break
            if nxt is None:
                # Sleep until enough items wait to fill a group, rather than wake for every put.
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                most = max(totals[1] for _group, totals in open_groups.values())
                if not self.queue.wait_backlog(max(1, min_items - most), left):
                    break
                continue
            if not self._mergeable(nxt):
                groups.append([nxt])
                continue
            size = len(nxt.data or b"")
            current = open_groups.get(nxt.signal)
            if current is not None:
                group, totals = current
                if (
                    len(group) < max_records
                    and totals[0] + size <= max_bytes
                    and totals[1] + nxt.items <= max_items
                ):
                    group.append(nxt)
                    totals[0] += size
                    totals[1] += nxt.items
                    full = totals[1] >= min_items
                    continue
                full = True  # that group is as big as it may get: send what we have
            group = [nxt]
            groups.append(group)
            open_groups[nxt.signal] = (group, [size, nxt.items])
        return groups

    def _mergeable(self, record: QueueRecord) -> bool:
        return (
            self._sends_bytes
            and record.data is not None
            and not record.corrupt
            and self.breaker.state is CircuitState.CLOSED
        )

    def _deliver_merged(self, group: list[QueueRecord]) -> bool:
        """One attempt to export the records of ``group`` as one request (serialized export
        requests of one signal concatenate into their merge). True when exported; on any failure
        the caller delivers them one by one, so retries, dead letters and backend refusals stay
        per record."""
        items = sum(r.items for r in group)
        data = b"".join(r.data for r in group if r.data is not None)
        result = self._attempt(SerializedBatch(group[0].signal, data, items))
        if result.status is not ExportStatus.SUCCESS:
            return False
        self.breaker.success()
        signal = group[0].signal.value
        rejected = min(result.rejected_items, items)
        self._telemetry.record_exported(signal, self._label, items - rejected)
        self._telemetry.record_dropped(signal, "rejected_by_backend", rejected)
        return True

    def _requeue_inline(self, record: QueueRecord) -> None:
        while not self._stop.is_set():
            try:
                if self._deliver(record):
                    self.queue.ack(record.seq)
                    return
            except Exception:
                log.exception("exporter %s: delivery loop failed", self.component_id)
            self._stop.wait(1.0)

    def _deliver(self, record: QueueRecord) -> bool:
        """Export ``record`` until it is exported or dead-lettered (True) or we are stopping (False)."""
        signal = record.signal.value
        batch: Batch | None = None
        if record.corrupt:
            pass
        elif record.request is None and record.data is not None and self._sends_bytes:
            batch = SerializedBatch(record.signal, record.data, record.items)
        else:
            try:
                batch = Batch(record.signal, record.to_request())
            except DecodeError:
                pass
            else:
                if record.data is not None:
                    batch.notes[SERIALIZED_NOTE] = record.data
        if batch is None:
            # The at-rest codec refused the record (tampered or key gone): no payload to deliver or keep.
            self._telemetry.record_dropped(signal, "queue_record_unreadable", record.items)
            log.error(
                "exporter %s: dropped an unreadable queue record (%d items)", self.component_id, record.items
            )
            return True
        started = time.monotonic()
        attempt = 0
        while True:
            wait = self.breaker.acquire()
            while wait > 0:
                if self._expired(started, wait):
                    return self._dead_letter(batch, "max_elapsed_time", "circuit open until max_elapsed_time")
                if self._stop.wait(min(wait, 0.5)):
                    return False
                wait = self.breaker.acquire()
            attempt += 1
            result = self._attempt(batch)
            if result.status is ExportStatus.SUCCESS:
                self.breaker.success()
                rejected = min(result.rejected_items, record.items)
                self._telemetry.record_exported(signal, self._label, record.items - rejected)
                self._telemetry.record_dropped(signal, "rejected_by_backend", rejected)
                return True
            if result.status is ExportStatus.PERMANENT:
                # The backend answered, so it is reachable: a permanent refusal says nothing about its health.
                self.breaker.success()
                return self._dead_letter(batch, "permanent_export_error", result.reason)
            self.breaker.failure()
            if not self.retry.enabled:
                return self._dead_letter(batch, "retry_disabled", result.reason)
            delay = self.backoff.delay(attempt, result.retry_after)
            self.retry_log.append((result.reason, delay))
            if self._expired(started, delay):
                return self._dead_letter(batch, "max_elapsed_time", f"last error: {result.reason}")
            if self._stop.wait(delay):
                return False

    def _expired(self, started: float, upcoming_wait: float) -> bool:
        limit = self.retry.max_elapsed_time
        return limit > 0 and time.monotonic() - started + upcoming_wait > limit

    def _attempt(self, batch: Batch) -> ExportResult:
        try:
            result = self.exporter.export(batch, self.timeout)
        except Exception as e:
            # An exporter bug is treated as transient: the data stays safe in the queue.
            log.exception("exporter %s raised", self.component_id)
            result = ExportResult.retry(f"exporter raised {type(e).__name__}")
        self._telemetry.child(self._telemetry.export_attempts, self._label, result.status.value).inc()
        if result.status is not ExportStatus.SUCCESS:
            log.debug("exporter %s: attempt failed: %s", self.component_id, result.reason)
        return result

    def _dead_letter(self, batch: Batch, reason: str, detail: str) -> bool:
        try:
            request = batch.request
        except DecodeError:
            # Only a SerializedBatch parses here: bytes that never decode cannot be kept as OTLP either.
            known = batch.notes.get(ITEMS_NOTE)
            items = known if isinstance(known, int) else 0
            self._telemetry.record_dropped(batch.signal.value, "queue_record_unreadable", items)
            log.error("exporter %s: dropped an unreadable queue record (%d items)", self.component_id, items)
            return True
        self.dlq.put(batch.signal, request, reason=reason, detail=detail, source=self._source)
        return True

    # -------------------------------------------------------------- telemetry

    def _circuit_changed(self, state: CircuitState) -> None:
        self._telemetry.circuit_state.labels(self._label).set(int(state))
        log.warning("exporter %s: circuit %s", self.component_id, state.label)

    def _bind_gauges(self) -> None:
        # Read from the queue when scraped rather than set on every put and ack (the hot path).
        queue = self.queue
        self._telemetry.child(self._telemetry.queue_items, self._label).set_function(lambda: queue.items)
        self._telemetry.child(self._telemetry.queue_bytes, self._label).set_function(lambda: queue.nbytes)


def item_count(batch: Batch) -> int:
    """``batch.item_count()``, taken from ITEMS_NOTE when that travels with SERIALIZED_NOTE."""
    known = batch.notes.get(ITEMS_NOTE)
    if isinstance(known, int) and isinstance(batch.notes.get(SERIALIZED_NOTE), bytes):
        return known
    return batch.item_count()


class SerializedBatch(WireBatch):
    """A queued record for an exporter that sends bytes: the request is parsed only if something
    reads ``batch.request`` (a file exporter, dead-lettering). Raises DecodeError then if the
    bytes do not decode."""

    def __init__(self, signal: Signal, data: bytes, items: int) -> None:
        super().__init__(signal, data, notes={SERIALIZED_NOTE: data, ITEMS_NOTE: items})
