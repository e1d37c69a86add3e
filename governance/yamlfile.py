"""Loading governance YAML files (catalog, access policy, retention policy) into strict models,
with errors that name the file and the key path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(e: ValidationError) -> str:
    problems = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}" if where else msg)
    return "; ".join(problems)


def load_model(
    path: str | Path | None, bundled: str, model: type[M], error: type[Exception], what: str
) -> tuple[M, str, bytes]:
    """(validated model, source name, the file's bytes) from ``path`` or the bundled ``governance/<bundled>``.

    Every failure raises ``error`` with a message naming the file and, for schema problems, the key.
    """
    if path is None:
        data = resources.files("errorgate.governance").joinpath(bundled).read_bytes()
        source = f"governance/{bundled}"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise error(f"cannot read {what} {path}: {e.strerror}") from None
        source = str(path)
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise error(f"{source}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise error(f"{source}: the top level must be a mapping")
    try:
        return model.model_validate(raw), source, data
    except ValidationError as e:
        raise error(f"{source}: {describe_validation_error(e)}") from None
