"""errorgate-kit: error handling for Python services whose telemetry errorgate's ``classify`` reads.

Modules: ``logging``, ``retry``, ``breaker``, ``bulkhead``, ``deadline``, ``idempotency``, ``dlq``,
``saga``, ``validation``, ``correlation``. Each emits what classify uses: exception events and
``error.type`` (detection, taxonomy), one span per attempt with ``http.request.resend_count``
(retried-then-succeeded → ``transient``), ``peer.service`` on client spans (cascade origin) and
``messaging.*`` on consumers (fault domain).
"""

__version__ = "0.1.0"
