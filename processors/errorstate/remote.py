"""Redis implementations of the error state (the ``redis`` extension enabled): one pipelined
round trip per batch (``RedisStateExtension.run``) of the Lua scripts in ``lua.py``.

The local trackers are updated as well, always: should Redis not answer, the batch is
answered from them (this replica's own view) and the next batch tries Redis again (at most
every ``retry_interval``). What a replica observed while Redis was down stays local.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

from errorgate.extensions.shared_state import RedisStateExtension, Script
from errorgate.processors.classification.episodes import Observation
from errorgate.processors.classification.incidents import IncidentTracker, SharedWindow
from errorgate.processors.classification.severity import BurnRates
from errorgate.processors.errorstate.base import (
    BurnInput,
    DecisionInput,
    EpisodeInput,
    FloodInput,
    LocalErrorState,
    LocalFloodState,
    SharedCall,
    Verdict,
)
from errorgate.processors.errorstate.lua import BURN, DECISIONS, EPISODES, FLOOD, INCIDENTS
from errorgate.processors.sampling.flood import FloodVerdict

_KINDS = {b"t": "transient", b"i": "intermittent", b"p": "persistent"}
_REASONS = {0: "flood", 1: "error", 2: "flood"}
# The scripts' flood buckets outlive their minute by this much (wall time): a replay far back
# starts afresh after it, as the in-process limiter's bounded buckets do.
_BUCKET_TTL = 3600
_MAX_STARTS = 16  # episode starts kept per error group (``_State.starts``)
# Masks are doubles in Lua: exact below 2^53.
MAX_SHARED_FLAP_WINDOW = 52


class SharedBurn(BurnRates):
    """Burn rates read from Redis's windows for the services of one batch."""

    def __init__(self, local: BurnRates, totals: dict[tuple[str, float], tuple[int, int]]) -> None:
        super().__init__(local.rules, min_requests=local.min_requests, max_services=local.max_services)
        self._totals = totals

    def totals(self, service: str, window: float) -> tuple[int, int] | None:
        return self._totals.get((service, window))


class RedisErrorState:
    def __init__(self, shared: RedisStateExtension, local: LocalErrorState, component: str) -> None:
        self.shared = shared
        self.local = local
        self.component = component
        p = local.episodes.params
        if p.flap_window > MAX_SHARED_FLAP_WINDOW:
            from errorgate.config import ConfigError

            raise ConfigError(
                f"processors.{component}.episodes.flap_window: at most {MAX_SHARED_FLAP_WINDOW} "
                "with the redis extension"
            )
        ttl = int(shared.config.state_ttl)
        self._episode_args = [
            ttl,
            p.persistent_min_buckets,
            p.quiet_buckets,
            p.flap_window,
            repr(p.flap_start),
            repr(p.flap_end),
            p.reopen_window_buckets,
            p.reopen_count,
            p.deterministic_min_occurrences,
            _MAX_STARTS,
        ]
        self._durations = local.burn.durations()
        self._episodes = Script("episodes", EPISODES)
        self._burn = Script("burn", BURN)

    def classify(
        self,
        records: Sequence[BurnInput],
        observations: Sequence[EpisodeInput],
        services: Collection[str],
        also: Sequence[SharedCall] = (),
    ) -> tuple[list[Observation], BurnRates]:
        local_seen, local_burn = self.local.classify(records, observations, services)
        if not records and not observations:
            if also:
                _answer(also, self.shared.run(self.component, [(c.script, c.keys, c.args) for c in also]))
            return local_seen, local_burn
        prefix = self.shared.prefix
        bucket = self.local.episodes.bucket
        burn_args: list[Any] = [prefix, int(self.shared.config.state_ttl), len(self._durations)]
        burn_args += [repr(d) for d in self._durations]
        burn_args.append(len(records))
        for service, second, requests, failed in records:
            burn_args += [service, repr(second), requests, failed]
        queried = sorted(services)
        burn_args += [len(queried), *queried]
        calls: list[tuple[Script, Sequence[str], Sequence[Any]]] = [(self._burn, (), burn_args)]
        if observations:
            keys = [f"{prefix}ep:{service}\x00{fp}" for service, fp, *_ in observations]
            args: list[Any] = list(self._episode_args)
            for _, _, ts, deterministic, retry_failed in observations:
                args += [bucket(ts), int(deterministic), int(retry_failed)]
            calls.append((self._episodes, keys, args))
        calls += [(c.script, c.keys, c.args) for c in also]
        replies = self.shared.run(self.component, calls)
        _answer(also, replies)
        if replies is None:
            return local_seen, local_burn
        return (_observations(replies[1]) if observations else []), self._burn_view(queried, replies[0])

    def _burn_view(self, services: list[str], rows: list[Any]) -> SharedBurn:
        totals: dict[tuple[str, float], tuple[int, int]] = {}
        for service, row in zip(services, rows, strict=True):
            for i, duration in enumerate(self._durations):
                if row:
                    totals[service, duration] = (int(row[1 + 2 * i]), int(row[2 + 2 * i]))
        return SharedBurn(self.local.burn, totals)


def _answer(also: Sequence[SharedCall], replies: list[Any] | None) -> None:
    """The riding calls' replies: the last ones of the round trip."""
    if replies is not None and also:
        for call, reply in zip(also, replies[-len(also) :], strict=True):
            call.reply = reply


