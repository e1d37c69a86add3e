"""Street addresses in the shapes of many countries: number before the street ("4412 Harbor
View Road Suite 753", "12, rue des Lilas"), street word before the name and the number after
("Rua Mathias Moritz 723", "Calle de Alcalá 45"), and compound street names ("Lindenstraße
12a", "Skolegyden 33")."""

from __future__ import annotations

import regex
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from errorgate.processors.redaction.recognizers.base import Gate, RegexRecognizer, result

# Street-type words written after the name (English) or before it (Romance, Slavic, Baltic,
# Romanian, Greek-transliterated...), and endings of compound street names (Germanic, Nordic,
# Finnish, Hungarian, Turkish, Czech).
SUFFIX_WORDS = (
    # USPS Publication 28 street suffixes and their common abbreviations
    "alley", "annex", "arcade", "avenue", "ave", "bayou", "beach", "bend", "bluff", "bluffs",
    "bottom", "boulevard", "blvd", "branch", "bridge", "brook", "brooks", "burg", "burgs", "bypass",
    "camp", "canyon", "cape", "causeway", "center", "centre", "centers", "circle", "cir", "circles",
    "cliff", "cliffs", "club", "common", "commons", "corner", "corners", "course", "court", "ct",
    "courts", "cove", "coves", "creek", "crescent", "crest", "crossing", "crossroad", "curve",
    "dale", "dam", "divide", "drive", "dr", "drives", "estate", "estates", "expressway",
    "extension", "extensions", "falls", "ferry", "field", "fields", "flat", "flats", "ford",
    "fords", "forest", "forge", "forges", "fork", "forks", "fort", "freeway", "garden", "gardens",
    "gateway", "glen", "glens", "green", "greens", "grove", "groves", "harbor", "harbors",
    "haven", "heights", "highway", "hwy", "hill", "hills", "hollow", "inlet", "island", "islands",
    "isle", "junction", "junctions", "key", "keys", "knoll", "knolls", "lake", "lakes", "land",
    "landing", "lane", "ln", "light", "lights", "loaf", "lock", "locks", "lodge", "loop", "mall",
    "manor", "manors", "meadow", "meadows", "mews", "mill", "mills", "mission", "motorway",
    "mount", "mountain", "mountains", "neck", "orchard", "oval", "overpass", "park", "parks",
    "parkway", "pkwy", "pass", "passage", "path", "pike", "pine", "pines", "place", "pl", "plain",
    "plains", "plaza", "point", "points", "port", "ports", "prairie", "radial", "ramp", "ranch",
    "rapid", "rapids", "rest", "ridge", "ridges", "river", "road", "rd", "roads", "route", "row",
    "run", "shoal", "shoals", "shore", "shores", "skyway", "spring", "springs", "spur", "spurs",
    "square", "sq", "squares", "station", "stravenue", "stream", "street", "st", "streets",
    "summit", "terrace", "throughway", "trace", "track", "trafficway", "trail", "trailer",
    "tunnel", "turnpike", "underpass", "union", "unions", "valley", "valleys", "viaduct", "view",
    "views", "village", "villages", "ville", "vista", "walk", "walks", "wall", "way", "ways",
    "well", "wells", "close", "mews", "row",
    # written after the name elsewhere
    "caddesi", "sokak", "sokağı", "bulvarı", "utca", "út", "tér", "körút", "marg", "nagar",
    "šetalište", "trg", "nábřeží",
)  # fmt: skip
PREFIX_WORDS = (
    "rua", "avenida", "av", "travessa", "largo", "praça", "praca", "alameda", "estrada", "rodovia",
    "calle", "carrer", "camino", "paseo", "plaza", "ronda", "via", "viale", "piazza", "corso",
    "vicolo", "largo", "strada", "rue", "boulevard", "bd", "chemin", "allée", "allee", "impasse",
    "quai", "cours", "route", "ul", "ulica", "aleja", "al", "os", "osiedle", "plac", "calea",
    "aleea", "bulevardul", "bd-ul", "str", "strada", "piața", "ulice", "náměstí", "třída",
    "ulitsa", "prospekt", "avinguda", "rambla", "vial", "travesía", "glorieta", "pasaje",
    "callejón", "cuesta", "urbanización", "aleja", "rond", "sentiero", "contrada", "borgo",
)  # fmt: skip
COMPOUND_ENDINGS = (
    "straße", "strasse", "str.", "weg", "gasse", "allee", "platz", "damm", "ufer",
    "steig", "pfad", "chaussee", "markt", "gade", "gaden", "vej", "vejen", "allé", "stræde",
    "strædet", "plads", "torv", "gyde", "gyden", "vænge", "vænget", "vägen", "väg", "gatan",
    "gata", "gränd", "stigen", "torget", "veien", "vei", "veg", "vegen", "gaten", "katu",
    "tie", "kuja", "polku", "raitti", "kaari", "straat", "laan", "gracht", "plein", "kade",
    "dreef", "singel", "hof", "utca", "útja", "sokak", "sokağı", "caddesi", "bulvarı",
)  # fmt: skip

