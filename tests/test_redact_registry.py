"""The built-in recognizer table: one row per recognizer class, each agreeing with its class.

``problems`` is run against the real table and against deliberately broken copies of it, so the
checks are shown to fail when they should: a check that cannot fail proves nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from presidio_analyzer import EntityRecognizer

from errorgate.processors.redaction.recognizers import registry
from errorgate.processors.redaction.recognizers.registry import (
    BUILTIN_RECOGNIZERS,
    RECOGNIZER_ENTITIES,
    Registered,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "errorgate.processors.redaction.recognizers"
# Recognizer classes of the package that are not built-ins: the regex base class, and the class
# behind recognizers declared in YAML.
NOT_BUILTIN = frozenset({"RegexRecognizer", "YamlRecognizer", "FreeTextRecognizer"})
ENTITY_TYPE = re.compile(r"^[A-Z][A-Z0-9_]*$")  # as ``CustomRecognizerSpec.entity_type``


def defined_recognizers() -> set[str]:
    """Names of the recognizer classes defined (not merely imported) in the package's modules."""
    package = importlib.import_module(PACKAGE)
    found: set[str] = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        found.update(
            name
            for name, obj in vars(module).items()
            if isinstance(obj, type)
            and issubclass(obj, EntityRecognizer)
            and obj.__module__ == module.__name__
        )
    return found - NOT_BUILTIN


def row_problems(row: Registered) -> list[str]:
    out = [] if row.entities else [f"{row.name}: declares no entities"]
    out += [f"{row.name}: bad entity type {e!r}" for e in row.entities if not ENTITY_TYPE.match(e)]
    try:
        # The built-ins take no required arguments (the engine builds them the same way).
        recognizer = registry.recognizer_class(row)()  # type: ignore[call-arg]
    except Exception as e:  # a missing module or class, or one that cannot be built
        return [*out, f"{row.name}: cannot build: {type(e).__name__}: {e}"]
    name: str = recognizer.name  # type: ignore[has-type]  # Presidio leaves it unannotated
    if name != row.name:
        out.append(f"{row.name}: the class calls itself {name!r}")
    if list(recognizer.supported_entities) != list(row.entities):
        out.append(f"{row.name}: the class reports {recognizer.supported_entities}, the row {row.entities}")
    return out


def problems(rows: tuple[Registered, ...], defined: set[str]) -> list[str]:
    names = [r.name for r in rows]
    out = [f"{n}: listed {names.count(n)} times" for n in sorted(set(names)) if names.count(n) > 1]
    for row in rows:
        out += row_problems(row)
    out += [f"{n}: defined but not registered" for n in sorted(defined - set(names))]
    return out


def test_the_table_has_no_problems() -> None:
    assert problems(BUILTIN_RECOGNIZERS, defined_recognizers()) == []


def test_the_mapping_is_the_table() -> None:
    assert list(RECOGNIZER_ENTITIES.items()) == [(r.name, r.entities) for r in BUILTIN_RECOGNIZERS]


_CARD = BUILTIN_RECOGNIZERS[0]
BROKEN: dict[str, tuple[tuple[Registered, ...], str]] = {
    "a name listed twice": (
        (*BUILTIN_RECOGNIZERS, dataclasses.replace(_CARD, entities=("IBAN_CODE",))),
        "CardRecognizer: listed 2 times",
    ),
    "a row with no entities": (
        (dataclasses.replace(_CARD, entities=()), *BUILTIN_RECOGNIZERS[1:]),
        "CardRecognizer: declares no entities",
    ),
    "a malformed entity type": (
        (dataclasses.replace(_CARD, entities=("credit card",)), *BUILTIN_RECOGNIZERS[1:]),
        "CardRecognizer: bad entity type 'credit card'",
    ),
    "a row disagreeing with its class": (
        (dataclasses.replace(_CARD, entities=("CREDIT_CARD", "IBAN_CODE")), *BUILTIN_RECOGNIZERS[1:]),
        "CardRecognizer: the class reports ['CREDIT_CARD'], the row ('CREDIT_CARD', 'IBAN_CODE')",
    ),
    "a row in the wrong module": (
        (dataclasses.replace(_CARD, module="secrets"), *BUILTIN_RECOGNIZERS[1:]),
        "CardRecognizer: cannot build: AttributeError",
    ),
    "a row for no class": (
        (*BUILTIN_RECOGNIZERS, Registered("NoSuchRecognizer", ("NOTHING",), "secrets")),
        "NoSuchRecognizer: cannot build: AttributeError",
    ),
    "a row naming a helper, not a recognizer": (
        (*BUILTIN_RECOGNIZERS, Registered("luhn_ok", ("CREDIT_CARD",), "financial")),
        "luhn_ok: cannot build: TypeError",
    ),
    "a class left out": (BUILTIN_RECOGNIZERS[1:], "CardRecognizer: defined but not registered"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_table_is_caught(case: str) -> None:
    rows, expected = BROKEN[case]
    found = problems(rows, defined_recognizers())
    assert any(p.startswith(expected) for p in found), found


def test_the_table_is_read_without_presidio() -> None:
    """Config validation and ``rules audit`` read the table; importing Presidio would cost them
    over a second and load spaCy into the gateway process."""
    code = (
        "import sys\n"
        "import errorgate.processors.redaction.policy, errorgate.processors.redaction.recognizers.registry\n"
        "print(sorted(m for m in ('presidio_analyzer', 'spacy') if m in sys.modules))\n"
    )
    # ``-c`` puts the working directory first on sys.path: this checkout is what is imported.
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
