"""Design standards per error category (``governance/standards.yaml``): what a recurring kind of
error asks of a service's design. Checked against the taxonomy's categories at load time."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from errorgate.governance.yamlfile import load_model


class StandardsError(ValueError):
    """A problem in standards.yaml; the message names the file and the key."""


class StandardsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    standards: dict[str, str] = Field(min_length=1)  # name -> what the standard asks
    categories: dict[str, list[str]] = Field(default_factory=dict)  # taxonomy category -> standards


class Standards:
    def __init__(self, spec: StandardsFile) -> None:
        self.spec = spec

    def for_category(self, category: str) -> list[tuple[str, str]]:
        """(name, text) of the standards ``category`` calls for; none for an unmapped category."""
        return [(name, self.spec.standards[name]) for name in self.spec.categories.get(category, [])]


def load_standards(path: str | Path | None = None, categories: Collection[str] | None = None) -> Standards:
    """Load ``path`` or the bundled file; with ``categories`` (the taxonomy's), every mapped
    category must be one of them."""
    spec, source, _ = load_model(path, "standards.yaml", StandardsFile, StandardsError, "standards")
    for category, names in spec.categories.items():
        if categories is not None and category not in categories:
            raise StandardsError(f"{source}: categories.{category}: not a category of the taxonomy")
        for name in names:
            if name not in spec.standards:
                raise StandardsError(
                    f"{source}: categories.{category}: standard {name!r} is not under standards:"
                )
    return Standards(spec)
