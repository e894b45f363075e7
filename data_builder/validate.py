"""Validate a dataset frame: keep good rows, count every dropped row by reason (pandas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data_builder.codes import is_fsa, normalize_postal_code
from data_builder.errors import DatasetError
from data_builder.geo import CANADA_LAT, CANADA_LON, EARTH_RADIUS_KM
from data_builder.readers import Level

#: Drop reasons, in the order they are checked (a row is counted under its first defect).
REASONS = (
    "bad_code", "bad_coordinates", "outside_canada", "duplicate_code", "far_from_fsa", "placeholder_point",
)  # fmt: skip
DEFAULT_MAX_DROP_FRACTION = 0.01
#: Bumped whenever a rule below changes what is kept: part of every index version's hash.
RULES_VERSION = 2

# A full postal code is geocoded wrongly when it lies far outside the body of its own FSA:
# more than FAR_MIN_KM and FAR_SPREAD_FACTOR times the FSA's 90th-percentile distance from
# the FSA's median point. GeoNames has ~1,000 such codes (E5M 1N8 sits in Thunder Bay,
# 1,700 km from New Brunswick), and the points they share are geocoder fallbacks
# ("placeholder_point"): N2V 0G6 (Waterloo) and M6J 0G9 both sit exactly on the CN Tower.
# So are points shared by codes of PLACEHOLDER_MIN_FSAS or more FSAs (one point in New
# Brunswick holds 102 codes of 9 rural FSAs): their real locations are unknown, and kept they
# would make every one of those FSAs "near" that point. No FSA loses all its codes to this.
FAR_MIN_KM = 25.0
FAR_SPREAD_FACTOR = 5.0
PLACEHOLDER_MIN_FSAS = 3


@dataclass
class Validated:
    """Valid rows sorted by code (codes canonical, coordinates in degrees) and drop counts."""

    codes: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    rows_in: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.codes)

    def summary(self) -> dict[str, object]:
        return {"rows_in": self.rows_in, "rows": self.rows, "dropped": dict(self.dropped)}


def validate(
    frame: pd.DataFrame,
    level: Level,
    *,
    max_drop_fraction: float = DEFAULT_MAX_DROP_FRACTION,
    label: str = "dataset",
) -> Validated:
    """Check codes, coordinates and duplicates; raise DatasetError when too little survives."""
    rows_in = len(frame)
    reason = pd.Series("", index=frame.index, dtype=object)

    # Plain Python over the values: pandas' string methods are several times slower here.
    canonical = _canonical_fsa if level == "fsa" else normalize_postal_code
    codes = pd.Series([canonical(str(c)) for c in frame["code"].to_numpy()], index=frame.index, dtype=object)
    reason[codes.isna()] = "bad_code"

    lat = _numbers(frame["latitude"])
    lon = _numbers(frame["longitude"])
    finite = np.isfinite(lat.to_numpy(dtype=float)) & np.isfinite(lon.to_numpy(dtype=float))
    reason[(reason == "") & ~finite] = "bad_coordinates"

    inside = lat.between(*CANADA_LAT) & lon.between(*CANADA_LON)
    reason[(reason == "") & ~inside] = "outside_canada"

    ok = reason == ""
    # duplicated() must see only rows still valid, so a bad first copy does not hide a good one.
    duplicate = ok & codes.where(ok).duplicated(keep="first")
    reason[duplicate] = "duplicate_code"
    if level == "postal":
        ok = reason == ""
        far, placeholder = _misplaced(codes.where(ok).str[:3], lat.where(ok), lon.where(ok))
        reason[ok & far] = "far_from_fsa"
        reason[ok & ~far & placeholder] = "placeholder_point"

    counts = reason[reason != ""].value_counts()
    dropped = {r: int(counts.get(r, 0)) for r in REASONS if counts.get(r, 0)}
    keep = reason == ""
    kept = pd.DataFrame({"code": codes[keep], "lat": lat[keep], "lon": lon[keep]}).sort_values("code", kind="stable")
    result = Validated(
        codes=kept["code"].to_numpy(dtype=str),
        lat=kept["lat"].to_numpy(dtype=float),
        lon=kept["lon"].to_numpy(dtype=float),
        rows_in=rows_in,
        dropped=dropped,
    )
    _check_enough(result, max_drop_fraction, label)
    return result


def _canonical_fsa(text: str) -> str | None:
    code = text.strip().upper()
    return code if is_fsa(code) else None


def _numbers(column: pd.Series) -> pd.Series:
    """Parse numbers; anything unparseable becomes NaN (and is dropped as bad_coordinates)."""
    values = pd.to_numeric(column, errors="coerce")
    unparsed = values.isna() & column.notna()
    if unparsed.any():  # the slow path only for what the fast one could not read, e.g. " 45.1 "
        values[unparsed] = pd.to_numeric(column[unparsed].astype(str).str.strip(), errors="coerce")
    return values.astype(float)


def _misplaced(fsa: pd.Series, lat: pd.Series, lon: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Flag codes far from their FSA's body, and every code at a point such a code sits on."""
    groups = pd.DataFrame({"fsa": fsa, "lat": lat, "lon": lon}).groupby("fsa")
    km = _haversine_km(lat, lon, groups["lat"].transform("median"), groups["lon"].transform("median"))
    spread = km.groupby(fsa).transform("quantile", 0.9)
    far = (km > np.maximum(FAR_MIN_KM, FAR_SPREAD_FACTOR * spread)).fillna(False)
    points = pd.MultiIndex.from_arrays([lat, lon])
    shared = fsa.groupby([lat, lon]).transform("nunique") >= PLACEHOLDER_MIN_FSAS
    placeholder = (pd.Series(points.isin(points[far.to_numpy()]), index=fsa.index) | shared) & fsa.notna()
    return far, placeholder


def _haversine_km(lat1: pd.Series, lon1: pd.Series, lat2: pd.Series, lon2: pd.Series) -> pd.Series:
    p1, p2, dlon = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a.clip(0, 1)))


def format_dropped(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in dropped.items()) or "none"


def _check_enough(result: Validated, max_drop_fraction: float, label: str) -> None:
    check_drop_fraction(result.summary(), max_drop_fraction, label)


def check_drop_fraction(summary: dict[str, Any], max_drop_fraction: float, label: str) -> None:
    """Raise DatasetError when nothing valid remains or too large a share was dropped.

    ``summary`` is a level's counts as written to the manifest (rows_in, rows, dropped)."""
    rows_in, rows, dropped = summary["rows_in"], summary["rows"], summary["dropped"]
    if rows == 0:
        raise DatasetError(f"{label}: no valid rows among {rows_in} (dropped: {format_dropped(dropped)})")
    fraction = (rows_in - rows) / rows_in
    if fraction > max_drop_fraction:
        raise DatasetError(
            f"{label}: dropped {rows_in - rows} of {rows_in} rows ({fraction:.2%}), more than the "
            f"allowed {max_drop_fraction:.2%} ({format_dropped(dropped)})"
        )
