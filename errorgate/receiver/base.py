"""What the gRPC and HTTP receivers share: identity, endpoint, auth and the objects they call."""

from __future__ import annotations

import logging

from errorgate.config import AuthConfig
from errorgate.intake.contract import Intake
from errorgate.receiver.auth import BearerAuth
from errorgate.receiver.common import parse_endpoint
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
    ) -> None:
        self.receiver_id = receiver_id
        self._intake = intake
        self._logger = logger
        self._telemetry = telemetry
        self._key_path = f"receivers.{receiver_id}.protocols.{self.protocol}"
        self._host, self._port = parse_endpoint(endpoint, f"{self._key_path}.endpoint")
        self._auth = BearerAuth(auth, logger, f"receivers.{receiver_id}.auth") if auth else None
