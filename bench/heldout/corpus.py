"""Fill the split's templates with locale-true values (Faker, fixed seed), labelled."""

from __future__ import annotations

import random
import re
import string
import uuid
from dataclasses import dataclass, field
from datetime import date

import phonenumbers
from faker import Faker

from bench.heldout import templates_dev, templates_test

# Faker locale -> phone region. Dev and test share no locale.
DEV_LOCALES: dict[str, str] = {
    "de_DE": "DE", "fr_FR": "FR", "es_ES": "ES", "pt_BR": "BR", "it_IT": "IT",
    "nl_NL": "NL", "pl_PL": "PL", "en_US": "US", "en_GB": "GB", "hr_HR": "HR",
}  # fmt: skip
TEST_LOCALES: dict[str, str] = {
    "cs_CZ": "CZ", "fi_FI": "FI", "da_DK": "DK", "sv_SE": "SE", "no_NO": "NO", "tr_TR": "TR",
    "ja_JP": "JP", "hu_HU": "HU", "ro_RO": "RO", "en_IN": "IN", "pt_PT": "PT", "es_MX": "MX",
}  # fmt: skip
# A wider tuning set: the dev templates over 30 more locales, none of them a test locale (nor
# dk_DK, Faker's alias of da_DK). Tuned on like dev; it exists so that rules are written against
# many countries' shapes at once instead of against the ten dev ones.
WIDE_LOCALES: dict[str, str] = {
    **DEV_LOCALES,
    "de_AT": "AT", "de_CH": "CH", "en_AU": "AU", "en_CA": "CA", "en_IE": "IE", "en_NZ": "NZ",
    "en_NG": "NG", "es_AR": "AR", "es_CL": "CL", "es_CO": "CO", "et_EE": "EE", "fr_BE": "BE",
    "fr_CA": "CA", "fr_CH": "CH", "id_ID": "ID", "is_IS": "IS", "it_CH": "CH", "lt_LT": "LT",
    "lv_LV": "LV", "nl_BE": "BE", "sk_SK": "SK", "sl_SI": "SI", "sq_AL": "AL", "bs_BA": "BA",
    "az_AZ": "AZ", "en_KE": "KE", "vi_VN": "VN", "en_PK": "PK", "mt_MT": "MT", "lb_LU": "LU",
}  # fmt: skip
SEEDS = {"dev": 15_001, "test": 15_002, "wide": 15_003}
# Date-of-birth shapes differ per split too.
DOB_FORMATS = {
    "dev": ("%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%B %d, %Y"),
    "wide": ("%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%B %d, %Y"),
    "test": ("%d-%m-%Y", "%m/%d/%Y", "%d %B %Y", "%Y/%m/%d"),
}
CARD_KINDS = ("visa16", "mastercard", "amex", "jcb16", "jcb15", "maestro", "diners", "discover", "unionpay")
SLOT = re.compile(r"\{(\w+)\}")
ENTITY_OF = {
    "full": "PERSON", "given": "PERSON", "surname": "PERSON", "street": "STREET_ADDRESS",
    "phone": "PHONE_NUMBER", "card": "CREDIT_CARD", "dob": "DATE_OF_BIRTH",
}  # fmt: skip


@dataclass
class Item:
    text: str
    pii: list[tuple[str, str]] = field(default_factory=list)  # (entity type, value)
    decoys: list[str] = field(default_factory=list)
    locale: str = ""


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


_CARDS = Faker("en_US")  # some locales' card providers lack brands (jcb15, maestro...)


