"""``make chaos`` / ``python -m kit.chaos.run``: start the demo shop (kit/demo/run.py) with the
chaos gateway config, run each Chaos Toolkit experiment in kit/chaos/experiments through
chaoslib's Python API, print one line per experiment, write the journals, stop the shop.

An experiment passes when its journal's status is ``completed``, the steady-state hypothesis
held before and after, and no method activity or rollback failed (Chaos Toolkit records a failed
method probe without failing the run; our probes raise when a pattern did not hold)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chaoslib.experiment import run_experiment
from chaoslib.loader import load_experiment

from kit.chaos import network
from kit.demo.run import Stack

HERE = Path(__file__).resolve().parent
EXPERIMENTS = sorted((HERE / "experiments").glob("*.yaml"))
GATEWAY_CONFIG = HERE / "gateway.yaml"


@contextmanager
def running_shop(workdir: Path, no_breaker: bool = False, no_idempotency: bool = False) -> Iterator[Path]:
    """The shop on the chaos gateway config; yields the state file (also exported as SHOP_STATE)."""
    stack = Stack(workdir, GATEWAY_CONFIG, no_breaker=no_breaker, no_idempotency=no_idempotency)
    state_file = workdir / "shop-state.json"
    try:
        state_file.write_text(json.dumps(stack.start(), indent=2))
        os.environ["SHOP_STATE"] = str(state_file)
        from kit.chaos import actions

        actions.seed_stock({"shop_state": str(state_file)})
        yield state_file
    finally:
        # The stack reads the state the experiments updated (a restarted stock-db has a new pid).
        if state_file.exists():
            stack.state = json.loads(state_file.read_text())
        stack.stop()


def verdict(journal: dict[str, Any]) -> list[str]:
    """What went wrong in a journal; empty when the experiment passed."""
    problems = []
    if journal.get("status") != "completed":
        problems.append(f"status {journal.get('status')!r}")
    for when in ("before", "after"):
        held = ((journal.get("steady_states") or {}).get(when) or {}).get("steady_state_met")
        if held is not True:
            problems.append(f"hypothesis not met {when}")
    for run in [*(journal.get("run") or []), *(journal.get("rollbacks") or [])]:
        if run.get("status") != "succeeded":
            problems.append(f"{run['activity']['name']}: {run.get('exception', [''])[-1].strip()[:300]}")
    return problems


def skip_reason(path: Path) -> str | None:
    """Why an experiment cannot run here: the network ones need root, iproute2 and iptables."""
    if "network" in (load_experiment(str(path)).get("tags") or []):
        return network.unavailable()
    return None


def run_one(path: Path) -> tuple[dict[str, Any], float]:
    experiment = load_experiment(str(path))
    started = time.monotonic()
    journal = run_experiment(experiment)
    return dict(journal), time.monotonic() - started


def outputs(journal: dict[str, Any]) -> dict[str, Any]:
    """Each method probe's output: the figures the report shows (and how a network fault was
    injected: netem, or its user-space stand-in on kernels without it)."""
    return {
        r["activity"]["name"]: r.get("output")
        for r in journal.get("run") or []
        if r["activity"]["type"] == "probe"
        or (isinstance(r.get("output"), dict) and "injected_with" in r["output"])
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kit.chaos.run", description=__doc__.split("\n")[0])
    p.add_argument("experiments", nargs="*", type=Path, default=EXPERIMENTS)
    p.add_argument("--journals", type=Path, help="directory for the journals (default: a temp dir)")
    p.add_argument("--no-breaker", action="store_true", help="orders without its breaker (must fail)")
    p.add_argument("--no-idempotency", action="store_true", help="orders without idempotency (must fail)")
    args = p.parse_args(argv)
    failed = 0
    with (
        tempfile.TemporaryDirectory(prefix="errorgate-chaos-") as tmp,
        running_shop(Path(tmp), args.no_breaker, args.no_idempotency),
    ):
        journals = args.journals or Path(tmp) / "journals"
        journals.mkdir(parents=True, exist_ok=True)
        for path in args.experiments:
            reason = skip_reason(path)
            if reason:
                print(f"SKIP {path.stem}: {reason}", flush=True)
                continue
            journal, seconds = run_one(path)
            (journals / f"{path.stem}.json").write_text(json.dumps(journal, indent=2, default=str))
            problems = verdict(journal)
            failed += bool(problems)
            print(f"{'PASS' if not problems else 'FAIL'} {path.stem} ({seconds:.1f} s) "
                  f"{json.dumps(outputs(journal), default=str)}", flush=True)  # fmt: skip
            for problem in problems:
                print(f"     {problem}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
