"""A private /etc/hosts for one child process: the set of addresses a DNS name resolves to,
under the test's control, without touching the machine's /etc/hosts or any DNS server.

The child runs under ``unshare --mount`` (a mount namespace of its own, private propagation)
with the test's file bind-mounted over /etc/hosts. The file is rewritten in place (same inode:
a bind mount follows the inode, so an atomic rename would leave the child on the old file).
Go's resolver (the Collector's) rereads /etc/hosts when its mtime or size changed, checked at
most every 5 s, so a change is seen within about 5 s plus the caller's own lookup interval."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

# The script runs as `sh -c SCRIPT HOSTS ARGV...`: $0 is the hosts file, "$@" the command.
_MOUNT_AND_EXEC = 'mount --bind "$0" /etc/hosts && exec "$@"'


def require_private_mounts() -> None:
    """Skip unless this machine lets us create a mount namespace (root, or CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(
        ["unshare", "--mount", "--", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount over /etc/hosts in a private mount namespace: {probe.stderr.strip()}")


class HostsFile:
    """``name`` resolves to exactly ``addresses`` for processes started with ``command_prefix()``."""

    def __init__(self, path: Path, name: str, addresses: Sequence[str]) -> None:
        self.path = path
        self.name = name
        self.set(addresses)

    def set(self, addresses: Sequence[str]) -> None:
        lines = ["127.0.0.1 localhost", *(f"{a} {self.name}" for a in addresses)]
        # One write on the same inode (open "w" truncates in place): the reader never sees a
        # rename, and at most one short window of a partial file (a failed lookup keeps the
        # resolver's previous answer).
        with self.path.open("w") as f:
            f.write("\n".join(lines) + "\n")

    def command_prefix(self) -> list[str]:
        return ["unshare", "--mount", "--", "sh", "-c", _MOUNT_AND_EXEC, str(self.path)]
