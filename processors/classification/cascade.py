"""Within-trace failure analysis: where a failure started, what it propagated to, and retries.

Origin: the deepest failing span with no failing descendants. Two adjustments:
- a CLIENT/PRODUCER span with no SERVER/CONSUMER child stands for an uninstrumented callee
  (a database, a third-party API): the span is marked origin and the callee (``peer.service``,
  ``server.address``, ``db.system``) is the origin service;
- otherwise SERVER/CONSUMER spans are preferred: the origin moves up from an INTERNAL/CLIENT
  span to the nearest failing SERVER/CONSUMER ancestor of the same service when every span in
  between fails too (the service's entry point represents it).
Every other failing span gets the origin of its failing descendants (the one that ended
first when there are several). A failing span in another service than its origin is
``propagated`` (kind ``cascading`` with ``errorgate.error.origin_service``); in the origin's own
service it is ``same_service`` and keeps its episode kind.

Retries: failing spans with a later sibling of the same name under the same parent (same
service) that succeeded were retried successfully (they are ``transient``); when every attempt
failed the operation's retries did not succeed.
"""

from __future__ import annotations

from typing import NamedTuple

from opentelemetry.proto.trace.v1.trace_pb2 import Span

ENTRY_KINDS = (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER)
EXIT_KINDS = (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER)

# Every failing trace is analysed (a tenth of traces in busy traffic), so the types are the
# cheap kinds: a slotted class and named tuples (a frozen dataclass sets each field through
# ``object.__setattr__``), and the traversal avoids per-node closures and temporary lists.


class Node:
    """One span of a trace as the analysis needs it."""

    __slots__ = (
        "children",
        "end_time",
        "failing",
        "kind",
        "name",
        "parent_id",
        "peer",
        "resend_count",
        "service",
        "span_id",
    )

    def __init__(
        self,
        span_id: bytes,
        parent_id: bytes,
        name: str,
        kind: int,
        service: str,
        failing: bool,
        end_time: int,
        peer: str = "",  # callee named by a client span (peer.service, server.address, db.system)
        resend_count: int = 0,
    ) -> None:
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.service = service
        self.failing = failing
        self.end_time = end_time
        self.peer = peer
        self.resend_count = resend_count
        self.children: list[Node] = []

    def __repr__(self) -> str:
        return f"Node({self.span_id.hex()}, parent={self.parent_id.hex()}, {self.service}/{self.name})"


class Role(NamedTuple):
    role: str  # "origin", "propagated", "same_service"
    origin_service: str
    origin_span: bytes


class TraceAnalysis(NamedTuple):
    roles: dict[bytes, Role]  # failing span id -> role
    retried: dict[bytes, str]  # failing span id -> "succeeded" | "failed"
    retried_operations: list[tuple[str, str]]  # (service, outcome), one per retried operation
    services: frozenset[str]  # services and callees the trace touched
    failing_services: frozenset[str]
    origin_services: frozenset[str]


def analyse_trace(nodes: list[Node]) -> TraceAnalysis:
    by_id, roots = _link(nodes)
    origin_of = _origins(roots)
    marked = _mark_origins(origin_of, nodes)
    roles = _roles(origin_of, marked, by_id)
    retried, operations = _retries(nodes)
    services = {n.service for n in nodes}
    services.update([n.peer for n in nodes if n.peer and n.kind in EXIT_KINDS])
    return TraceAnalysis(
        roles,
        retried,
        operations,
        frozenset(services),
        frozenset([by_id[s].service for s in origin_of]),
        frozenset([svc for _, svc in marked.values()]),
    )


def _link(nodes: list[Node]) -> tuple[dict[bytes, Node], list[Node]]:
    """(nodes by span id, roots): each node's ``children`` filled in. A span whose parent is
    missing from the trace (or is itself) is a root."""
    by_id = {n.span_id: n for n in nodes}
    roots: list[Node] = []
    for n in nodes:
        n.children = []
    for n in nodes:
        parent = by_id.get(n.parent_id) if n.parent_id else None
        if parent is None or parent is n:
            roots.append(n)
        else:
            parent.children.append(n)
    return by_id, roots


