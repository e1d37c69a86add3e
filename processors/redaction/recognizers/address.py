"""Street addresses in the shapes of many countries: number before the street ("4412 Harbor
View Road Suite 753", "12, rue des Lilas"), street word before the name and the number after
("Rua Mathias Moritz 723", "Calle de Alcalá 45"), and compound street names ("Lindenstraße
12a", "Skolegyden 33")."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

import regex
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from errorgate.processors.redaction.recognizers.base import Gate, RegexRecognizer, result
from errorgate.processors.redaction.recognizers.dictionary import english_words
from errorgate.processors.redaction.recognizers.names import COMMON_WORDS

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
    "via", "points", "approach", "broadway", "chase", "drove", "gate", "grange", "hey", "parade",
    "rise", "side", "wharf", "wynd", "yard", "quay", "esplanade", "promenade",
    # Australian, New Zealand and Irish street types
    "crossway", "reserve", "parkways", "range", "concourse", "circuit", "outlook", "retreat",
    "glade", "gully", "heath", "boardwalk", "circus", "dell", "dene", "downs", "entrance",
    "fairway", "frontage", "lookout", "pathway", "ramble", "strand", "turn", "woods", "amble",
    "brace", "cross", "grange", "link", "nook", "quays", "vale",
    # the rest of Australia's street types (AS/NZS 4819) that are no everyday English word
    "artery", "colonnade", "rosebowl", "rotary", "anchorage", "basin", "brae", "brow", "byway",
    "centreway", "circlet", "copse", "corso", "deviation", "easement", "firetrail",
    "interchange", "laneway", "meander", "serviceway", "siding", "tollway", "walkway",
    "thoroughfare", "quadrant", "boulevarde",
    # written after the name elsewhere: Turkish, Hungarian, South Asian, Slavic, Romance
    "caddesi", "cadde", "cad", "cd", "sokak", "sokağı", "sok", "sk", "bulvarı", "blv", "yolu",
    "meydanı", "mahallesi", "mah", "utca", "u", "út", "útja", "tér", "tere", "körút", "köz",
    "sor", "sétány", "fasor", "rakpart", "lépcső", "liget", "udvar", "lejtő", "dűlő", "marg",
    "nagar", "chowk", "colony", "layout", "enclave", "vihar", "bagh", "ganj", "puram", "gali",
    "šetalište", "trg", "nábřeží", "naselje", "put", "cesta", "ulica", "ulice", "sad", "vrh",
)  # fmt: skip
PREFIX_WORDS = (
    "rua", "avenida", "av", "travessa", "largo", "praça", "praca", "alameda", "estrada", "rodovia",
    "calle", "carrer", "camino", "paseo", "plaza", "ronda", "via", "viale", "piazza", "corso",
    "vicolo", "largo", "strada", "rue", "boulevard", "bd", "chemin", "allée", "allee", "impasse",
    "quai", "cours", "route", "ul", "ulica", "aleja", "al", "os", "osiedle", "plac", "calea",
    "aleea", "bulevardul", "bd-ul", "str", "strada", "piața", "ulice", "náměstí", "třída",
    "ulitsa", "prospekt", "avinguda", "rambla", "vial", "travesía", "glorieta", "pasaje",
    "callejón", "cuesta", "urbanización", "aleja", "rond", "sentiero", "contrada", "borgo",
    # Iberian and Latin American street types
    "cañada", "acceso", "pasadizo", "c", "carretera", "bulevar", "cerrada", "privada", "circuito",
    "retorno", "prolongación", "periférico", "calzada", "andador", "diagonal", "eje", "corredor",
    "esplanada", "praia", "vale", "setor", "morro", "lago", "conjunto", "quadra", "sítio",
    "chácara", "condomínio", "loteamento", "residencial", "núcleo", "vereda", "trecho", "viela",
    "vila", "jardim", "ladeira", "passarela", "pátio", "parque", "recanto", "beco", "caminho",
    "rotunda", "calçada", "escadinhas", "quinta", "bairro", "urbanização",
    # Québec's rural roads, Vietnamese and Indonesian/Malay street words
    "rang", "montée", "côte", "phố", "ngõ", "ngách", "hẻm", "đường", "số", "jalan", "jl", "gang", "gg",
    "lorong", "tr", "pl",
    # Italian, French, Romanian, Polish, Czech, Turkish-before
    "canale", "rotonda", "incrocio", "stretto", "piazzale", "lungomare", "vico", "salita",
    "traversa", "località", "passage", "place", "square", "avenue", "faubourg", "sentier",
    "bulevardul", "bdul", "b-dul", "splaiul", "șoseaua", "soseaua", "sos", "intrarea", "drumul",
    "fundătura", "prelungirea", "piața", "piata", "plac", "skwer", "rondo", "nábřeží", "nám",
)  # fmt: skip
COMPOUND_ENDINGS = (
    "straße", "strasse", "str.", "weg", "gasse", "allee", "platz", "damm", "ufer",
    "steig", "pfad", "chaussee", "markt", "gade", "gaden", "vej", "vejen", "allé", "stræde",
    "strædet", "plads", "torv", "gyde", "gyden", "vænge", "vænget", "vägen", "väg", "gatan",
    "gata", "gränd", "stigen", "torget", "veien", "vei", "veg", "vegen", "gaten", "katu",
    "tie", "kuja", "polku", "raitti", "kaari", "straat", "laan", "gracht", "plein", "kade",
    "dreef", "singel", "hof", "utca", "útja", "sokak", "sokağı", "caddesi", "bulvarı",
    # Dutch, German, Nordic, Finnish compounds beyond the common ones
    "ring", "baan", "steeg", "boulevard", "dijk", "pad", "park", "straße", "berg", "graben",
    "gata", "gate", "gaten", "väg", "vägen", "backe", "backen", "bakken", "stien", "sti",
    "stig", "svingen", "lia", "løkka", "torg", "torget", "allén", "leden", "stråket", "slingan",
    "kroken", "have", "haven", "bro", "brink", "rinne", "mäki", "tori", "väylä", "puisto",
    "kaari", "polku", "tie", "katu", "kuja", "ranta", "niemi", "hovi", "linja",
)  # fmt: skip

_NUM = r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,4}[A-Za-z]?)?"
_NAME = r"[\p{Lu}\p{Lo}\d][\p{L}'’.-]*"
_LINK = (
    r"(?:de la|della|delle|degli|dos|das|des|del|de|da|do|di|du|la|le|les|van|von|der|den|het|am|an|zu"
    r"|na|pod|nad|za|pri|při|ob|ve|od|ze|pe|lui)\b"
)
_UNIT = (
    r"(?:[ \t]*,?[ \t]+(?:Suite|Ste\.?|Apt\.?|Apartment|Unit|Flat|Floor|Fl\.?|#|Piso|Puerta|Planta|Bloco|Apto\.?"
    r"|Andar|Étage|Etage|Stock|lgh\.?|Lgh\.?|Esc\.?|Escalera|Interior|Int\.?|Depto\.?|Casa"
    r"|Appartamento|App\.?|Piano|Scala|Interno|Int\.?|Studio|Room|Rm\.?|Bl\.?|bl\.?|Sc\.?|sc\.?"
    r"|Et\.?|et\.?|Ap\.?|ap\.?|D:|Daire|Kat|Kat:|byt|Byt|em\.|ép\.|lph\.|fsz\.|Dep\.?|Departamento"
    r"|Dpto\.?|Bloque|Portal|Esq\.?|Dto\.?|Dt\.?|Frente|Fte\.?|Loja|Sala|Lote|Of\.?|Oficina|Local|Torre"
    r"|Edif\.?|Edificio|Mz\.?|Manzana|Lt\.?|Level|Lvl\.?|Shop|Lot)[ \t]*\w{1,6}\.?){0,3}"
    # a Nordic staircase and flat ("12 A 5", "12 B"), a Danish floor and side ("12, 2. th.")
    r"(?:[ \t]+[A-H](?:[ \t]+\d{1,3})?(?![\w.-])|,?[ \t]+\d{1,2}\.[ \t]*(?:th|tv|mf|sal)\.?)?"
)
# Street words written in lower case too: the common French, Spanish, Portuguese... ones, and
# those written after the name in lower case (Hungarian "Kossuth Lajos utca", Turkish "Gül
# sokak", Croatian "Voćarsko naselje"). Others ("via", "route", "al", "str") are plain words or
# abbreviations in lower case.
LOWER_OK = ("rue", "calle", "rua", "avenida", "avenue", "carrer", "ulica", "aleea", "strada",
            "piazza", "viale", "allée", "chemin", "boulevard", "travessa", "alameda", "impasse",
            "aleja", "šetalište", "trg", "utca", "caddesi", "sokak", "sokağı", "bulvarı",
            "mahallesi", "yolu", "cadde", "út", "útja", "tér", "körút", "köz", "sor", "sétány", "fasor",
            "rakpart", "naselje", "cesta", "ulice", "plac", "nábřeží", "náměstí", "calea",
            "bulevardul", "splaiul", "șoseaua", "intrarea", "piața", "rambla", "paseo", "camino",
            "carretera", "cerrada", "privada", "calzada", "andador", "largo", "estrada", "avinguda",
            "skwer", "rondo", "marg", "nagar", "rang", "montée", "côte")  # fmt: skip
# Lower case only between a house number and a capitalised name ("650 route Daigle", Québec):
# elsewhere "route" is a telemetry word ("14 route=/users").
AFTER_NUMBER_LOWER = ("route",)
# Abbreviations taken in lower case only with their full stop ("al. Listopada 871", "ul. Polna 3").
LOWER_WITH_DOT = ("al", "ul", "os", "av", "bd", "str", "cad", "cd", "sok", "sk", "mah", "blv", "u",
                  "nám", "bdul", "sos", "c", "pl", "jl", "gg", "tr")  # fmt: skip
# Short abbreviations that are words or letters without their stop: only with it ("C. de Mónica
# Ballesteros 4", "Atatürk Cad. 12", "Petőfi u. 3").
DOT_ONLY = ("c", "u", "cd", "cad", "sk", "sok", "mah", "blv", "sos", "bdul", "nám", "bd", "av", "jl",
            "gg", "tr")  # fmt: skip


def _alt(words: tuple[str, ...]) -> str:
    """Title- and upper-case forms of ``words`` (lower case too for ``LOWER_OK``), longest first;
    abbreviations of ``DOT_ONLY`` only with their stop. Followed by ``_END``, not ``\b``."""
    forms = {
        f
        for w in words
        if w not in DOT_ONLY
        for f in (w.title(), w.upper(), w)
        if f == w.title() or f == w.upper() or w in LOWER_OK
    }
    forms |= {f"{w}." for w in words if w in LOWER_WITH_DOT}
    forms |= {f"{w.title()}." for w in words if w in DOT_ONLY}
    return "|".join(regex.escape(f) for f in sorted(forms, key=len, reverse=True))


_END = r"(?:(?<=\.)|\b)"  # after a street word: a word boundary, or its abbreviation's stop
_NO = r"(?:(?:(?i:n[º°o]\.?|nr\.?|no\.?|núm\.?|num\.?|h\.?\s?no\.?)|#)[ \t]*:?[ \t]*)?"  # "nr. 12", "No:5", "nº 3"
_POSTCODE = r"(?:[A-Z]{1,2}-)?(?:\d{5}|\d{4}|\d{3}[ ]\d{2}|\d{2}-\d{3})"
_CITY = r"\p{Lu}[\p{L}'’.-]+(?:[ \t]+(?:\p{Lu}[\p{L}'’.-]*|\d{1,2}))?"

_UNIT_BEFORE = r"(?:(?:Suite|Unit|Level|Flat|Apt\.?|Apartment|Shop|Lot)[ \t]+\w{1,5},?[ \t]+)?"
_NUMBER_FIRST = rf"(?<![\w.-]){_UNIT_BEFORE}{_NUM},?[ \t]+(?:{_NAME}[ \t]+){{0,4}}(?:{_alt(SUFFIX_WORDS)}){_END}\.?{_UNIT}"
_NUMBER_THEN_PREFIX = (
    rf"(?<![\w.-]){_NUM},?[ \t]+(?:{_alt(PREFIX_WORDS)}|{'|'.join(AFTER_NUMBER_LOWER)}){_END}\.?[ \t]+"
    rf"(?:(?:{_LINK}|{_NAME})[ \t]*){{1,5}}"
    r"(?<![ \t])"
)
_PREFIX_FIRST = (
    rf"(?<![\w.-])(?:{_alt(PREFIX_WORDS)}){_END}\.?[ \t]+(?:(?:{_LINK}|{_NAME}),?[ \t]+){{1,5}}"
    rf"{_NO}{_NUM}\b{_UNIT}"
)
_COMPOUND = rf"(?<![\w.-])\p{{Lu}}[\p{{L}}-]{{2,}}(?:{'|'.join(regex.escape(w) for w in COMPOUND_ENDINGS)}|-(?:{'|'.join(regex.escape(w.title()) for w in COMPOUND_ENDINGS)}))(?:[ \t]+(?:{_LINK}|{_NAME})){{0,2}},?[ \t]+{_NO}{_NUM}\b{_UNIT}"
_SUFFIX_THEN_NUMBER = (
    rf"(?<![\w.-])(?:{_NAME}[ \t]+){{1,3}}(?:{_alt(SUFFIX_WORDS)}){_END}\.?,?[ \t]+{_NO}{_NUM}\b{_UNIT}"
)
# A unit before the street, no house number ("Flat 36, Patricia Park", "Studio 0, Susan Via").
_UNIT_FIRST = (
    rf"(?<![\w.-])(?:Flat|Studio|Apartment|Apt\.?|Unit|Suite|Room)[ \t]+\w{{1,5}},[ \t]+"
    rf"(?:{_NAME}[ \t]+){{1,4}}(?:{_alt(SUFFIX_WORDS)}){_END}\.?"
)
# A house-number label before the number ("H.No. 12-3-45, Banjara Hills", "Plot No. 7").
_HOUSE_NUMBER = (
    r"(?<![\w.-])(?:H\.[ \t]?No\.?|H[ \t]?No\.?|House[ \t]No\.?|Plot[ \t]No\.?|Door[ \t]No\.?|Flat[ \t]No\.?)"
    rf"[ \t]*:?[ \t]*\d[\w/-]{{0,11}}(?:,?[ \t]+(?:{_LINK}|{_NAME})){{0,4}}"
)
# Any street before a postcode and a city ("Skolegyden 33, 2300 København S", "Vodičkova 681/14,
# 110 00 Praha"); a postcode and city right after a house number ("..., 2300 København S").
_BEFORE_POSTCODE = rf"(?<![\w.-])(?:(?:{_LINK}|{_NAME})[ \t]+){{0,4}}{_NAME}[ \t]+{_NO}{_NUM}{_UNIT},?[ \t]+{_POSTCODE}[ \t]+{_CITY}"
# Colombian and other Latin American grids: a street type, the street's number or name, "#",
# the cross street and the distance ("Calle 6ª # 7-81 Sur", "Cr. 20D # 9-83", "Av. Tolima # 13-62").
_GRID = (
    r"(?<![\w.-])(?:Calle|Cl\.|Cll\.?|Carrera|Cra\.?|Cr\.|Kr\.?|Avenida(?:[ \t]+(?:calle|carrera))?|Av\.|Diagonal"
    r"|Dg\.|Transversal|Tv\.|Tr\.|Circular|Circunvalar)[ \t]+[\p{L}\d ªº°.]{1,30}?[ \t]*(?:#|N[º°o]\.?)[ \t]*\d{1,3}[A-Z]?"
    r"(?:[ \t]*(?:Bis)?[ \t]*-[ \t]*\d{1,3}[A-Z]?)?(?:[ \t]+(?:Sur|Este|Norte|Oeste|Bis))?"
)
# A Slavic preposition before the street ("Na Příkopě 12", "V Sige 4b", "Pod zidom 159", "U
# Sluncové 5"), or a street named by an adjective of the Slavic languages ("Vrútocká 11",
# "Hálkova 12", "Sibírska 8", "Veternicová 971").
_SLAVIC = (
    r"(?<![\w.-])(?:(?:Na|U|K|Ke|V|Ve|Za|Pod|Nad|Před|Pred|Při|Pri|Ob|Pot|Mezi|Do|Od|Ul\.|Ulica|Ulice)[ \t]+"
    r"[\p{L}'’]{2,}(?:[ \t]+[\p{L}'’]+){0,2}"
    r"|(?:\p{Lu}[\p{L}'’-]*[ \t]+){0,2}\p{Lu}\p{Ll}*(?:ová|ova|eva|ská|ska|cká|cka|ní|ná|ého|ovo|evo|čka|ička|ího|owa|ska|ego|iego))"
    rf"[ \t]+{_NUM}(?![\w/-]|\.\d|[ \t]*(?:%|ms\b|s\b|x\b|times\b))"
)
# A distinctive street word with a name and no number ("rue de Boillat", "avenue Vermeil" in
# lower case, "Rua Augusta", "Calle Mayor"): the street alone is personal data in a delivery
# address, and these words are not English ones.
_STREET_NO_NUMBER = (
    r"(?<![\w.-])(?:rue|Rue|rua|Rua|calle|Calle|avenida|Avenida|travessa|Travessa|alameda|Alameda|carrer"
    r"|Carrer|strada|Strada|ulica|Ulica|chemin|Chemin|allée|Allée|impasse|Impasse|quai|Quai|boulevard"
    r"|avenue|piazza|Piazza|viale|Viale|praça|Praça|calea|Calea|aleea|Aleea|bulevardul|Bulevardul"
    r"|rambla|Rambla|callejón|Callejón|cerrada|Cerrada|privada|Privada|calzada|Calzada|avinguda|Avinguda)"
    rf"[ \t]+(?:{_LINK}[ \t]*|d['’])?\p{{Lu}}[\p{{L}}'’-]+(?:[ \t]+(?:{_LINK}[ \t]+)?\p{{Lu}}[\p{{L}}'’-]+){{0,3}}"
)
_POST_BOX = (
    r"(?<![\w.-])(?:P\.?[ \t]?O\.?[ \t]?Box|PO[ \t]?Box|Post[ \t]Office[ \t]Box|GPO[ \t]Box|Postfach|Apartado(?:[ \t]+de[ \t]+Correos)?"
    r"|Caixa[ \t]+Postal|Casilla(?:[ \t]+de[ \t]+Correo)?|Boîte[ \t]+[Pp]ostale|BP|Postboks|Box|Skrytka[ \t]+pocztowa|Postbus)"
    r"[ \t]*:?[ \t]*\d{1,6}"
)
# Japanese addresses: a place name in kanji/kana, then chōme-banchi-gō numbers.
_JA_DIGIT = r"[0-9０-９]"
_JAPANESE = (
    rf"(?:[\p{{Han}}\p{{Hiragana}}\p{{Katakana}}ー]{{2,}}{_JA_DIGIT}{{1,4}}(?:丁目|[-‐－ー])|{_JA_DIGIT}{{1,4}}丁目){_JA_DIGIT}{{1,4}}"
    rf"(?:(?:番地?|[-‐－ー]){_JA_DIGIT}{{1,4}}号?)?(?:[ \t　]*[\p{{Han}}\p{{Katakana}}ー]+{_JA_DIGIT}{{0,4}}(?:号室)?)?"
)
# Chinese (and Japanese) streets: a name ending in a street character, then a number with its
# counter ("新生路87號", "民治路1段95號", "永安路N座"); Korean road names with a building number
# after provinces and districts ("충청남도 영월군 반포대2거리 321").
_CJK_STREET = (
    rf"[\p{{Han}}\p{{Hiragana}}\p{{Katakana}}ー]{{0,15}}(?:路|街|巷|道|通り|大道|胡同|弄|里|村|町)"
    rf"(?:{_JA_DIGIT}{{1,3}}段)?(?:{_JA_DIGIT}{{1,3}}[巷弄])?(?:{_JA_DIGIT}{{1,5}}|[A-Za-z])(?:[-‐－]{_JA_DIGIT}{{1,5}}){{0,2}}"
    r"(?:号|號|座|番地?|室|棟|階|楼|樓)"
)
_KOREAN = (
    r"(?:[가-힣]+(?:특별시|광역시|특별자치도|특별자치시|도|시|군|구|읍|면|동)[ \t]+){0,4}"
    r"[가-힣\d]+(?:로|길|거리|대로)[ \t]*(?:지하)?\d{1,5}(?:-\d{1,5})?"
)
# Russian, Ukrainian, Bulgarian...: a street type, the name, and the house ("ул. Ленина, д. 5",
# "пер. Садовый, д. 594 стр. 5", "провулок Баринштейна, буд. 075 кв. 3").
_CYRILLIC = (
    r"(?<![\w.-])(?i:ул|улица|пер|переулок|пр|просп|проспект|пр-т|пр-кт|пл|площадь|наб|набережная|ш|шоссе"
    r"|алл|аллея|бул|бульв|бульвар|б-р|тупик|проезд|мкр|вул|вулиця|провулок|площа|набережна|шосе|сквер|парк"
    r"|узвіз|майдан|ж\.к|жк|кв-л)\.?[ \t]+[\p{Cyrillic}\d ’'-]{2,40}?,?[ \t]+(?i:д|дом|буд|будинок|№)\.?[ \t]*"
    r"\d{1,4}(?:/\d{1,4})?[\p{Cyrillic}]?(?:,?[ \t]*(?i:к|корп|стр|кв|оф|эт|ет)\.?[ \t]*[\d/]{1,5}){0,3}"
)
# After an address word or a verb of delivery: any street of capitalised (or lower-case
# second) words and a house number ("address to Demetrova 08", "never reached Svibovac 33",
# "InvalidAddress: 'Kožarska 4a'", "ship to Na Příkopě 12").
ADDRESS_CUES = (
    r"address(?:e[sd]?)?|addr|adres[ai]?|adresse|adress|anschrift|indirizzo|direcci[oó]n|endere[cç]o"
    r"|morada|domicil(?:e|io|ium)|c[ií]m(?:e|ünk)?|osoite|lakcím|bydliště|adresă|wohnort|residence"
    r"|ship(?:ped|ping)?[ \t]+to|deliver(?:ed|y|ies)?[ \t]+(?:to|at)|sen[dt][ \t]+to|mail(?:ed)?[ \t]+to"
    r"|mov(?:e|ed|ing)[ \t]+to|relocat(?:e|ed|ing)[ \t]+to|li(?:ve|ves|ving)[ \t]+(?:at|on|in)"
    r"|resid(?:e|es|ing)[ \t]+(?:at|on|in)|located[ \t]+(?:at|on|in)|reach(?:ed)?|arriv(?:e|ed)[ \t]+at"
    r"|left(?:[ \t]+(?:a|an|the|it|them|\w+))?(?:[ \t]+(?:note|parcel|package|card|message))?[ \t]+at|dropped[ \t]+(?:off[ \t]+)?at"
    r"|return(?:ed)?[ \t]+(?:to|from)|pick(?:ed)?[ \t]+up[ \t]+(?:at|from)|collect(?:ed)?[ \t]+from"
    r"|ship[ _-]?to|bill[ _-]?to|deliver[ _-]?to|street|straße|strasse|calle|rua"
)
_AFTER_CUE = (
    rf"(?i:(?:{ADDRESS_CUES}))(?i:[ \t]+(?:is|was|to|at|changed[ \t]+to|updated[ \t]+to|set[ \t]+to))?"
    r"[ \t]*[:=]?[ \t]*['\"(«„“]?"
    rf"(?P<v>(?:{_alt(PREFIX_WORDS)}){{0,1}}{_END}\.?[ \t]*"
    rf"{_NAME}(?:[ \t]+(?:{_LINK}|{_NAME}|\p{{Ll}}[\p{{L}}'’]+)){{0,4}},?[ \t]+{_NO}{_NUM}(?![\w/-]){_UNIT}"
    rf"(?:,?[ \t]+{_POSTCODE}[ \t]+{_CITY})?)"
)
# A house number first after an address word ("sent to 73 Jennifer Colonnade", "reached 7
# AZADLIQ", "address=6/71/838 Phố Nguyễn Thị Minh Khai"): the cue says it, so any capitalised or
# upper-case words after the number are the street.
_NUMBER_AFTER_CUE = (
    rf"(?i:(?:{ADDRESS_CUES}))(?i:[ \t]+(?:is|was|to|at|changed[ \t]+to|updated[ \t]+to|set[ \t]+to))?"
    r"[ \t]*[:=]?[ \t]*['\"(«„“]?"
    rf"(?P<v>{_UNIT_BEFORE}{_NUM}(?:/\d{{1,4}}){{0,2}},?[ \t]+{_NAME}(?:[ \t]+(?:{_LINK}|{_NAME})){{0,5}}{_UNIT})"
)
# A house number and two to four capitalised words of which one at least is no English word
# ("0 Collins Rotary", "59307 Bell Forks"): a street of a type no list has. Checked in analyze.
_NUMBER_THEN_PROPER = (
    rf"(?<![\w.-]){_NUM}(?:/\d{{1,4}}){{0,2}},?[ \t]+(?P<w>\p{{Lu}}\p{{Ll}}[\p{{L}}'’-]*"
    rf"(?:[ \t]+(?:{_LINK}[ \t]+)?\p{{Lu}}\p{{Ll}}[\p{{L}}'’-]*){{1,3}}){_UNIT}"
)
_POSTCODE_AFTER_STREET = rf"(?<=\d[A-Za-z]?,[ \t]?|\d[A-Za-z]?[ \t]{{2}}){_POSTCODE}[ \t]+{_CITY}"

# Capitalised words that start no street after a cue or before a postcode: product and
# protocol names, units of telemetry ("moved to Version 3", "address Line 2" is a street line).
NOT_STREET = frozenset(
    [
        "the",
        "a",
        "an",
        "this",
        "that",
        "my",
        "our",
        "your",
        "his",
        "her",
        "their",
        "its",
        "version",
        "release",
        "build",
        "step",
        "line",
        "page",
        "port",
        "node",
        "pod",
        "shard",
        "region",
        "zone",
        "room",
        "level",
        "stage",
        "phase",
        "tier",
        "item",
        "order",
        "ticket",
        "case",
        "batch",
        "python",
        "java",
        "node",
        "postgres",
        "postgresql",
        "mysql",
        "redis",
        "kafka",
        "kubernetes",
        "ubuntu",
        "debian",
        "windows",
        "android",
        "ios",
        "chrome",
        "firefox",
        "safari",
        "http",
        "https",
        "tls",
        "ipv",
        "ssl",
        "api",
        "sdk",
    ]
)


def _plausible(span: str) -> bool:
    """The first words of a street found by context, postcode or shape are not telemetry or
    everyday English words."""
    words = regex.findall(r"[\p{L}'’]+", span)[:2]
    if not words:
        return True
    if words[0].lower() in NOT_STREET:
        return False
    return not (len(words) > 1 and len(words[0]) <= 3 and words[1].lower() in COMMON_WORDS)


_LETTERS = re.compile(r"[^\W\d_]+")
_NUMBER_WORDS_GATE = re.compile(r"\d,?[ \t]+[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]\w*[ \t]+(?:\w+[ \t]+)?[A-ZÀ-ÖØ-Þ]")


def _has_proper_word(words: str) -> bool:
    """One word at least that is no English word (SCOWL) nor a telemetry word."""
    english = english_words()
    return any(
        w.lower() not in english and w.lower() not in COMMON_WORDS and w.lower() not in NOT_STREET
        for w in _LETTERS.findall(words)
    )


def _words_of(words: tuple[str, ...]) -> frozenset[str]:
    """The lower-case letter runs a lexicon's entries consist of ("bd-ul" -> "bd", "ul")."""
    return frozenset(w for entry in words for w in _LETTERS.findall(entry.lower()))


