"""``tc netem``'s delay, jitter and loss in user space, for kernels built without ``sch_netem``:
``python -m kit.chaos.impair --queue N --delay-ms 300 --jitter-ms 50 --loss 30`` takes the packets
an iptables ``NFQUEUE`` rule hands it (netfilter's queue over netlink, nothing to install) and
gives each its verdict later (delay ± uniform jitter) or drops it (loss, in percent). It runs in
the network namespace whose rule feeds it (``ip netns exec``), since queues are per namespace.
SIGTERM stops it after accepting the packets it still holds (the kernel would drop them when the
queue closes); the rule should say ``--queue-bypass`` so that packets pass while nothing listens.
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import socket
import struct
import sys
import threading
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1  # headers only: the verdict needs the packet id, not the payload
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int = 0) -> bytes:
    # nlmsghdr, then nfgenmsg (family AF_UNSPEC, version 0, resource id = queue, big-endian).
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, NLM_F_REQUEST, seq, 0) + body


def _packet_ids(data: bytes) -> list[int]:
    """The packet ids of the NFQNL_MSG_PACKET messages in one netlink read."""
    ids, offset = [], 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + 16)
            if code:
                raise OSError(-code, f"netfilter queue refused a request: {-code}")
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            at = offset + 20  # past nlmsghdr and nfgenmsg: the attributes
            while at + 4 <= offset + length:
                alen, atype = struct.unpack_from("=HH", data, at)
                if alen < 4:
                    break
                if atype & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, at + 4)[0])
                at += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return ids


class Impairer:
    def __init__(self, queue: int, delay: float, jitter: float, loss: float, seed: int | None) -> None:
        self.queue, self.delay, self.jitter, self.loss = queue, delay, jitter, loss
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.due: list[tuple[float, int]] = []  # (when, packet id): the packets held back
        self.lock = threading.Condition()
        self.stop = threading.Event()

    def bind(self) -> None:
        cmd = struct.pack("=BxH", NFQNL_CFG_CMD_BIND, socket.htons(socket.AF_INET))
        params = struct.pack("!IB", 0xFFFF, NFQNL_COPY_META)
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, _attr(NFQA_CFG_CMD, cmd), seq=1))
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, _attr(NFQA_CFG_PARAMS, params), seq=2))

    def verdict(self, packet_id: int, verdict: int) -> None:
        self.sock.send(
            _message(
                NFQNL_MSG_VERDICT, self.queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
            )
        )

    def receive(self) -> None:
        while not self.stop.is_set():
            if not select.select([self.sock], [], [], 0.2)[0]:
                continue
            for packet_id in _packet_ids(self.sock.recv(65536)):
                if self.rng.random() * 100 < self.loss:
                    self.verdict(packet_id, NF_DROP)
                    continue
                hold = max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))
                with self.lock:
                    heapq.heappush(self.due, (time.monotonic() + hold, packet_id))
                    self.lock.notify()

    def release(self) -> None:
        """Accepts each held packet when its time comes (in due order, so jitter reorders, as netem)."""
        while not self.stop.is_set():
            with self.lock:
                wait = self.due[0][0] - time.monotonic() if self.due else 0.2
                if wait > 0:
                    self.lock.wait(min(wait, 0.2))
                    continue
                _, packet_id = heapq.heappop(self.due)
            self.verdict(packet_id, NF_ACCEPT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kit.chaos.impair", description=__doc__.split("\n")[0])
    p.add_argument("--queue", type=int, default=0, help="the NFQUEUE number the iptables rule names")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0, help="percent of packets dropped")
    p.add_argument("--seed", type=int, help="for a repeatable run")
    args = p.parse_args(argv)
    impairer = Impairer(args.queue, args.delay_ms / 1000, args.jitter_ms / 1000, args.loss, args.seed)
    impairer.bind()
    signal.signal(signal.SIGTERM, lambda *_: impairer.stop.set())
    releaser = threading.Thread(target=impairer.release, daemon=True)
    releaser.start()
    print("impairing", flush=True)  # the launcher waits for this line: the queue is bound
    impairer.receive()
    releaser.join(1)
    for _, packet_id in sorted(impairer.due):
        impairer.verdict(packet_id, NF_ACCEPT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
