"""Given names and surnames of many languages, from Faker's person providers (Faker is a
maintained, MIT-licensed data set of ~80 locales; its lists ship in the package, so nothing is
fetched). Only Latin-script entries are kept: telemetry text is matched word by word.

Names that are also everyday English or telemetry words ("Will", "May", "Service", "Cache")
are dropped: a dictionary hit alone must not redact a plain word.

``held_out_locales`` removes, for a while, every name that some locales' providers can produce
(their inherited lists included): the held-out benchmark's test split draws its people from
Faker too, and a figure measured with the very lists the test names came from flatters.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache

# Latin letters (with diacritics), apostrophes and inner hyphens: "Hauserová", "O'Neil", "Jean-Luc".
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ɏ][A-Za-zÀ-ÖØ-öø-ɏ'’-]*")

# Words of English and of telemetry that are also someone's name in some locale. A name here
# is still found after a role word or in a full name with a known surname.
COMMON_WORDS: frozenset[str] = frozenset(
    [
        "a",
        "able",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "away",
        "back",
        "bad",
        "be",
        "been",
        "before",
        "being",
        "below",
        "best",
        "between",
        "big",
        "bill",
        "both",
        "brand",
        "bright",
        "but",
        "by",
        "can",
        "case",
        "cash",
        "chance",
        "change",
        "child",
        "christian",
        "class",
        "close",
        "cloud",
        "code",
        "cook",
        "core",
        "cost",
        "could",
        "crown",
        "day",
        "dear",
        "did",
        "do",
        "does",
        "down",
        "dream",
        "early",
        "east",
        "edge",
        "else",
        "even",
        "ever",
        "faith",
        "fall",
        "field",
        "fine",
        "first",
        "fish",
        "for",
        "fox",
        "free",
        "from",
        "gay",
        "glad",
        "gold",
        "good",
        "grace",
        "grant",
        "great",
        "green",
        "had",
        "has",
        "have",
        "he",
        "her",
        "here",
        "hill",
        "his",
        "home",
        "hope",
        "how",
        "hunter",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "job",
        "joy",
        "just",
        "justice",
        "key",
        "king",
        "lake",
        "land",
        "last",
        "less",
        "like",
        "little",
        "long",
        "love",
        "low",
        "lucky",
        "main",
        "major",
        "man",
        "many",
        "mark",
        "may",
        "me",
        "mid",
        "miles",
        "more",
        "most",
        "much",
        "must",
        "my",
        "new",
        "next",
        "nice",
        "night",
        "no",
        "noble",
        "none",
        "north",
        "not",
        "now",
        "of",
        "off",
        "old",
        "on",
        "once",
        "one",
        "only",
        "open",
        "or",
        "order",
        "other",
        "our",
        "out",
        "over",
        "page",
        "paris",
        "park",
        "peace",
        "penny",
        "pearl",
        "people",
        "per",
        "power",
        "price",
        "queen",
        "rain",
        "ray",
        "read",
        "ready",
        "red",
        "rich",
        "river",
        "rock",
        "rose",
        "ruby",
        "sage",
        "said",
        "same",
        "sea",
        "see",
        "sell",
        "service",
        "set",
        "shall",
        "she",
        "short",
        "should",
        "side",
        "silver",
        "sky",
        "small",
        "snow",
        "so",
        "some",
        "song",
        "south",
        "spring",
        "star",
        "stars",
        "still",
        "stone",
        "storm",
        "strong",
        "such",
        "summer",
        "sun",
        "sunny",
        "sweet",
        "tag",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "time",
        "to",
        "too",
        "top",
        "true",
        "under",
        "unity",
        "up",
        "us",
        "very",
        "wait",
        "walker",
        "want",
        "was",
        "way",
        "we",
        "well",
        "were",
        "west",
        "what",
        "when",
        "where",
        "which",
        "while",
        "white",
        "who",
        "why",
        "will",
        "win",
        "winter",
        "with",
        "wood",
        "would",
        "yet",
        "you",
        "young",
        "your",
        "api",
        "app",
        "auth",
        "bank",
        "batch",
        "bean",
        "billing",
        "bot",
        "box",
        "bus",
        "cache",
        "card",
        "cart",
        "chip",
        "client",
        "cluster",
        "config",
        "cron",
        "data",
        "db",
        "debug",
        "deploy",
        "dev",
        "disk",
        "dock",
        "domain",
        "drive",
        "email",
        "error",
        "event",
        "file",
        "flash",
        "gate",
        "guest",
        "host",
        "id",
        "image",
        "index",
        "info",
        "job",
        "jobs",
        "kafka",
        "lambda",
        "lead",
        "link",
        "list",
        "load",
        "local",
        "lock",
        "log",
        "login",
        "mail",
        "master",
        "memo",
        "mode",
        "model",
        "monitor",
        "net",
        "node",
        "note",
        "null",
        "ok",
        "pod",
        "port",
        "post",
        "prime",
        "prod",
        "proxy",
        "queue",
        "redis",
        "region",
        "report",
        "root",
        "route",
        "rule",
        "run",
        "safe",
        "sale",
        "scale",
        "scheduler",
        "search",
        "server",
        "session",
        "shard",
        "shell",
        "shop",
        "ship",
        "signal",
        "site",
        "slack",
        "spark",
        "stage",
        "state",
        "status",
        "stock",
        "store",
        "stream",
        "sync",
        "system",
        "table",
        "task",
        "team",
        "test",
        "token",
        "trace",
        "track",
        "trade",
        "user",
        "vault",
        "view",
        "web",
        "worker",
        "zone",
    ]
)


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str)]
    if isinstance(value, list | tuple | set | frozenset):
        return [v for v in value if isinstance(v, str)]
    return []


# Comma-separated Faker locales whose names are held out (set by ``held_out_locales``, and so
# inherited by pool workers started meanwhile).
HELD_OUT_ENV = "ERRORGATE_NAMES_HELD_OUT_LOCALES"
GIVEN_ATTRS = (
    "first_names", "first_names_male", "first_names_female", "first_names_nonbinary",
    "first_romanized_names", "first_romanized_names_male", "first_romanized_names_female",
)  # fmt: skip
SURNAME_ATTRS = ("last_names", "last_names_male", "last_names_female", "last_romanized_names")


def _words(names: Iterable[str]) -> set[str]:
    return {w for name in names for w in name.split() if _LATIN_WORD.fullmatch(w) and len(w) > 1}


def _provider(locale: str) -> type:
    import faker.providers.person as person

    return importlib.import_module(f"{person.__name__}.{locale}").Provider  # type: ignore[no-any-return]


def _provider_lists(attrs: tuple[str, ...]) -> frozenset[str]:
    import faker.providers.person as person

    out: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = _provider(module.name)
        for attr in attrs:
            # Class attributes read from the class dict: some providers define properties.
            out |= _words(_strings(vars(provider).get(attr)))
    return frozenset(w for w in out if w.lower() not in COMMON_WORDS and w[0].isupper())


def _held_out_words(attrs: tuple[str, ...]) -> set[str]:
    """Every name word the held-out locales' person providers can produce: their own lists and
    the ones they inherit (``es_MX`` draws from ``es``), of both given names and surnames. The
    provider is the one Faker itself picks for the locale (``it_CH`` has none of its own)."""
    from faker import Faker

    out: set[str] = set()
    for locale in filter(None, os.environ.get(HELD_OUT_ENV, "").split(",")):
        for provider in Faker(locale).providers:
            if not type(provider).__module__.startswith("faker.providers.person"):
                continue
            for attr in attrs:
                for cls in type(provider).__mro__:
                    out |= _words(_strings(vars(cls).get(attr)))
    return out


@cache
def _lists(held_out: str) -> tuple[frozenset[str], frozenset[str]]:
    drop = _held_out_words(GIVEN_ATTRS + SURNAME_ATTRS) if held_out else set()
    return _provider_lists(GIVEN_ATTRS) - drop, _provider_lists(SURNAME_ATTRS) - drop


def given_names() -> frozenset[str]:
    return _lists(os.environ.get(HELD_OUT_ENV, ""))[0]


def surnames() -> frozenset[str]:
    return _lists(os.environ.get(HELD_OUT_ENV, ""))[1]


@contextmanager
def held_out_locales(locales: Iterable[str]) -> Iterator[None]:
    """Within the block, the name lists lack every name of ``locales``' person providers."""
    before = os.environ.get(HELD_OUT_ENV)
    os.environ[HELD_OUT_ENV] = ",".join(sorted(locales))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HELD_OUT_ENV, None)
        else:
            os.environ[HELD_OUT_ENV] = before