def _observations(rows: list[bytes]) -> list[Observation]:
    seen = []
    for row in rows:
        kind, new_episode, new_fingerprint, share = row.split(b",")
        seen.append(Observation(_KINDS[kind], new_episode == b"1", new_fingerprint == b"1", float(share)))
    return seen


class RedisFloodState:
    def __init__(self, shared: RedisStateExtension, local: LocalFloodState, component: str) -> None:
        self.shared = shared
        self.local = local
        self.component = component
        self._script = Script("flood", FLOOD)

    def admit(self, admits: Sequence[FloodInput]) -> list[FloodVerdict]:
        local = self.local.admit(admits)
        if not admits:
            return local
        flood = self.local.flood
        args: list[Any] = [
            self.shared.prefix,
            int(self.shared.config.state_ttl),
            _BUCKET_TTL,
            flood.first_n,
            flood.per_slot,
        ]
        for fp, at in admits:
            slot = int(at // flood.slot_seconds) if flood.per_slot else 0
            args += [fp, int(at // 60), slot]
        replies = self.shared.run(self.component, [(self._script, (), args)])
        if replies is None:
            return local
        flat = replies[0]
        return [
            FloodVerdict(adjusted > 0, float(adjusted), _REASONS[reason])
            for adjusted, reason in zip(flat[::2], flat[1::2], strict=True)
        ]


class RedisDecisions:
    """``sample``'s trace decisions for late spans and its flood budgets, shared (``DECISIONS``).

    ``sample`` decides every trace with its own state first (its decision cache, its flood
    limiter: the local answer, kept up to date all along); this call then answers with the
    shared one, or None when Redis did not answer (the local answers stand)."""

    def __init__(
        self, shared: RedisStateExtension, flood: LocalFloodState, component: str, ttl: float
    ) -> None:
        self.shared = shared
        self.flood = flood.flood
        self.component = component
        self.ttl = max(1, int(ttl))
        self._script = Script("decisions", DECISIONS)

    def decide(self, complete: bool, entries: Sequence[DecisionInput]) -> list[Verdict] | None:
        if not entries:
            return []
        flood = self.flood
        args: list[Any] = [
            self.shared.prefix,
            self.ttl,
            int(self.shared.config.state_ttl),
            _BUCKET_TTL,
            flood.first_n,
            flood.per_slot,
            int(complete),
        ]
        for tid, error, factor, (keep, reason, adjusted, threshold) in entries:
            if error is None:
                args += [tid, 0, "", 0, 0, 1, int(keep), reason, repr(adjusted), threshold or ""]
            else:
                fp, at = error
                slot = int(at // flood.slot_seconds) if flood.per_slot else 0
                args += [tid, 1, fp, int(at // 60), slot, repr(factor), 0, "", 0, ""]
        replies = self.shared.run(self.component, [(self._script, (), args)])
        if replies is None:
            return None
        answers: list[Verdict] = []
        for row in replies[0]:
            keep, reason, adjusted, threshold = row.decode().split(",")
            answers.append((keep == "1", reason, float(adjusted), int(threshold) if threshold else None))
        return answers


class RedisIncidents:
    """``classify``'s incident candidates summed over the replicas (``INCIDENTS``): the tracker
    records each batch's counts, this call adds them to the shared window and returns it, or
    None when Redis did not answer (the tracker then judges its own window, kept all along)."""

    def __init__(self, shared: RedisStateExtension, tracker: IncidentTracker, component: str) -> None:
        self.shared = shared
        self.tracker = tracker
        self.component = component
        tracker.deltas = Counter()  # record each batch's counts from now on
        self._script = Script("incidents", INCIDENTS)

    def call(self) -> SharedCall:
        """The script call adding the counts observed since the last call to the shared window
        (made in ``ErrorState.classify``'s round trip, or alone by ``window``)."""
        tracker = self.tracker
        args: list[Any] = [
            self.shared.prefix,
            math.ceil(tracker.window + tracker.slot_seconds),
            int(self.shared.config.state_ttl),
            repr(tracker.slot_seconds),
            repr(tracker.window),
            tracker.min_errors,
            tracker.min_services,
            repr(tracker.now) if tracker.now else "",  # (the script keeps the newest of all)
        ]
        for (slot, name), n in tracker.take_deltas().items():
            args += [slot, name, n]
        return SharedCall(self._script, (), args)

    def window(self) -> SharedWindow | None:
        """The window summed over the replicas, in a round trip of its own."""
        call = self.call()
        _answer([call], self.shared.run(self.component, [(call.script, call.keys, call.args)]))
        return self.read(call)

    @staticmethod
    def read(call: SharedCall) -> SharedWindow | None:
        """The window from ``call``'s reply; None when Redis did not answer (or holds nothing)."""
        return _shared_window(call.reply) if call.reply is not None else None


def _shared_window(reply: list[Any]) -> SharedWindow | None:
    if not reply:
        return None  # nothing observed yet, anywhere
    now, flat, failed, cover, claims = reply
    by_origin: dict[str, Counter[str]] = {}
    for i in range(0, len(flat), 3):
        by_origin.setdefault(flat[i].decode(), Counter())[flat[i + 1].decode()] = int(flat[i + 2])
    window = SharedWindow(float(now), by_origin, int(failed))
    for i in range(0, len(cover), 3):
        service = cover[i].decode()
        window.cover[service] = int(cover[i + 1])
        if int(cover[i + 2]):
            window.fail_cover[service] = int(cover[i + 2])
    for i in range(0, len(claims), 3):
        window.claims[claims[i].decode()] = (float(claims[i + 1]), claims[i + 2] == 1)
    return window
