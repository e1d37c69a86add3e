"""The error taxonomy (``governance/taxonomy.yaml``): loader, checks and matcher.

Checks (``load_taxonomy`` runs them; ``check_taxonomy`` returns the problems):
- every leaf maps to exactly one declared ITIL category and one fault domain;
- the leaf → ITIL mapping is one-to-one: no two leaves share an ITIL category (they would
  duplicate its meaning), no ITIL category is left without a leaf, and no two ITIL categories
  carry the same description;
- no status code, gRPC code or glob is claimed by two leaves (the match would depend on order);
- no key appears twice in a mapping (YAML would silently keep the last one).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from errorgate.attributes import AttrValue
from errorgate.processors.classification.detect import GRPC_CODES, ErrorInfo

Domain = Literal[
    "network", "datastore", "messaging", "dependency", "compute", "code", "config", "security", "data"
]
DOMAINS: tuple[str, ...] = Domain.__args__  # type: ignore[attr-defined]


class TaxonomyError(ValueError):
    """A problem in the taxonomy file; the message names the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Matchers(_Strict):
    error_types: list[str] = Field(default_factory=list)
    http_status: list[int] = Field(default_factory=list)
    rpc_codes: list[str] = Field(default_factory=list)
    templates: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)


class Leaf(_Strict):
    itil: str = Field(min_length=1)
    domain: Domain
    deterministic: bool = False
    description: str = ""
    match: Matchers = Field(default_factory=Matchers)


class RuleMatch(_Strict):
    error_type: str | None = None
    template: str | None = None
    route: str | None = None
    service: str | None = None


class FingerprintRule(_Strict):
    match: RuleMatch
    group: str = Field(min_length=1)


class TaxonomyFile(_Strict):
    itil_categories: dict[str, str]
    default_category: str
    categories: dict[str, Leaf]
    fingerprint_rules: list[FingerprintRule] = Field(default_factory=list)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()), re.DOTALL)


@dataclass(frozen=True)
class Category:
    name: str
    itil: str
    domain: str
    deterministic: bool


_MEMO_SIZE = 4096


class Taxonomy:
    def __init__(self, spec: TaxonomyFile) -> None:
        self.spec = spec
        self._compiled = [
            (
                name,
                [_glob(p) for p in leaf.match.error_types],
                frozenset(leaf.match.http_status),
                frozenset(c.upper() for c in leaf.match.rpc_codes),
                [_glob(p) for p in leaf.match.templates],
                [(k, _glob(v)) for k, v in leaf.match.attributes.items()],
            )
            for name, leaf in spec.categories.items()
        ]
        self._rules = [
            ([(field, _glob(g)) for field, g in rule.match.model_dump().items() if g is not None], rule.group)
            for rule in spec.fingerprint_rules
        ]
        self._attr_keys = tuple(
            sorted({k for leaf in spec.categories.values() for k in leaf.match.attributes})
        )
        self._memo: dict[tuple[object, ...], Category] = {}
        self._group_memo: dict[tuple[str, str, str, str], str | None] = {}

    @property
    def attribute_keys(self) -> tuple[str, ...]:
        """Every attribute a category matcher reads."""
        return self._attr_keys

    @cached_property
    def categories(self) -> dict[str, Category]:
        return {
            name: Category(name, leaf.itil, leaf.domain, leaf.deterministic)
            for name, leaf in self.spec.categories.items()
        }

    def classify(self, error: ErrorInfo, template: str, attrs: Mapping[str, AttrValue]) -> Category:
        """The first leaf (file order) any of whose matchers matches; else the default category."""
        # A pure function of these inputs: memoized (bounded), since errors of one group repeat.
        key = (
            error.error_type,
            error.http_status,
            error.rpc_code,
            template,
            tuple(str(attrs.get(k, "")) for k in self._attr_keys),
        )
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            found = self._memo[key] = self._classify(error, template, attrs)
        return found

    def _classify(self, error: ErrorInfo, template: str, attrs: Mapping[str, AttrValue]) -> Category:
        etype = error.error_type.lower()
        tmpl = template.lower()
        for name, types, statuses, codes, templates, attr_matchers in self._compiled:
            if (
                any(p.match(etype) for p in types)
                or (error.http_status is not None and error.http_status in statuses)
                or (error.rpc_code is not None and error.rpc_code in codes)
                or any(p.match(tmpl) for p in templates)
                or (attr_matchers and all(p.match(str(attrs.get(k, "")).lower()) for k, p in attr_matchers))
            ):
                return self.categories[name]
        return self.categories[self.spec.default_category]

    def fingerprint_group(self, *, error_type: str, template: str, route: str, service: str) -> str | None:
        """The ``group`` of the first fingerprint rule matching, if any."""
        key = (error_type, template, route, service)
        if key in self._group_memo:
            return self._group_memo[key]
        if len(self._group_memo) >= _MEMO_SIZE:
            self._group_memo.clear()
        group = self._group_memo[key] = self._group(error_type, template, route, service)
        return group

    def _group(self, error_type: str, template: str, route: str, service: str) -> str | None:
        values = {"error_type": error_type, "template": template, "route": route, "service": service}
        for matchers, group in self._rules:
            if all(p.match(values[field].lower()) for field, p in matchers):
                return group
        return None


