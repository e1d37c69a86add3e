"""A held-out, multilingual evaluation of free-text redaction (issue 15).

Two splits, generated deterministically (Faker, fixed seeds) at bench time:

- ``dev``: locales and sentence templates that detection may be tuned on;
- ``test``: other locales and separately written templates, only reported.

``score`` counts, per entity type, the planted values left in clear (a value leaks when any
of its tokens of 4+ characters survives the redaction), the plain words kept and the decoys
(ids, hosts, versions, durations, routes, codes, uuids) kept intact.
"""
