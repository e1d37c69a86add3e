"""Detection on all cores, and the ``Detector`` the processor calls.

Workers (``forkserver``: no inherited locks or threads) end with their owner and with the
gateway (``errorgate.lifeline``), and build the engine once in their initializer; the main process does cache lookups and sends only cache misses, in chunks.
Workers start with the processor (``start_workers: start``, the default: ``start`` returns once
they are ready, so their memory is there from the first minute and their model loads are over
before the gateway accepts traffic) or on the first miss set of at least ``pool_min_batch``
values. Small miss sets, and everything while workers are still starting or loading the model,
run in-process, so no batch waits for a process start or a model load, nor hits the timeout
because of one. The in-process engine's spaCy model is loaded when the processor is built
(``Detector.preload``), so the first request is not the slow one either.
A chunk that fails or times out comes back as ``None`` per value: the caller fails closed.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from errorgate import lifeline
from errorgate.caches import DICT_KEY_TUPLE, MIB, ByteFifoSet
from errorgate.processors.redaction.engine import AnalysisEngine, EngineSettings, Findings, ResultCache

_WORKER_ENGINE: AnalysisEngine | None = None

Key = tuple[str, bool]


def _init_worker(settings: EngineSettings, guardians: tuple[int, ...]) -> None:
    global _WORKER_ENGINE
    # First: a pool worker waits on a call queue it shares with its siblings, so an owner that
    # is gone (SIGKILL, the OOM killer) would leave it waiting forever, with its model in memory.
    # ``guardians``: the owner and the processes the owner must not outlive (the gateway).
    lifeline.bind(guardians)
    _WORKER_ENGINE = AnalysisEngine(settings)
    _WORKER_ENGINE.warm_up()


def _ready() -> int:
    return os.getpid()


def _analyze_chunk(items: list[Key]) -> list[Findings | None]:
    assert _WORKER_ENGINE is not None
    return _WORKER_ENGINE.analyze_many(items)


_FROZEN = False


def _freeze_startup_objects() -> None:
    """The model and the suffix trie are ~150k long-lived objects that every full garbage
    collection would walk (~70 ms here, a stall on whatever batch triggers it). Freezing moves
    what is alive now (start-up state) out of the collector's view. Once per process: later
    calls would also pin whatever cyclic garbage happened to be alive at that moment."""
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.freeze()


def value_len(key: Key) -> int:
    """Characters of a (value, free_text) key: what a clean-set entry holds besides its overhead."""
    return len(key[0])


class AnalysisPool:
    def __init__(self, settings: EngineSettings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        self.executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=lifeline.forkserver_context(),
            initializer=_init_worker,
            initargs=(self.settings, lifeline.guardians()),
        )
        self._warm: list[Future[int]] = [self.executor.submit(_ready) for _ in range(self.workers)]

    def ready(self) -> bool:
        return all(f.done() and f.exception() is None for f in self._warm)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for f in self._warm:
            try:
                f.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                return False
        return True

    def analyze(self, items: Sequence[Key], timeout: float, chunk_size: int) -> list[Findings | None]:
        chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
        with self._lock:
            executor = self.executor
        futures = [executor.submit(_analyze_chunk, c) for c in chunks]
        deadline = time.monotonic() + timeout
        out: list[Findings | None] = []
        broken = False
        for chunk, fut in zip(chunks, futures, strict=True):
            try:
                out.extend(fut.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                fut.cancel()
                broken = True
                out.extend([None] * len(chunk))
            except Exception:
                broken = True
                out.extend([None] * len(chunk))
        if broken:
            self._restart(executor)
        return out

    def _restart(self, executor: ProcessPoolExecutor) -> None:
        """A hung or dead worker would stall every later batch: replace the whole pool."""
        with self._lock:
            if executor is not self.executor:
                return
            processes = list(getattr(executor, "_processes", {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                p.kill()  # stateless detection; SIGTERM is ignored (inherited from the worker)
            self._start()

    def shutdown(self) -> None:
        with self._lock:
            processes = list(getattr(self.executor, "_processes", {}).values())
            self.executor.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                # SIGKILL: they inherit the processor worker's ignored SIGTERM, and a worker waiting
                # for them at exit held every clean stop 10 s (until the gateway killed it).
                p.kill()


class Detector:
    """Cache first, then the pool (big miss sets) or the in-process engine (small ones)."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        workers: int,
        cache_size: int,
        timeout: float,
        chunk_size: int = 64,
        pool_min_batch: int = 32,
        cache_max_bytes: int = 64 * MIB,
    ) -> None:
        self.settings = settings
        # The byte budget is shared half and half: the clean set holds a subset of the same keys.
        self.cache = ResultCache(cache_size, max_bytes=cache_max_bytes // 2)
        # Values analysed and found to hold nothing: the walker tests membership without a lock
        # (``clean_check``), so repeated clean values never become slots (most telemetry values).
        self._clean: ByteFifoSet[Key] = ByteFifoSet(
            cache_size, cache_max_bytes // 2, DICT_KEY_TUPLE, value_len
        )
        self._clean_max = cache_size
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.pool_min_batch = pool_min_batch
        self.workers = workers
        self._engine: AnalysisEngine | None = None
        self._engine_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._starting = False
        self._closed = False
        self.pool: AnalysisPool | None = None

    def preload(self) -> None:
        """Pay the in-process engine's one-time costs now (model load, public suffix trie);
        the engine object itself is still built on first use."""
        from errorgate.processors.redaction import offline
        from errorgate.processors.redaction.engine import load_ner_model

        try:
            if self.settings.ner and "NameRecognizer" in self.settings.recognizers:
                load_ner_model(self.settings.nlp_model)
            offline.OFFLINE_EXTRACTOR("example.com")
        except Exception:
            pass  # e.g. the model is missing: building the engine fails per batch, which fails closed
        _freeze_startup_objects()

    def start_in_background(self) -> None:
        with self._pool_lock:
            if self._starting or self.pool is not None:
                return
            self._starting = True
        threading.Thread(target=self.start_pool, name="redact-pool-start", daemon=True).start()

    def start_pool(self) -> AnalysisPool | None:
        """Start the workers (idempotent). Called on the first miss set big enough to be worth
        shipping, so gateways that only ever see small batches never pay for worker processes."""
        if self.workers <= 0:
            return None
        with self._pool_lock:
            if self.pool is None and not self._closed:
                self.pool = AnalysisPool(self.settings, self.workers)
            return self.pool

    def start_and_wait(self, timeout: float) -> bool:
        """Start the workers and wait until each has built its engine (at most ``timeout``
        seconds). False: no workers, or not ready in time (they go on starting; analysis runs
        in-process until they are)."""
        pool = self.start_pool()
        return pool is not None and pool.wait_ready(timeout)

    @property
    def engine(self) -> AnalysisEngine:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = AnalysisEngine(self.settings)
        return self._engine

    def detect(self, keys: Sequence[Key]) -> dict[Key, Findings | None]:
        out: dict[Key, Findings | None] = {}
        misses: list[Key] = []
        for key in dict.fromkeys(keys):
            found = self.cache.get(key)
            if found is None:
                misses.append(key)
            else:
                out[key] = found
        if not misses:
            return out
        pool = self.pool
        if len(misses) >= self.pool_min_batch and self.workers > 0 and pool is None:
            self.start_in_background()
        if pool is not None and len(misses) >= self.pool_min_batch and pool.ready():
            results = pool.analyze(misses, self.timeout, self.chunk_size)
        else:
            results = self.analyze_local(misses)
        clean = self._clean
        for key, res in zip(misses, results, strict=True):
            out[key] = res
            if res is not None:
                self.cache.put(key, res)
                if not res and self._clean_max > 0 and len(key[0]) <= self.cache.max_value_len:
                    clean.add(key)  # oldest out first past either bound
        return out

    def clean_check(self) -> Callable[[Key], bool] | None:
        """``(value, free_text) -> True`` when the value is known to hold nothing."""
        return self._clean.contains if self._clean_max > 0 else None

    def analyze_local(self, misses: Sequence[Key]) -> list[Findings | None]:
        # spaCy and the analyzer are not safe to share between threads; the pool is.
        try:
            engine = self.engine
        except Exception:
            return [None] * len(misses)
        with self._engine_lock:
            try:
                return engine.analyze_many(misses)
            except Exception as e:  # fail closed per item: the caller masks what has no findings
                _log_once(f"redaction analysis failed ({type(e).__name__}); affected items are masked")
                return [None] * len(misses)

    def shutdown(self) -> None:
        with self._pool_lock:  # a pool still starting in the background is never left behind
            self._closed = True
            pool = self.pool
        if pool is not None:
            pool.shutdown()


_logged: set[str] = set()


def _log_once(message: str) -> None:
    # The message names an exception type only: exception text may quote the analysed value.
    if message not in _logged:
        _logged.add(message)
        logging.getLogger("errorgate.redact").error(message)
