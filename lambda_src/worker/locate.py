"""Where a posting is: its coordinates, a postal code or FSA it names, or its geocoded address.

``Locator.locate`` tries, in order, and records which method won:

1. ``coordinates``: latitude and longitude both finite numbers (or numeric strings), in
   range, and inside the box around Canada (``data_builder.geo``). Bad ones fall through.
2. ``postal_code``: a full postal code in ``posting.postal_code``, then ``address``, then
   ``text``, in any spelling (``m5v3l9``, ``M5V-3L9``, ``M5V 3L9``) but never part of a longer
   token (``XM5V3L9X``, ``K1A0B1234``, ``SKU-M5V3L9``). A code the index does not know is
   placed at its FSA's centroid, and ``detail`` says so.
3. ``fsa``: a three-character FSA that the text names *as* an FSA (see "The FSA rule" below)
   and that the index has a centroid for.
4. ``address``: ``posting.address`` through the geocoder, when one is configured.

Otherwise ``Unresolved`` with the most specific reason (``REASONS``, most specific first).

The FSA rule. A bare three-character token is not enough (``Room M5V``, part ``A1A-220``,
``K9V`` alone): an FSA counts only in one of these contexts, case-insensitive except where
noted, with the FSA a whole token not followed by a digit (``K1A 0B1234`` is a broken code):

* strong, a postal word right before it: ``FSA``/``FSAs``, ``forward sortation area``,
  ``postal code(s)/area/district/zone/prefix``, ``postcode``; French ``RTA``, ``région de
  tri (d'acheminement)``, ``code(s) postal/postaux``, ``secteur postal``, ``zone postale``;
  separated by at most 6 of space ``: = # ( [ - " ' « »``, optionally through one joining
  word (``of``, ``is``, ``in``, ``for``, ``starting/beginning with``, ``de``, ``du``, ``est``,
  ``commençant/débutant par``): ``FSA M5V``, ``postal code: K1A``, ``postal codes starting
  with T2P``, ``Code postal (H2X)``, ``RTA H2X``.
* strong, an address tail: a comma or ``(`` then an upper-case province abbreviation
  (``ON``, ``QC``, ``BC``...): ``Kingston, ON K7L``, ``Montréal (QC) H2X``.
* strong, the whole ``posting.postal_code`` field is an FSA.
* weak, an area phrase: ``the M5V area`` (also ``region``, ``district``, ``neighbourhood``)
  and French ``le/du/au secteur H2X``. Tokens that are common acronyms (``B2B``, ``P2P``,
  ``M2M``...) never count here: "the B2C area" is not Iona, Nova Scotia.

Strong contexts are tried before weak ones. A strong FSA that the index lacks makes the
reason ``unknown_fsa``; a weak one is ignored.

Standard library and the index only: never pandas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from data_builder.codes import FIRST_LETTERS, OTHER_LETTERS
from data_builder.geo import CANADA_LAT, CANADA_LON
from lambda_src.worker.geocoder import Geocoder, GeocoderError
from lambda_src.worker.postings import Posting

if TYPE_CHECKING:
    from data_builder.index import FsaIndex

Method = Literal["coordinates", "postal_code", "fsa", "address"]
Reason = Literal[
    "geocoder_error",
    "outside_canada",
    "bad_coordinates",
    "unknown_postal_code",
    "unknown_fsa",
    "bad_postal_code",
    "address_not_found",
    "geocoder_off",
    "no_location",
]
#: Why a posting is unresolved, most specific first: when several methods failed, the
#: first of their reasons in this order wins. A geocoder error leads because a retry may
#: succeed; ``geocoder_off`` trails because it only says a method was skipped.
REASONS: tuple[Reason, ...] = (
    "geocoder_error",  # the geocoder failed or answered nonsense
    "outside_canada",  # valid coordinates outside Canada's box
    "bad_coordinates",  # missing half, not a number, NaN/inf, out of range
    "unknown_postal_code",  # a full code whose FSA the index does not have (H0H 0H0)
    "unknown_fsa",  # an FSA named in a strong context that the index does not have
    "bad_postal_code",  # posting.postal_code holds no postal code or FSA
    "address_not_found",  # the geocoder found no match in Canada
    "geocoder_off",  # an address, but no geocoder configured
    "no_location",  # nothing location-like at all
)
#: Distinct candidates tried per kind (full codes, FSAs): bounds the work on hostile text.
MAX_CANDIDATES = 20
#: Characters of the address kept in ``Location.detail`` (and sent to the geocoder).
ADDRESS_DETAIL_LIMIT = 200
#: FSA-shaped acronyms that an area phrase must not turn into an FSA.
ACRONYMS = frozenset({"B2B", "B2C", "B2G", "C2B", "C2C", "G2B", "G2C", "G2G", "P2P", "M2M", "E2E", "H2H", "T2T"})


@dataclass(frozen=True)
class Location:
    lat: float
    lon: float
    method: Method
    #: The postal code (``M5V 3L9``, with `` (FSA centroid)`` when only its FSA is known),
    #: the FSA, or the geocoded address; None for coordinates.
    detail: str | None = None


@dataclass(frozen=True)
class Unresolved:
    reason: Reason
    detail: str | None = None


# ----------------------------------------------------------------------------- patterns


def _letters(allowed: str) -> str:
    # Both cases spelled out instead of re.IGNORECASE, which would also match the Kelvin
    # sign for K and the long s for S (Unicode case folding).
    return f"[{allowed}{allowed.lower()}]"


_FSA = f"{_letters(FIRST_LETTERS)}[0-9]{_letters(OTHER_LETTERS)}"
_LDU = f"[0-9]{_letters(OTHER_LETTERS)}[0-9]"
# What a code must not touch: Latin letters (with accents), ASCII digits, underscore. Other
# scripts do not count, so "邮编M5V3L9" still holds a code; a hyphen joins tokens ("SKU-M5V3L9").
_TOKEN = "[0-9A-Za-z_\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]"
_START = f"(?<!{_TOKEN})(?<!{_TOKEN}-)"
_END = f"(?!-?{_TOKEN})"
# Spaces, including the no-break spaces French typography puts in "H2X 1Y4".
_SP = "[ \\t\u00a0\u202f]"
_POSTAL_RE = re.compile(f"{_START}({_FSA}){_SP}{{0,2}}(?:-{_SP}{{0,2}})?({_LDU}){_END}")
# An FSA token: whole, and not the first half of a broken full code ("K1A 0B1234").
_FSA_TOKEN = f"({_FSA}){_END}(?!{_SP}{{1,2}}-?[0-9])"
_FSA_ONLY_RE = re.compile(f"{_SP}*({_FSA}){_SP}*")

_POSTAL_WORDS = (
    r"fsas?|forward\s+sortation\s+areas?"
    r"|postal\s+(?:codes?|areas?|districts?|zones?|prefix(?:es)?)|post\s?codes?"
    r"|rtas?|r\.t\.a\.?|r[ée]gions?\s+de\s+tri(?:\s+d['’]acheminement)?"
    r"|codes?\s+postal|codes?\s+postaux|secteurs?\s+postal|secteurs?\s+postaux|zones?\s+postales?"
)
_JOIN_WORDS = (
    r"of|is|in|for|starting\s+with|beginning\s+with|begins\s+with|de|du|est"
    r"|commen[cç]ant\s+par|d[ée]butant\s+par"
)
_GAP = "[\\s:=#(\\[\\-–—\"'‘’“”«»]{1,6}"
_PROVINCES = "AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT"
_STRONG_RE = re.compile(
    f"(?:(?i:\\b(?:{_POSTAL_WORDS})){_GAP}(?:(?i:{_JOIN_WORDS}){_GAP})?"
    f"|(?:,|\\()[ \\t\u00a0]*(?:{_PROVINCES})\\)?{_SP}+)"
    f"{_FSA_TOKEN}"
)
_WEAK_RE = re.compile(
    f"(?i:\\bthe){_SP}+({_FSA})(?:{_SP}+|{_SP}*-{_SP}*)(?i:area|region|district|neighbou?rhood)\\b"
    f"|(?i:\\b(?:le|du|au)\\s+secteur){_SP}+{_FSA_TOKEN}"
)
_CONTROL_RE = re.compile("[\\s\x00-\x1f\x7f-\x9f]+")


# ----------------------------------------------------------------------------- locating


class Locator:
    def __init__(self, index: FsaIndex, geocoder: Geocoder | None = None) -> None:
        self.index = index
        self.geocoder = geocoder

    def locate(self, posting: Posting) -> Location | Unresolved:
        reasons: dict[Reason, str | None] = {}
        postal_field = posting.postal_code
        texts = [t for t in (posting.address, posting.text) if isinstance(t, str) and t]

        # (a) coordinates
        if posting.latitude is not None or posting.longitude is not None:
            point = check_point(posting.latitude, posting.longitude)
            if isinstance(point, tuple):
                return Location(point[0], point[1], "coordinates")
            reasons[point] = f"latitude={posting.latitude!r}, longitude={posting.longitude!r}"

        # (b) a full postal code
        field_text = [postal_field] if isinstance(postal_field, str) else []
        for code in _first_distinct(_postal_codes([*field_text, *texts])):
            located = self.index.locate_postal_code(code)
            if located is None:
                reasons.setdefault("unknown_postal_code", code)
                continue
            detail = code if located.method == "postal_code" else f"{code} (FSA centroid)"
            return Location(located.lat, located.lon, "postal_code", detail)

        # (c) an FSA named as such
        field_fsa = _fsa_field(postal_field)
        for fsa, strong in _first_distinct(_fsas(field_fsa, texts)):
            located = self.index.locate_fsa(fsa)
            if located is not None:
                return Location(located.lat, located.lon, "fsa", fsa)
            if strong:
                reasons.setdefault("unknown_fsa", fsa)
        field_str = "" if postal_field is None else str(postal_field)
        if field_str.strip() and field_fsa is None and _POSTAL_RE.search(field_str) is None:
            reasons["bad_postal_code"] = repr(postal_field)[:100]

        # (d) the address, geocoded
        address = _clean(posting.address) if isinstance(posting.address, str) else ""
        if address:
            if self.geocoder is None:
                reasons["geocoder_off"] = address
            else:
                found = _geocode(self.geocoder, address, reasons)
                if found is not None:
                    return found

        # (e) nothing worked: the most specific reason
        for reason in REASONS:
            if reason in reasons:
                return Unresolved(reason, reasons[reason])
        return Unresolved("no_location")


def check_point(lat: object, lon: object) -> tuple[float, float] | Literal["bad_coordinates", "outside_canada"]:
    """``(lat, lon)`` as floats when both are usable and inside Canada's box, else why not."""
    lat_f, lon_f = _number(lat), _number(lon)
    if lat_f is None or lon_f is None or abs(lat_f) > 90 or abs(lon_f) > 180:
        return "bad_coordinates"
    if not (CANADA_LAT[0] <= lat_f <= CANADA_LAT[1] and CANADA_LON[0] <= lon_f <= CANADA_LON[1]):
        return "outside_canada"
    return lat_f, lon_f