def _card(rng: random.Random) -> str:
    kind = rng.choice(CARD_KINDS)
    if kind == "unionpay":
        number = _luhn_complete("62" + "".join(rng.choice(string.digits) for _ in range(13)))
    else:
        _CARDS.seed_instance(rng.getrandbits(32))
        number = _CARDS.credit_card_number(kind)
    style = rng.randrange(3)
    if style == 0 or len(number) not in (15, 16):
        return number
    sep = " " if style == 1 else "-"
    if len(number) == 15:
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def _phone(fake: Faker, region: str, rng: random.Random) -> str:
    """A valid national number of the locale's region, written without the country code, in
    national grouping or with groups joined by dashes or dots."""
    for _ in range(30):
        raw = fake.phone_number()
        try:
            num = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number_for_region(num, region):
            break
    else:
        num = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
    national = re.sub(r"\s*(?:ext\.?|x)\s*\d+$", "", national)
    style = rng.randrange(3)
    if style and "(" not in national:
        national = re.sub(r"[ -]", "-" if style == 1 else ".", national)
    return national


def _names(fake: Faker, locale: str) -> tuple[str, str]:
    if locale == "ja_JP":  # romanized, as Western telemetry writes them
        return fake.first_romanized_name(), fake.last_romanized_name()
    return fake.first_name(), fake.last_name()


def _full(fake: Faker, locale: str, rng: random.Random) -> str:
    given, surname = _names(fake, locale)
    if rng.random() < 0.3:
        initial = rng.choice(string.ascii_uppercase)
        return f"{given} {initial}{rng.choice(('', '.'))} {surname}"
    return f"{given} {surname}"


def _dob(split: str, rng: random.Random) -> str:
    born = date(rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28))
    return born.strftime(rng.choice(DOB_FORMATS[split]))


def _decoy(slot: str, rng: random.Random) -> str:
    if slot == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128)))
    if slot == "host":
        return f"{rng.choice(('api', 'billing', 'geo', 'edge'))}-{rng.randint(1, 40)}.{rng.choice(('eu-west-1', 'us-east-2', 'ap-south-1'))}.internal"
    if slot == "version":
        return f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}"
    if slot == "duration":
        return f"{rng.randint(5, 9000)}{rng.choice(('ms', 's'))}"
    if slot == "route":
        return f"/api/v{rng.randint(1, 3)}/{rng.choice(('orders', 'users', 'cards', 'claims'))}/{{id}}/{rng.choice(('status', 'items', 'notes'))}"
    if slot == "code":
        return rng.choice(("ERR_", "E", "PAY-", "AUTH_")) + str(rng.randint(100, 99999))
    return rng.choice(("ord_", "tk-", "", "INC")) + str(rng.randint(10_000, 99_999_999))


def _fill(template: str, fake: Faker, locale: str, region: str, split: str, rng: random.Random) -> Item:
    item = Item("", locale=locale)

    def value(m: re.Match[str]) -> str:
        slot = m.group(1)
        if slot in ENTITY_OF:
            if slot == "full":
                v = _full(fake, locale, rng)
            elif slot in ("given", "surname"):
                v = _names(fake, locale)[slot == "surname"]
            elif slot == "street":
                v = fake.street_address().replace("\n", ", ")
            elif slot == "phone":
                v = _phone(fake, region, rng)
            elif slot == "card":
                v = _card(rng)
            else:
                v = _dob(split, rng)
            item.pii.append((ENTITY_OF[slot], v))
            return v
        v = _decoy(slot, rng)
        item.decoys.append(v)
        return v

    item.text = SLOT.sub(value, template)
    return item


def build(split: str, n: int = 500) -> list[Item]:
    """``n`` labelled items of ``split`` (``dev``, ``wide`` or ``test``); same output for the same
    Faker."""
    locales = {"dev": DEV_LOCALES, "wide": WIDE_LOCALES, "test": TEST_LOCALES}[split]
    templates = templates_test.TEMPLATES if split == "test" else templates_dev.TEMPLATES
    rng = random.Random(SEEDS[split])
    fakers = {loc: Faker(loc) for loc in locales}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(SEEDS[split] + i)
    items = []
    for i in range(n):
        locale = list(locales)[i % len(locales)]
        items.append(_fill(rng.choice(templates), fakers[locale], locale, locales[locale], split, rng))
    return items
