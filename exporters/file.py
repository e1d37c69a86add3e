"""``file`` exporter: OTLP/JSON lines, one export request per line (the Collector file exporter's
format), one file per signal (``traces.jsonl``, ``logs.jsonl``, ``metrics.jsonl``) under ``path``.

Each batch is written and flushed to the OS before ``export`` returns. When a file would grow
past ``rotation.max_megabytes`` it is renamed to ``<name>.1`` (older backups shift up to
``max_backups``; the oldest is deleted) and a new file is started, so a line is never split
across files.

Encrypted at rest whenever a keyring extension runs (``encryption: auto``, the default; the
embedded default config has one): each line is then ``egrest:v1:<base64url>`` -- the OTLP/JSON
line sealed with the keyring's at-rest key (AEAD) -- and ``errorgate decrypt --file`` opens it
for a caller who holds a role in the access policy (audited). ``encryption: off`` writes plain
OTLP/JSON lines for tools that read them directly (everything in them has been through the
pipeline's redaction, but nothing else protects it on disk).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Literal

from pydantic import Field

from errorgate.codec import BytesCodec, encode_line
from errorgate.component import ComponentConfig, ComponentContext, Exporter, ExportResult, Factory
from errorgate.otlp.json_format import to_json
from errorgate.signals import Batch, Signal


class RotationConfig(ComponentConfig):
    max_megabytes: float = Field(default=100, gt=0)
    max_backups: int = Field(default=10, ge=0)


class FileExporterConfig(ComponentConfig):
    path: str  # a directory
    rotation: RotationConfig = Field(default_factory=RotationConfig)
    encryption: Literal["auto", "off"] = Field(
        default="auto", description="auto: lines sealed with the keyring's at-rest key when one runs"
    )


class FileExporter(Exporter):
    def __init__(self, config: FileExporterConfig, context: ComponentContext | None = None) -> None:
        self.directory = Path(config.path)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"path: cannot create directory {config.path}: {e.strerror}") from None
        self.max_bytes = int(config.rotation.max_megabytes * 1048576)
        self.max_backups = config.rotation.max_backups
        self._lock = threading.Lock()
        self._files: dict[Signal, IO[bytes]] = {}
        self._sizes: dict[Signal, int] = {}
        self._codec: BytesCodec | None = None
        if config.encryption == "auto" and context is not None:
            self._codec = context.extensions.at_rest_codec()

    @property
    def encrypted(self) -> bool:
        return self._codec is not None

    def path_for(self, signal: Signal) -> Path:
        return self.directory / f"{signal.value}.jsonl"

    def export(self, batch: Batch, timeout: float) -> ExportResult:
        line = to_json(batch.request).encode("utf-8")
        if self._codec is not None:
            line = encode_line(self._codec, line)
        line += b"\n"
        try:
            with self._lock:
                f = self._file(batch.signal)
                size = self._sizes[batch.signal]
                if size and size + len(line) > self.max_bytes:
                    self._rotate(batch.signal)
                    f = self._file(batch.signal)
                f.write(line)
                f.flush()
                self._sizes[batch.signal] += len(line)
        except OSError as e:
            # A full or read-only disk may recover; the batch stays queued meanwhile.
            return ExportResult.retry(f"file write failed: {e.strerror or type(e).__name__}")
        return ExportResult.ok()

    def _file(self, signal: Signal) -> IO[bytes]:
        f = self._files.get(signal)
        if f is None:
            path = self.path_for(signal)
            f = self._files[signal] = open(path, "ab")  # noqa: SIM115 - kept open across batches
            self._sizes[signal] = path.stat().st_size
        return f

    def _rotate(self, signal: Signal) -> None:
        self._files.pop(signal).close()
        path = self.path_for(signal)
        if self.max_backups == 0:
            path.unlink(missing_ok=True)
        else:
            oldest = path.with_name(f"{path.name}.{self.max_backups}")
            oldest.unlink(missing_ok=True)
            for i in range(self.max_backups - 1, 0, -1):
                src = path.with_name(f"{path.name}.{i}")
                if src.exists():
                    os.replace(src, path.with_name(f"{path.name}.{i + 1}"))
            os.replace(path, path.with_name(f"{path.name}.1"))
        self._sizes[signal] = 0

    def shutdown(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


def create_file_exporter(config: FileExporterConfig, context: ComponentContext) -> Exporter:
    return FileExporter(config, context)


factory: Factory[FileExporterConfig, Exporter] = Factory(
    "file", FileExporterConfig, create_file_exporter, FileExporter
)
