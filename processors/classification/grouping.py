"""Category, fingerprint, fault domain and component of a failing item, memoized.

All four are a pure function of the error, its template, the item's kind, route and service
and the few attributes the taxonomy and the fault domain read; failing items of one group
repeat all of them, so the answers are kept (bounded) instead of recomputed per item.
"""

from __future__ import annotations

from collections.abc import Mapping

from errorgate.attributes import AttrValue
from errorgate.processors.classification.detect import ErrorInfo
from errorgate.processors.classification.domain import FAULT_DOMAIN_KEYS, fault_domain
from errorgate.processors.classification.fingerprint import fingerprint, rule_fingerprint, top_frames
from errorgate.processors.classification.taxonomy import Category, Taxonomy

Grouped = tuple[Category, str, str, str]  # category, fingerprint, domain, component
_ABSENT = object()
_MEMO_SIZE = 4096


class Grouping:
    def __init__(self, taxonomy: Taxonomy, stack_frames: int) -> None:
        self.taxonomy = taxonomy
        self.stack_frames = stack_frames
        # Every attribute ``compute`` reads (taxonomy matchers, fault domain).
        self._keys = (*taxonomy.attribute_keys, *FAULT_DOMAIN_KEYS)
        self._memo: dict[tuple[object, ...], Grouped] = {}

    def __call__(
        self,
        error: ErrorInfo,
        template: str,
        attrs: Mapping[str, AttrValue],
        service: str,
        span_kind: int | None,
        route: str,
    ) -> Grouped:
        """(category, fingerprint, domain, component) of a failing item."""
        try:
            key = (
                error.error_type,
                error.stacktrace,
                error.http_status,
                error.rpc_code,
                template,
                service,
                span_kind,
                route,
                # Present keys with their value's type (1, 1.0 and True are equal keys but read differently).
                *[(k, v.__class__, v) for k in self._keys if (v := attrs.get(k, _ABSENT)) is not _ABSENT],
            )
            found = self._memo.get(key)
        except TypeError:  # an unhashable attribute value (list, map): no memo
            return self.compute(error, template, attrs, service, span_kind, route)
        if found is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            found = self._memo[key] = self.compute(error, template, attrs, service, span_kind, route)
        return found

    def compute(
        self,
        error: ErrorInfo,
        template: str,
        attrs: Mapping[str, AttrValue],
        service: str,
        span_kind: int | None,
        route: str,
    ) -> Grouped:
        category = self.taxonomy.classify(error, template, attrs)
        group = self.taxonomy.fingerprint_group(
            error_type=error.error_type, template=template, route=route, service=service
        )
        if group is not None:
            fp = rule_fingerprint(service, group)
        else:
            frames = top_frames(error.stacktrace, self.stack_frames) if error.stacktrace else []
            fp = fingerprint(service, error.error_type, frames, template, route)
        domain, component = fault_domain(category, span_kind, attrs, service)
        return category, fp, domain, component