def _geocode(geocoder: Geocoder, address: str, reasons: dict[Reason, str | None]) -> Location | None:
    try:
        point = geocoder.geocode(address)
    except GeocoderError as exc:
        reasons["geocoder_error"] = str(exc)
        return None
    if point is None:
        reasons["address_not_found"] = address
        return None
    if not isinstance(point, tuple) or len(point) != 2:
        reasons["geocoder_error"] = f"geocoder answered {point!r} for {address!r}"
        return None
    checked = check_point(*point)
    if isinstance(checked, tuple):
        return Location(checked[0], checked[1], "address", address)
    if checked == "outside_canada":
        reasons["address_not_found"] = f"{address}: geocoded outside Canada at {point!r}"
    else:
        reasons["geocoder_error"] = f"geocoder answered {point!r} for {address!r}"
    return None


def _number(value: object) -> float | None:
    """A finite float from a number or a numeric string; None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _postal_codes(texts: Iterable[str]) -> Iterator[str]:
    """Every full postal code in ``texts``, canonical (``M5V 3L9``), in order."""
    for text in texts:
        for match in _POSTAL_RE.finditer(text):
            yield f"{match.group(1).upper()} {match.group(2).upper()}"


def _fsa_field(value: object) -> str | None:
    """The FSA when the whole postal_code field is one (``k1a``, `` K1A ``)."""
    if not isinstance(value, str):
        return None
    match = _FSA_ONLY_RE.fullmatch(value)
    return match.group(1).upper() if match else None


def _fsas(field_fsa: str | None, texts: list[str]) -> Iterator[tuple[str, bool]]:
    """``(FSA, strong)`` for every FSA named as such: the field, strong contexts, then weak."""
    if field_fsa is not None:
        yield field_fsa, True
    for text in texts:
        for match in _STRONG_RE.finditer(text):
            yield match.group(1).upper(), True
    for text in texts:
        for match in _WEAK_RE.finditer(text):
            fsa = (match.group(1) or match.group(2)).upper()
            if fsa not in ACRONYMS:
                yield fsa, False


def _first_distinct(items: Iterable, limit: int = MAX_CANDIDATES) -> Iterator:
    seen = set()
    for item in items:
        if item in seen:
            continue
        seen.add(item)
        yield item
        if len(seen) >= limit:
            return


def _clean(text: str) -> str:
    """Control characters and runs of white space as one space; cut to the detail limit."""
    return _CONTROL_RE.sub(" ", text).strip()[:ADDRESS_DETAIL_LIMIT].strip()
