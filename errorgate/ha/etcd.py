"""A small etcd v3 client over its JSON gateway (``/v3/...`` on the client port, on by default).

Why not a gRPC client library: ``etcd3`` (the usual one) is unmaintained and its generated
stubs break with protobuf ≥ 4 (the gateway uses protobuf 7); its forks are young or async-only.
Leases, transactions and ranges are four JSON calls; ``httpx`` (already installed with the
project's dependencies) does them, trying each configured member in turn.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx


class EtcdUnavailable(Exception):
    """No member answered (network, or no quorum: etcd does not answer writes then)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdClient:
    def __init__(self, endpoints: list[str], timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("ha.etcd.endpoints: at least one etcd client URL is required")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._http = httpx.Client(timeout=timeout)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last = ""
        for endpoint in list(self.endpoints):
            try:
                r = self._http.post(f"{endpoint}/v3/{path}", json=body)
            except httpx.HTTPError as e:
                last = f"{endpoint}: {type(e).__name__}"
                continue
            if r.status_code == 200:
                answer: dict[str, Any] = r.json()
                if "error" not in answer:
                    # The member that answered first next time too.
                    self.endpoints.remove(endpoint)
                    self.endpoints.insert(0, endpoint)
                    return answer
            last = f"{endpoint}: HTTP {r.status_code}"
        raise EtcdUnavailable(f"no etcd member answered /v3/{path} ({last})")

    def grant(self, ttl: int) -> int:
        return int(self.call("lease/grant", {"TTL": ttl})["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's remaining TTL after the refresh (0: it expired)."""
        result = self.call("lease/keepalive", {"ID": lease}).get("result", {})
        return int(result.get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self.call("lease/revoke", {"ID": lease})

    def create_if_absent(self, key: str, value: str, lease: int) -> tuple[bool, int]:
        """(created, the key's create revision): the election step."""
        answer = self.call(
            "kv/txn",
            {
                "compare": [
                    {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                ],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}],
                "failure": [{"request_range": {"key": _b64(key)}}],
            },
        )
        if answer.get("succeeded"):
            return True, int(answer["header"]["revision"])
        kvs = answer["responses"][0]["response_range"].get("kvs", [])
        return False, int(kvs[0]["create_revision"]) if kvs else 0

    def put_if_owner(self, owner_key: str, token: int, key: str, value: str) -> bool:
        """Write ``key`` only while ``owner_key`` is still the one created at revision ``token``."""
        answer = self.call(
            "kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(owner_key),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": str(token),
                    }
                ],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            },
        )
        return bool(answer.get("succeeded"))

    def put_once_if_owner(
        self, owner_key: str, token: int, key: str, value: str, expiring: tuple[str, int] | None = None
    ) -> tuple[bool, str]:
        """Write ``key`` only while ``owner_key`` has create revision ``token`` and ``key`` was
        never written, in one transaction (so two leaders in turn cannot both record it); with
        ``expiring = (other, ttl)``, also require ``other`` absent and write it under a lease of
        ``ttl`` seconds (a cooldown every instance sees). (written, why not: "stale", "done" or
        "expiring")."""
        compare = [
            {"key": _b64(owner_key), "target": "CREATE", "result": "EQUAL", "create_revision": str(token)},
            {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
        ]
        success: list[dict[str, Any]] = [{"request_put": {"key": _b64(key), "value": _b64(value)}}]
        failure: list[dict[str, Any]] = [
            {"request_range": {"key": _b64(owner_key)}},
            {"request_range": {"key": _b64(key)}},
        ]
        if expiring is not None:
            other, ttl = expiring
            lease = self.grant(ttl)
            compare.append(
                {"key": _b64(other), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            )
            success.append({"request_put": {"key": _b64(other), "value": _b64(value), "lease": str(lease)}})
            failure.append({"request_range": {"key": _b64(other)}})
        answer = self.call("kv/txn", {"compare": compare, "success": success, "failure": failure})
        if answer.get("succeeded"):
            return True, ""
        found = [bool(r["response_range"].get("kvs")) for r in answer.get("responses", [])]
        owner = answer["responses"][0]["response_range"].get("kvs", [])
        if not owner or int(owner[0]["create_revision"]) != token:
            return False, "stale"
        return False, "done" if found[1] else "expiring"

    def get(self, key: str) -> str | None:
        kvs = self.call("kv/range", {"key": _b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def close(self) -> None:
        self._http.close()
