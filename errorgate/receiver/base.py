"""What the gRPC and HTTP receivers share: identity, endpoint, auth and the objects they call."""

from __future__ import annotations

import logging

from errorgate.config import AuthConfig, binds_all_interfaces
from errorgate.intake.contract import Intake
from errorgate.receiver.auth import BearerAuth
from errorgate.receiver.common import REJECTION_REASONS, parse_endpoint
from errorgate.receiver.config import RequestLimitsConfig
from errorgate.receiver.limits import RequestLimits
from errorgate.telemetry import Telemetry


class ReceiverBase:
    protocol: str  # "grpc" | "http": also the config key under ``protocols``

    def __init__(
        self,
        receiver_id: str,
        endpoint: str,
        auth: AuthConfig | None,
        intake: Intake,
        logger: logging.Logger,
        telemetry: Telemetry,
        limits: RequestLimitsConfig | None = None,
    ) -> None:
        self.receiver_id = receiver_id
        self._intake = intake
        self._logger = logger
        self._telemetry = telemetry
        self._key_path = f"receivers.{receiver_id}.protocols.{self.protocol}"
        self._host, self._port = parse_endpoint(endpoint, f"{self._key_path}.endpoint")
        self._auth = BearerAuth(auth, logger, f"receivers.{receiver_id}.auth") if auth else None
        self._limits = RequestLimits(limits or RequestLimitsConfig(), f"receivers.{receiver_id}.limits")
        for reason in REJECTION_REASONS:  # at 0 from start-up, so rate() sees the first refusal
            telemetry.rejected_batches.labels(receiver_id, reason)

    @property
    def key_path(self) -> str:
        """The config key of this protocol's section (``receivers.<id>.protocols.<protocol>``)."""
        return self._key_path

    def _warn_if_all_interfaces(self, endpoint: str) -> None:
        """At start: say so when the endpoint takes connections from every network (":4317",
        0.0.0.0, [::]), which is easy to write by mistake and exposes the receiver."""
        if binds_all_interfaces(self._host):
            self._logger.warning(
                "%s.endpoint listens on all network interfaces (%s): reachable from other hosts; "
                "write 127.0.0.1 or the one address to serve on unless that is intended",
                self._key_path,
                endpoint,
            )