def check_taxonomy(spec: TaxonomyFile) -> list[str]:
    """Problems with the taxonomy's structure (empty list: valid)."""
    problems: list[str] = []
    if spec.default_category not in spec.categories:
        problems.append(f"default_category: {spec.default_category!r} is not a leaf under categories:")
    owner: dict[str, str] = {}
    for name, leaf in spec.categories.items():
        if leaf.itil not in spec.itil_categories:
            problems.append(f"categories.{name}.itil: {leaf.itil!r} is not declared under itil_categories:")
        elif leaf.itil in owner:
            problems.append(
                f"categories.{name}.itil: {leaf.itil!r} is already the meaning of leaf {owner[leaf.itil]!r} "
                "(each ITIL category belongs to exactly one leaf)"
            )
        else:
            owner[leaf.itil] = name
        for code in leaf.match.rpc_codes:
            if code.upper() not in GRPC_CODES:
                problems.append(f"categories.{name}.match.rpc_codes: {code!r} is not a gRPC status code name")
    for itil in spec.itil_categories:
        if itil not in owner:
            problems.append(f"itil_categories.{itil}: no leaf maps to it")
    meanings: dict[str, str] = {}
    for itil, meaning in spec.itil_categories.items():
        key = " ".join(meaning.lower().split())
        if not key:
            problems.append(f"itil_categories.{itil}: needs a description of its meaning")
        elif key in meanings:
            problems.append(f"itil_categories.{itil}: same meaning as {meanings[key]!r}")
        else:
            meanings[key] = itil
    for kind in ("http_status", "rpc_codes", "error_types", "templates"):
        claimed: dict[str, str] = {}
        for name, leaf in spec.categories.items():
            for value in getattr(leaf.match, kind):
                key = str(value).lower()
                if key in claimed and claimed[key] != name:
                    problems.append(
                        f"categories.{name}.match.{kind}: {value!r} is also claimed by {claimed[key]!r}"
                    )
                claimed.setdefault(key, name)
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise TaxonomyError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_taxonomy(text: str, source: str = "<string>") -> Taxonomy:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except TaxonomyError as e:
        raise TaxonomyError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{source}: not valid YAML: {e}") from None
    try:
        spec = TaxonomyFile.model_validate(raw)
    except ValidationError as e:
        reasons = []
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"])
            reasons.append(f"{path}: {'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise TaxonomyError(f"{source}: {'; '.join(reasons)}") from None
    problems = check_taxonomy(spec)
    if problems:
        raise TaxonomyError(f"{source}: " + "; ".join(problems))
    return Taxonomy(spec)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load ``path`` or the bundled ``governance/taxonomy.yaml``; raises TaxonomyError."""
    if path is None:
        text = resources.files("errorgate.governance").joinpath("taxonomy.yaml").read_text(encoding="utf-8")
        return parse_taxonomy(text, "governance/taxonomy.yaml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TaxonomyError(f"cannot read taxonomy {path}: {e.strerror}") from None
    return parse_taxonomy(text, str(path))
