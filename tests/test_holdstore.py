"""HoldStore: what was held survives reopen and SIGKILL; deletes stick; compaction bounds the disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from errorgate.pipeline.hold.store import HoldStore

ROOT = Path(__file__).resolve().parent.parent


def test_put_delete_reopen(tmp_path: Path) -> None:
    s = HoldStore(tmp_path)
    s.put("a", b"1")
    s.put("b", b"2")
    s.put("a", b"3")  # replaces
    s.delete(["b", "missing"])
    s.close()
    s2 = HoldStore(tmp_path)
    assert dict(s2.items()) == {"a": b"3"}
    s2.close()


def test_torn_last_record_is_ignored(tmp_path: Path) -> None:
    s = HoldStore(tmp_path)
    s.put("k1", b"v1" * 100)
    s.put("k2", b"v2" * 100)
    s.close()
    log = tmp_path / "hold.log"
    data = log.read_bytes()
    log.write_bytes(data[:-10])  # k2's record torn
    s2 = HoldStore(tmp_path)
    assert dict(s2.items()) == {"k1": b"v1" * 100}
    s2.put("k3", b"v3")
    s2.close()
    assert dict(HoldStore(tmp_path).items()) == {"k1": b"v1" * 100, "k3": b"v3"}


def test_compaction_bounds_disk_and_keeps_live_items(tmp_path: Path) -> None:
    s = HoldStore(tmp_path)
    value = b"x" * 10_000
    for i in range(2_000):  # ~20 MB written in total, at most 5 live at a time
        s.put(f"k{i}", value)
        if i >= 5:
            s.delete([f"k{i - 5}"])
    assert (tmp_path / "hold.log").stat().st_size < 6 * 1048576
    s.close()
    assert sorted(k for k, _ in HoldStore(tmp_path).items()) == sorted(f"k{i}" for i in range(1995, 2000))


class _Rot13Codec:
    def encode(self, data: bytes) -> bytes:
        return bytes((b + 13) % 256 for b in data)

    def decode(self, data: bytes) -> bytes:
        return bytes((b - 13) % 256 for b in data)


def test_codec_hides_values_at_rest(tmp_path: Path) -> None:
    s = HoldStore(tmp_path, _Rot13Codec())
    s.put("trace-1", b"user@example.com")
    s.close()
    assert b"user@example.com" not in (tmp_path / "hold.log").read_bytes()
    assert dict(HoldStore(tmp_path, _Rot13Codec()).items()) == {"trace-1": b"user@example.com"}


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from errorgate.pipeline.hold.store import HoldStore

    s = HoldStore(Path(sys.argv[1]))
    i = 0
    while True:
        s.put(f"k{i}", f"value-{i}".encode() * 50)
        if i % 3 == 2:
            s.delete([f"k{i - 2}"])
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
    """
)


def test_sigkill_keeps_every_returned_put(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 3000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout.read().splitlines():
        last = int(line)
    held = dict(HoldStore(tmp_path).items())
    expected = {f"k{i}" for i in range(last + 1) if not (i % 3 == 0 and i + 2 <= last)}
    # The iteration after ``last`` never returned: its put and delete may or may not have landed.
    maybe_deleted = {f"k{last - 1}"} if (last + 1) % 3 == 2 else set()
    assert expected - maybe_deleted <= set(held) <= expected | {f"k{last + 1}"}
    assert all(held[k] == f"value-{k[1:]}".encode() * 50 for k in held)
