"""Turn a street address into a point: the ``Geocoder`` protocol, and Amazon Location behind it.

Location resolution (``locate.py``) calls a geocoder last, only for postings that carry an
address but neither usable coordinates nor a postal code or FSA: every call costs money.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

#: SearchPlaceIndexForText accepts 1 to 200 characters of text.
MAX_TEXT = 200


class GeocoderError(Exception):
    """The geocoding service failed (throttled, denied, unreachable, or an answer we cannot read).

    Unlike "no match", this says nothing about the address: the same posting may resolve later.
    """


class Geocoder(Protocol):
    def geocode(self, address: str) -> tuple[float, float] | None:
        """``(latitude, longitude)`` of the best match in Canada, or None when nothing matches.

        Raises GeocoderError when the service fails.
        """
        ...


class AmazonLocationGeocoder:
    """Geocode with an Amazon Location Service place index (``SearchPlaceIndexForText``)."""

    def __init__(self, place_index: str, client: Any) -> None:
        if not place_index or not place_index.strip():
            raise ValueError("place_index must name an Amazon Location place index")
        self.place_index = place_index
        self._client = client  # boto3.client("location")

    def geocode(self, address: str) -> tuple[float, float] | None:
        text = " ".join(address.split())[:MAX_TEXT].strip()
        if not text:
            return None
        try:
            response = self._client.search_place_index_for_text(
                IndexName=self.place_index, Text=text, FilterCountries=["CAN"], MaxResults=1
            )
        except (ClientError, BotoCoreError) as exc:
            raise GeocoderError(f"SearchPlaceIndexForText on {self.place_index} failed: {_one_line(exc)}") from exc
        results = response.get("Results") or []
        if not results:
            return None
        try:
            lon, lat = results[0]["Place"]["Geometry"]["Point"]  # GeoJSON order: longitude first
            lat, lon = float(lat), float(lon)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise GeocoderError(f"SearchPlaceIndexForText on {self.place_index}: no point in {results[0]!r}") from exc
        if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
            raise GeocoderError(f"SearchPlaceIndexForText on {self.place_index}: bad point lon={lon}, lat={lat}")
        return lat, lon


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