_NUM = r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,4}[A-Za-z]?)?"
_NAME = r"[\p{Lu}\p{Lo}\d][\p{L}'’.-]*"
_LINK = r"(?:de la|della|delle|degli|dos|das|des|del|de|da|do|di|du|la|le|les|van|von|der|den|het|am|an|zu)\b"
_UNIT = (
    r"(?:,?[ \t]+(?:Suite|Ste\.?|Apt\.?|Apartment|Unit|Flat|Floor|Fl\.?|#|Piso|Puerta|Planta|Bloco|Apto\.?"
    r"|Andar|Étage|Etage|Stock|lgh\.?|Lgh\.?|Esc\.?|Escalera|Interior|Int\.?|Depto\.?|Casa)[ \t]*\w{1,6})?"
)
# Street words written in lower case too: the common French, Spanish, Portuguese... ones. Others
# ("via", "route", "al", "str") are plain words or abbreviations in lower case.
LOWER_OK = ("rue", "calle", "rua", "avenida", "avenue", "carrer", "ulica", "aleea", "strada",
            "piazza", "viale", "allée", "chemin", "boulevard", "travessa", "alameda", "impasse",
            "aleja", "ulica", "šetalište", "trg", "utca", "caddesi", "sokak")  # fmt: skip
# Abbreviations taken in lower case only with their full stop ("al. Listopada 871", "ul. Polna 3").
LOWER_WITH_DOT = ("al", "ul", "os", "av", "bd", "str")


def _alt(words: tuple[str, ...]) -> str:
    """Title- and upper-case forms of ``words`` (lower case too for ``LOWER_OK``), longest first."""
    forms = {
        f
        for w in words
        for f in (w.title(), w.upper(), w)
        if f == w.title() or f == w.upper() or w in LOWER_OK
    }
    forms |= {f"{w}." for w in words if w in LOWER_WITH_DOT}
    return "|".join(regex.escape(f) for f in sorted(forms, key=len, reverse=True))


_NUMBER_FIRST = rf"(?<![\w.-]){_NUM},?[ \t]+(?:{_NAME}[ \t]+){{0,4}}(?:{_alt(SUFFIX_WORDS)})\b\.?{_UNIT}"
_NUMBER_THEN_PREFIX = (
    rf"(?<![\w.-]){_NUM},?[ \t]+(?:{_alt(PREFIX_WORDS)})\.?[ \t]+(?:(?:{_LINK}|{_NAME})[ \t]*){{1,5}}"
    r"(?<![ \t])"
)
_PREFIX_FIRST = (
    rf"(?<![\w.-])(?:{_alt(PREFIX_WORDS)})\.?[ \t]+(?:(?:{_LINK}|{_NAME}),?[ \t]+){{1,5}}"
    rf"(?:(?i:n[º°o.]?|nr\.?|no\.?)[ \t]*)?{_NUM}\b{_UNIT}"
)
_COMPOUND = rf"(?<![\w.-])\p{{Lu}}[\p{{L}}-]{{2,}}(?:{'|'.join(regex.escape(w) for w in COMPOUND_ENDINGS)}|-(?:{'|'.join(regex.escape(w.title()) for w in COMPOUND_ENDINGS)}))(?:[ \t]+(?:{_LINK}|{_NAME})){{0,2}},?[ \t]+(?:(?i:nr\.?|no\.?)[ \t]*)?{_NUM}\b{_UNIT}"
_SUFFIX_THEN_NUMBER = rf"(?<![\w.-])(?:{_NAME}[ \t]+){{1,3}}(?:{_alt(SUFFIX_WORDS)})\.?,?[ \t]+(?:(?i:nr\.?|no\.?)[ \t]*)?{_NUM}\b{_UNIT}"
_GATE = regex.compile(r"\d")


class StreetAddressRecognizer(RegexRecognizer):
    """A street (of the shapes above) with its house number; a street name without a number is
    too often a plain word ("via", "place", "route"). Scored above NER, which reads "Rua Mathias
    Moritz" as a person."""

    ENTITY = "STREET_ADDRESS"
    PATTERNS = []
    MIN_DIGITS = 1
    SHAPES = (
        ("number_first", regex.compile(_NUMBER_FIRST), 0.9),
        ("number_then_street_word", regex.compile(_NUMBER_THEN_PREFIX), 0.9),
        ("street_word_first", regex.compile(_PREFIX_FIRST), 0.9),
        ("compound_street", regex.compile(_COMPOUND), 0.9),
        ("street_then_number", regex.compile(_SUFFIX_THEN_NUMBER), 0.85),
    )

    def gate(self) -> Gate:
        return lambda text, lower, digits: digits >= 1 and len(text) >= 6

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out = []
        for rule, rx, score in self.SHAPES:
            for m in rx.finditer(text, overlapped=False):
                out.append(result(self, self.ENTITY, m.start(), m.end(), score, rule))
        return out
