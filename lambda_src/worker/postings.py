"""A posting as every source produces it, and what a fetch returns."""

from __future__ import annotations

from dataclasses import dataclass, field

Attribute = str | float


@dataclass(frozen=True)
class Posting:
    """One item of a feed. Only ``source`` and ``id`` are required; location fields are
    whatever the feed gave (validated later, by location resolution)."""

    source: str
    id: str
    text: str = ""
    url: str | None = None
    time: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    postal_code: str | None = None
    address: str | None = None
    attributes: dict[str, Attribute] = field(default_factory=dict)
    #: The source's cursor value once this posting (and every one before it) is done.
    checkpoint: str | None = None


@dataclass
class Fetch:
    """What one source returned since its cursor.

    ``cursor_when_done`` is stored only when every posting is done (published, parked,
    unresolved or already sent); a partial run stores ``{checkpoint_key: last checkpoint}``
    on top of the old cursor instead, so an interrupted fetch is fetched again.
    """

    postings: list[Posting]
    cursor_when_done: dict[str, str]
    checkpoint_key: str | None = None
    not_modified: bool = False
    #: Items dropped before they became postings, by reason (e.g. missing_id, duplicate_id).
    rejected: dict[str, int] = field(default_factory=dict)
