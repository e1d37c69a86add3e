"""Extension ``catalog``: one service catalog (owners, tiers, SLOs, compliance scopes) for every
processor that reads it (``classify``'s severity and burn rates, ``retention``'s scopes).

A processor whose own ``catalog`` key is null uses this extension when it is enabled, and the
bundled ``governance/services.yaml`` otherwise; a processor's own path wins.
"""

from __future__ import annotations

from errorgate.component import ComponentConfig, ComponentContext, Extension, Factory
from errorgate.config import ConfigError
from errorgate.governance.catalog import CatalogError, ServiceCatalog, load_catalog


class CatalogConfig(ComponentConfig):
    path: str | None = None  # null: the bundled governance/services.yaml


class CatalogExtension(Extension):
    def __init__(self, catalog: ServiceCatalog) -> None:
        self.catalog = catalog


def create_catalog(config: CatalogConfig, context: ComponentContext) -> Extension:
    try:
        return CatalogExtension(load_catalog(config.path))
    except CatalogError as e:
        raise ConfigError(f"extensions.{context.component_id}.path: {e}") from None


def shared_catalog(context: ComponentContext, own_path: str | None) -> ServiceCatalog | None:
    """The catalog a processor uses when its own ``catalog`` key (``own_path``) is null."""
    extension = context.extension(CatalogExtension)
    return extension.catalog if extension is not None and own_path is None else None


factory: Factory[CatalogConfig, Extension] = Factory(
    "catalog", CatalogConfig, create_catalog, CatalogExtension
)
