"""Earth geometry and coordinate checks shared by building and querying (numpy only)."""

from __future__ import annotations

import numpy as np

#: Mean Earth radius (IUGG), the radius every distance in this project is measured with.
EARTH_RADIUS_KM = 6371.0088

#: A box around Canada, generous by a few kilometres: (min, max) latitude and longitude.
CANADA_LAT = (41.6, 83.2)
CANADA_LON = (-141.1, -52.5)


def unit_vectors(coords: np.ndarray) -> np.ndarray:
    """(n, 2) latitude, longitude in radians -> (n, 3) points on the unit sphere.

    The index measures straight-line (chord) distance between these: it orders points
    exactly as the great-circle distance does, and costs no trigonometry per comparison,
    which makes tree queries several times faster than the haversine metric."""
    lat, lon = coords[:, 0], coords[:, 1]
    cos_lat = np.cos(lat)
    return np.column_stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)])


def km_to_chord(km: float | np.ndarray) -> np.ndarray:
    angle = np.minimum(np.asarray(km, dtype=float) / EARTH_RADIUS_KM, np.pi)
    return 2 * np.sin(angle / 2)


def chord_to_km(chord: float | np.ndarray) -> np.ndarray:
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(np.asarray(chord, dtype=float) / 2, 1.0))


def chord(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise straight-line distance between two (n, 3) arrays of unit vectors."""
    diff = a - b
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def as_points(lat: object, lon: object) -> np.ndarray:
    """Validate query coordinates in degrees; return an (n, 2) array of (lat, lon) radians.

    Scalars and 1-d sequences of equal length are accepted. Raises ValueError naming the
    first bad value.
    """
    try:
        lat_arr = np.atleast_1d(np.asarray(lat, dtype=float))
        lon_arr = np.atleast_1d(np.asarray(lon, dtype=float))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"coordinates must be numbers: lat={lat!r}, lon={lon!r}") from exc
    if lat_arr.ndim != 1 or lon_arr.ndim != 1 or lat_arr.shape != lon_arr.shape:
        raise ValueError(
            f"lat and lon must be scalars or 1-d sequences of equal length, "
            f"got shapes {lat_arr.shape} and {lon_arr.shape}"
        )
    for name, values, limit in (("latitude", lat_arr, 90.0), ("longitude", lon_arr, 180.0)):
        bad = ~np.isfinite(values) | (np.abs(values) > limit)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name} {float(values[i])!r} at position {i} is not a number in ±{limit:g}")
    return np.radians(np.column_stack([lat_arr, lon_arr]))


def as_radius(radius_km: float) -> float:
    try:
        value = float(radius_km)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"radius_km must be a number, got {radius_km!r}") from exc
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"radius_km must be a finite number >= 0, got {radius_km!r}")
    return value