def _origins(roots: list[Node]) -> dict[bytes, Node]:
    """Failing span id -> the origin of its failure before adjustments: the earliest-ending
    failing span at or below it with no failing descendants."""
    best: dict[bytes, Node | None] = {}  # earliest-ending origin at or below a span
    origin_of: dict[bytes, Node] = {}
    visited: set[bytes] = set()
    for root in roots:
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:  # iterative post-order: deep traces must not hit the recursion limit
            node, done = stack.pop()
            if not done:
                if node.span_id in visited:
                    continue
                visited.add(node.span_id)
                stack.append((node, True))
                stack.extend([(c, False) for c in node.children])
                continue
            # The earliest-ending origin below (the first of equals in child order, as ``min``).
            first: Node | None = None
            for c in node.children:
                o = best.get(c.span_id)
                if o is not None and (
                    first is None
                    or o.end_time < first.end_time
                    or (o.end_time == first.end_time and o.span_id < first.span_id)
                ):
                    first = o
            if node.failing:
                best[node.span_id] = origin_of[node.span_id] = first or node
            else:
                best[node.span_id] = first
    return origin_of


def _mark_origins(origin_of: dict[bytes, Node], nodes: list[Node]) -> dict[bytes, tuple[Node, str]]:
    """Origin node id -> (span carrying origin=true, origin service), the module docstring's
    two adjustments applied: an exit span with no entry child stands for its callee; otherwise
    the mark climbs to the nearest failing entry span of the same service."""
    origins = {o.span_id: o for o in origin_of.values()}
    marked: dict[bytes, tuple[Node, str]] = {}
    parent_of: dict[bytes, Node] | None = None  # built only if an origin climbs
    for oid, o in origins.items():
        if o.kind in EXIT_KINDS and not any(c.kind in ENTRY_KINDS for c in o.children):
            marked[oid] = (o, o.peer or o.service)
            continue
        carrier = o
        cursor = o
        # At most one step per span: duplicate span ids can make the parent links a cycle
        # (a span under its own id's twin), which must not spin the poll thread forever.
        steps = len(nodes)
        while cursor.kind not in ENTRY_KINDS and steps:
            steps -= 1
            if parent_of is None:
                parent_of = {c.span_id: n for n in nodes for c in n.children}
            parent = parent_of.get(cursor.span_id)
            if parent is None or not parent.failing or parent.service != o.service:
                break
            cursor = parent
            if cursor.kind in ENTRY_KINDS:
                carrier = cursor
        marked[oid] = (carrier, o.service)
    return marked


def _roles(
    origin_of: dict[bytes, Node], marked: dict[bytes, tuple[Node, str]], by_id: dict[bytes, Node]
) -> dict[bytes, Role]:
    """Each failing span's role: the carrier of the origin mark, or a failure propagated to
    another service than the origin's, or one in the origin's own service."""
    roles: dict[bytes, Role] = {}
    for sid, o in origin_of.items():
        carrier, origin_service = marked[o.span_id]
        carrier_id = carrier.span_id
        if sid == carrier_id:
            roles[sid] = Role("origin", origin_service, carrier_id)
        elif by_id[sid].service != origin_service:
            roles[sid] = Role("propagated", origin_service, carrier_id)
        else:
            roles[sid] = Role("same_service", origin_service, carrier_id)
    return roles


def _retries(nodes: list[Node]) -> tuple[dict[bytes, str], list[tuple[str, str]]]:
    groups: dict[tuple[bytes, str, str], list[Node]] = {}
    for n in nodes:
        key = (n.parent_id, n.name, n.service)
        group = groups.get(key)
        if group is None:
            groups[key] = [n]
        else:
            group.append(n)
    retried: dict[bytes, str] = {}
    operations: list[tuple[str, str]] = []
    for (_, _, service), attempts in groups.items():
        if len(attempts) < 2:  # a single attempt counts only when it failed after resends
            only = attempts[0]
            if not only.failing or only.resend_count <= 0:
                continue
            outcome = "failed"
            operations.append((service, outcome))
            retried[only.span_id] = outcome
            continue
        failing = [a for a in attempts if a.failing]
        if not failing:
            continue
        attempts.sort(key=_end_time)
        outcome = "failed" if attempts[-1].failing else "succeeded"
        operations.append((service, outcome))
        for a in failing:
            retried[a.span_id] = outcome
    return retried, operations


def _end_time(node: Node) -> int:
    return node.end_time
