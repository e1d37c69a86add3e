"""The receivers' decode paths under atheris (tests/fuzz_decode.py), bounded for CI: a fixed number
of runs from a fixed seed on a fresh seed corpus, well under a minute. libFuzzer ends its process
when done, so it runs in a child; a crash (an input without a defined answer) fails the test and
leaves the input in the artifact directory, printed below, to reproduce with
``python -m tests.fuzz_decode ARTIFACT``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz_decode import check, seeds, write_dictionary

ROOT = Path(__file__).resolve().parent.parent
RUNS = 20_000  # about 10 s here
SEED = 1


def test_the_seeds_get_defined_answers() -> None:
    for seed in seeds():
        check(seed)


def test_a_bounded_fuzz_run_finds_no_input_without_a_defined_answer(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    write_dictionary(tmp_path / "otlp.dict")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    args = [
        sys.executable,
        "-m",
        "tests.fuzz_decode",
        f"-runs={RUNS}",
        f"-seed={SEED}",
        "-max_len=4096",
        f"-dict={tmp_path / 'otlp.dict'}",
        "-max_total_time=50",
        "-timeout=10",  # seconds for one input: a hang counts as a failure too
        f"-artifact_prefix={artifacts}/",
        str(tmp_path / "corpus"),
    ]
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=58)
    except subprocess.TimeoutExpired:
        pytest.fail("the bounded fuzz run did not finish within 58 s")
    crashes = sorted(p.name for p in artifacts.iterdir())
    assert done.returncode == 0 and not crashes, f"{crashes}\n{done.stderr[-4000:]}"
    assert f"Done {RUNS} runs" in done.stderr
