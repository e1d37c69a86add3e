"""Fault domain and failing component from the semantic conventions.

Order of evidence:
1. the error's nature when it names the domain by itself (taxonomy leaves in ``security``,
   ``data``, ``config``: 401/403/UNAUTHENTICATED, 400/422/INVALID_ARGUMENT, misconfiguration);
2. ``db.system.name`` / ``db.system`` → ``datastore``; ``messaging.system`` → ``messaging``;
3. a CLIENT span (or an item naming a peer) → ``network`` for connection-level failures
   (the leaf's domain is ``network``), otherwise ``dependency``; the peer is the component;
4. otherwise the leaf's domain (``compute``, ``code`` …) and the service itself is the component.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.attributes import AttrValue
from errorgate.processors.classification.taxonomy import Category

NATURE_DOMAINS = frozenset({"security", "data", "config"})
PEER_NAME_KEYS = (
    "peer.service",
    "server.address",
    "net.peer.name",
    "rpc.service",
    "messaging.destination.name",
)
# Every attribute ``fault_domain`` reads.
FAULT_DOMAIN_KEYS = (*PEER_NAME_KEYS, "db.system.name", "db.system", "messaging.system")


@functools.lru_cache(maxsize=4096)  # peers repeat; ipaddress parsing is slow
def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def peer_name(attrs: Mapping[str, AttrValue]) -> str:
    """The callee as named by a client-side item ("" when unnamed). IP literals are not names:
    they would explode label cardinality and can identify people (client addresses)."""
    for key in PEER_NAME_KEYS:
        value = attrs.get(key)
        if isinstance(value, str) and value and not _is_ip(value):
            return value
    return ""


def db_system(attrs: Mapping[str, AttrValue]) -> str:
    value = attrs.get("db.system.name", attrs.get("db.system"))
    return str(value) if value else ""


def fault_domain(
    category: Category, span_kind: int | None, attrs: Mapping[str, AttrValue], service: str
) -> tuple[str, str]:
    """(domain, component) for a failing item of ``service``."""
    peer = peer_name(attrs)
    if category.domain in NATURE_DOMAINS:
        return category.domain, peer or service
    system = db_system(attrs)
    if system:
        return "datastore", peer or system
    messaging = attrs.get("messaging.system")
    if messaging:
        return "messaging", peer or str(messaging)
    is_client = span_kind in (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER)
    if is_client or (span_kind is None and peer):
        return ("network" if category.domain == "network" else "dependency"), peer or "unknown-peer"
    return category.domain, service