def _ends(endings: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("(?:" + "|".join(re.escape(e) for e in sorted(endings, key=len, reverse=True)) + r")\b")


# Per shape, a necessary condition checked first, in C: a word of its lexicon among the
# value's lower-case words, or a stdlib search. Most values pass none, and the ``regex`` module
# searches (Unicode classes, lookbehinds) run only for the shapes a value can match.
_SUFFIX_SET = _words_of(SUFFIX_WORDS)
_PREFIX_SET = _words_of(PREFIX_WORDS)
_UNIT_SET = frozenset({"flat", "studio", "apartment", "apt", "unit", "suite", "room"})
_ENDINGS = tuple({e.rstrip(".").lower() for e in COMPOUND_ENDINGS})
_CUE_STEMS = (
    "addr", "adres", "adress", "anschrift", "indirizzo", "direcci", "endere", "morada", "domicil",
    "cím", "cim", "osoite", "lakcím", "bydli", "wohnort", "residen", "resid", "ship", "deliver",
    "send", "sent", "mail", "mov", "relocat", "live", "living", "located", "reach", "arriv",
    "return", "left", "dropped", "pick", "collect", "bill", "street", "straße", "strasse", "calle", "rua",
)  # fmt: skip
_SLAVIC_PREPOSITIONS = frozenset(
    {"na", "u", "k", "ke", "v", "ve", "za", "pod", "nad", "před", "pred", "při", "pri", "ob", "pot",
     "mezi", "do", "od", "ul", "ulica", "ulice"}
)  # fmt: skip
_SLAVIC_ENDINGS = ("ová", "ova", "eva", "ská", "ska", "cká", "cka", "ní", "ná", "ého", "ovo", "evo",
                   "čka", "ička", "ího", "owa", "ego", "iego")  # fmt: skip
_STRONG_SET = frozenset(
    {"rue", "rua", "calle", "avenida", "travessa", "alameda", "carrer", "strada", "ulica", "chemin",
     "allée", "impasse", "quai", "boulevard", "avenue", "piazza", "viale", "praça", "calea", "aleea",
     "bulevardul", "rambla", "callejón", "cerrada", "privada", "calzada", "avinguda"}
)  # fmt: skip
_BOX_SET = frozenset({"box", "postfach", "apartado", "caixa", "casilla", "boîte", "boite", "bp",
                      "postboks", "skrytka", "postbus"})  # fmt: skip
_POSTCODE_GATE = re.compile(r"\d[^\W\d_]?,?[ \t]{1,2}(?:[A-Z]{1,2}-)?\d{2,5}(?:[ -]\d{2,3})?[ \t]+[^\W\d_]")
_CJK_GATE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_HANGUL_GATE = re.compile(r"[\uac00-\ud7af]")
_CYRILLIC_GATE = re.compile(r"[\u0400-\u04ff]")
_GRID_GATE = re.compile(r"#|N[º°o]")
ShapeGate = Callable[[str, str, frozenset[str]], bool]


def _lexicon(words: frozenset[str]) -> ShapeGate:
    return lambda text, lower, found: not words.isdisjoint(found)


def _word_ends(endings: tuple[str, ...]) -> ShapeGate:
    return lambda text, lower, found: any(w.endswith(endings) for w in found)


def _substrings(stems: tuple[str, ...]) -> ShapeGate:
    return lambda text, lower, found: any(stem in lower for stem in stems)


def _slavic(text: str, lower: str, found: frozenset[str]) -> bool:
    return not _SLAVIC_PREPOSITIONS.isdisjoint(found) or any(w.endswith(_SLAVIC_ENDINGS) for w in found)


def _search(rx: re.Pattern[str], on_lower: bool = False) -> ShapeGate:
    search = rx.search
    if on_lower:
        return lambda text, lower, found: search(lower) is not None
    return lambda text, lower, found: search(text) is not None


class StreetAddressRecognizer(RegexRecognizer):
    """A street (of the shapes above) with its house number; a street name without a number is
    too often a plain word ("via", "place", "route"), except after a unit ("Flat 36, Patricia
    Park") or for street words that are no English word ("rue de Boillat"). Scored above NER and
    the name recognizers, which read "Rua Mathias Moritz" as a person."""

    ENTITY = "STREET_ADDRESS"
    PATTERNS = []
    MIN_DIGITS = 1
    # (rule, pattern, score, necessary condition)
    SHAPES: ClassVar[tuple[tuple[str, regex.Pattern[str], float, ShapeGate], ...]] = (
        ("number_first", regex.compile(_NUMBER_FIRST), 0.9, _lexicon(_SUFFIX_SET)),
        ("number_then_street_word", regex.compile(_NUMBER_THEN_PREFIX), 0.9, _lexicon(_PREFIX_SET)),
        ("street_word_first", regex.compile(_PREFIX_FIRST), 0.9, _lexicon(_PREFIX_SET)),
        ("compound_street", regex.compile(_COMPOUND), 0.9, _word_ends(_ENDINGS)),
        ("street_then_number", regex.compile(_SUFFIX_THEN_NUMBER), 0.9, _lexicon(_SUFFIX_SET)),
        ("unit_first", regex.compile(_UNIT_FIRST), 0.9, _lexicon(_UNIT_SET)),
        ("house_number_label", regex.compile(_HOUSE_NUMBER), 0.9, _lexicon(frozenset({"no"}))),
        ("after_address_word", regex.compile(_AFTER_CUE), 0.9, _substrings(_CUE_STEMS)),
        ("number_after_address_word", regex.compile(_NUMBER_AFTER_CUE), 0.9, _substrings(_CUE_STEMS)),
        ("number_then_proper_words", regex.compile(_NUMBER_THEN_PROPER), 0.6, _search(_NUMBER_WORDS_GATE)),
        ("street_before_postcode", regex.compile(_BEFORE_POSTCODE), 0.9, _search(_POSTCODE_GATE)),
        ("postcode_city", regex.compile(_POSTCODE_AFTER_STREET), 0.8, _search(_POSTCODE_GATE)),
        ("japanese", regex.compile(_JAPANESE), 0.9, _search(_CJK_GATE)),
        ("cjk_street", regex.compile(_CJK_STREET), 0.9, _search(_CJK_GATE)),
        ("korean_street", regex.compile(_KOREAN), 0.9, _search(_HANGUL_GATE)),
        ("cyrillic_street", regex.compile(_CYRILLIC), 0.9, _search(_CYRILLIC_GATE)),
        ("grid_number", regex.compile(_GRID), 0.9, _search(_GRID_GATE)),
        ("slavic_street", regex.compile(_SLAVIC), 0.88, _slavic),
        ("street_word_no_number", regex.compile(_STREET_NO_NUMBER), 0.9, _lexicon(_STRONG_SET)),
        ("post_box", regex.compile(_POST_BOX), 0.9, _lexicon(_BOX_SET)),
    )
    CHECKED = frozenset(
        {"after_address_word", "number_after_address_word", "street_before_postcode", "slavic_street"}
    )

    def gate(self) -> Gate:
        # Every shape but the street word without a number needs a digit.
        letters, strong = _LETTERS.findall, _STRONG_SET
        return lambda text, lower, digits: (
            len(text) >= 6 and (digits >= 1 or not strong.isdisjoint(letters(lower)))
        )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        lower = text.lower()
        found = frozenset(_LETTERS.findall(lower))
        digits = any(c.isdigit() for c in text)
        out = []
        for rule, rx, score, necessary in self.SHAPES:
            if (not digits and rule != "street_word_no_number") or not necessary(text, lower, found):
                continue
            for m in rx.finditer(text, overlapped=False):
                start, end = m.span("v") if "v" in rx.groupindex else m.span()
                if rule in self.CHECKED and not _plausible(text[start:end]):
                    continue
                if rule == "number_then_proper_words" and not _has_proper_word(m.group("w")):
                    continue
                out.append(result(self, self.ENTITY, start, end, score, rule))
        return out
