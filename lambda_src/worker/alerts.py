"""The alert message: one JSON document per posting, and its SNS message attributes.

Its shape is a contract with subscribers (README, "The alert message"); change it only
with a new ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from data_builder.index import Match
from lambda_src.worker.locate import Location
from lambda_src.worker.postings import Posting

SCHEMA_VERSION = 1
#: Characters of posting text an alert carries; longer text is cut and flagged.
TEXT_LIMIT = 2000
#: SNS allows 10 message attributes; ``fsa`` takes one.
MAX_EXTRA_ATTRIBUTES = 9


@dataclass(frozen=True)
class Alert:
    posting: Posting
    location: Location
    fsas: list[Match]

    @property
    def key(self) -> tuple[str, str]:
        return self.posting.source, self.posting.id

    def message(self, *, radius_km: float, mode: str, index_version: str) -> str:
        text = self.posting.text
        body: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "source": self.posting.source,
            "posting_id": self.posting.id,
            "url": self.posting.url,
            "text": text[:TEXT_LIMIT],
            "text_truncated": len(text) > TEXT_LIMIT,
            "time": self.posting.time,
            "location": {
                "lat": round(self.location.lat, 6),
                "lon": round(self.location.lon, 6),
                "method": self.location.method,
                "detail": self.location.detail,
            },
            "fsas": [{"fsa": m.code, "km": round(m.km, 3)} for m in self.fsas],
            "radius_km": radius_km,
            "match_mode": mode,
            "index_version": index_version,
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    def attributes(self) -> dict[str, dict[str, str]]:
        """``fsa`` (String.Array) for routing, plus the feed's mapped attributes."""
        attrs = {"fsa": {"DataType": "String.Array", "StringValue": json.dumps([m.code for m in self.fsas])}}
        for name, value in list(self.posting.attributes.items())[:MAX_EXTRA_ATTRIBUTES]:
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                if math.isfinite(value):
                    attrs[name] = {"DataType": "Number", "StringValue": repr(value)}
            elif isinstance(value, str) and value.strip():
                attrs[name] = {"DataType": "String", "StringValue": value[:256]}
        return attrs
