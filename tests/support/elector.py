"""An errorgate instance's election loop, alone in a process (so a test can SIGKILL it):
``python -m tests.support.elector IDENTITY PREFIX ENDPOINT...``. Each round it prints
``<identity> leader=<0|1> token=<n> acted=<0|1>``, having tried a fenced action."""

from __future__ import annotations

import sys
import time

from errorgate.ha.election import Election
from errorgate.ha.etcd import EtcdClient


def main() -> None:
    identity, prefix, *endpoints = sys.argv[1:]
    election = Election(EtcdClient(endpoints, timeout=0.5), prefix, identity, ttl=3)
    while True:
        election.step()
        acted = election.act("tick", identity)
        print(
            f"{identity} leader={int(election.is_leader)} token={election.token} acted={int(acted)}",
            flush=True,
        )
        time.sleep(0.3)


if __name__ == "__main__":
    main()
