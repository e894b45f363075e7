"""From a feed item (a JSON object) to a Posting: pick fields by dotted path, coerce leniently.

Nothing here raises on bad values: a field that cannot be used becomes None (or is dropped),
and location resolution later decides what a posting without usable coordinates means.
Only a usable id is required; items without one are rejected with a reason.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from lambda_src.worker.postings import Attribute, Posting
from lambda_src.worker.source_config import FieldMap

#: Longer ids are rejected ("invalid_id"): they end up in cursors and state-table keys.
MAX_ID_CHARS = 1024
# C0/C1 controls except \t and \n, and lone surrogates (JSON "\ud800" escapes; not UTF-8 encodable).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def pick(item: Any, path: str | None) -> Any:
    """The value at ``path`` in ``item``: a key, or a dotted path through nested objects
    (list elements by index, e.g. ``geometry.coordinates.1``); None when absent.
    A key that itself contains dots wins over the nested reading."""
    if path is None:
        return None
    if isinstance(item, Mapping) and path in item:
        return item[path]
    value = item
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def clean_text(text: str) -> str:
    """``text`` without control characters (``\\n`` and ``\\t`` stay; ``\\r\\n`` becomes ``\\n``)."""
    return _CONTROL.sub("", text)


def coerce_id(value: Any) -> str | None:
    """A non-empty string id (surrounding blanks removed); ints are accepted, nothing else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        value = clean_text(value).strip()
        return value or None
    return None


def coerce_text(value: Any) -> str:
    """A string for text: strings (cleaned) and numbers; anything else is empty."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def coerce_str(value: Any) -> str | None:
    """An optional string field (url, time, postal code, address); blank -> None."""
    text = coerce_text(value).strip()
    return text or None


def coerce_number(value: Any) -> float | None:
    """A float from a number or a numeric string ("43.6"), as given (NaN and out-of-range
    values included); None when there is nothing numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except (ValueError, OverflowError):
            return None
    return None


def coerce_attribute(value: Any) -> Attribute | None:
    """A message attribute value: a non-blank string or a finite number (as float)."""
    if isinstance(value, str):
        text = clean_text(value).strip()
        return text or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = coerce_number(value)
        return number if number is not None and math.isfinite(number) else None
    return None


def posting_from_item(source: str, item: Any, fields: FieldMap) -> Posting | str:
    """The posting for ``item``, or the reason it was rejected."""
    if not isinstance(item, dict):
        return "not_an_object"
    posting_id = coerce_id(pick(item, fields.id))
    if posting_id is None:
        return "missing_id"
    if len(posting_id) > MAX_ID_CHARS:
        return "invalid_id"
    attributes: dict[str, Attribute] = {}
    for name, path in fields.attributes.items():
        value = coerce_attribute(pick(item, path))
        if value is not None:
            attributes[name] = value
    return Posting(
        source=source,
        id=posting_id,
        text=coerce_text(pick(item, fields.text)),
        url=coerce_str(pick(item, fields.url)),
        time=coerce_str(pick(item, fields.time)),
        latitude=coerce_number(pick(item, fields.latitude)),
        longitude=coerce_number(pick(item, fields.longitude)),
        postal_code=coerce_str(pick(item, fields.postal_code)),
        address=coerce_str(pick(item, fields.address)),
        attributes=attributes,
    )


class Collector:
    """Postings of one fetch, in order: the first of each id kept, rejections counted."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.postings: list[Posting] = []
        self.rejected: Counter[str] = Counter()
        self._seen: set[str] = set()

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def add(self, posting: Posting | str) -> bool:
        """Keep ``posting`` (True) or count why not: its reason, or ``duplicate_id``."""
        if isinstance(posting, str):
            self.reject(posting)
            return False
        if posting.id in self._seen:
            self.reject("duplicate_id")
            return False
        self._seen.add(posting.id)
        self.postings.append(posting)
        return True

    def add_item(self, item: Any, fields: FieldMap) -> bool:
        return self.add(posting_from_item(self.source, item, fields))
