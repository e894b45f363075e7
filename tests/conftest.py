"""Shared fixtures: the full index built once per session, and small synthetic datasets.

Helpers that several test files need (an independent haversine, a destination-point
formula, synthetic dataset writers) are exposed as fixtures so no test imports conftest.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from data_builder.build import build
from data_builder.index import FsaIndex

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
FSA_CSV = DATA / "fsa_centroids.csv"
POSTAL_CSV_GZ = DATA / "postal_codes.csv.gz"

#: Mean Earth radius (IUGG) in km, written out here independently of data_builder.geo.
EARTH_RADIUS_KM = 6371.0088

# Letters Canada Post uses, spelled out independently of data_builder.codes.
FIRST_LETTERS = "ABCEGHJKLMNPRSTVXY"
OTHER_LETTERS = "ABCEGHJKLMNPRSTVWXYZ"


def quiet(_message: str) -> None:
    """A progress callback that drops every message."""


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def destination(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    """The point ``km`` away from (lat, lon) along the initial ``bearing_deg`` (sphere)."""
    p1, l1, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = km / EARTH_RADIUS_KM
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(theta))
    l2 = l1 + math.atan2(math.sin(theta) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180


# --------------------------------------------------------------------- synthetic data


def fsa_codes(n: int, first: str = FIRST_LETTERS) -> list[str]:
    """``n`` distinct valid FSAs in code order (A0A, A0B, ...)."""
    gen = (f"{a}{d}{c}" for a, d, c in itertools.product(first, "0123456789", OTHER_LETTERS))
    return list(itertools.islice(gen, n))


def ldus(n: int) -> list[str]:
    gen = (f"{d1}{c}{d2}" for d1, c, d2 in itertools.product("0123456789", OTHER_LETTERS, "0123456789"))
    return list(itertools.islice(gen, n))


def fsa_rows(
    n: int, *, lat0: float = 45.0, lon0: float = -76.0, step: float = 0.1, first: str = FIRST_LETTERS
) -> list[tuple[str, str, str]]:
    """``n`` FSAs on a grid (10 per row, ``step`` degrees apart) as CSV text rows."""
    return [
        (code, f"{lat0 + (i // 10) * step:.4f}", f"{lon0 + (i % 10) * step:.4f}")
        for i, code in enumerate(fsa_codes(n, first))
    ]


def postal_rows(
    centroids: list[tuple[str, str, str]], per_fsa: int, spread: float = 0.004
) -> list[tuple[str, str, str]]:
    """``per_fsa`` full postal codes around each FSA centroid (within ``spread`` degrees)."""
    rows = []
    for code, lat, lon in centroids:
        for j, ldu in enumerate(ldus(per_fsa)):
            dlat = spread * ((j % 3) - 1)
            dlon = spread * ((j // 3 % 3) - 1)
            rows.append((f"{code} {ldu}", f"{float(lat) + dlat:.5f}", f"{float(lon) + dlon:.5f}"))
    return rows


def write_csv(
    path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("code", "latitude", "longitude")
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@dataclass(frozen=True)
class Synth:
    """Synthetic dataset helpers, handed to tests as the ``synth`` fixture."""

    fsa_codes = staticmethod(fsa_codes)
    ldus = staticmethod(ldus)
    fsa_rows = staticmethod(fsa_rows)
    postal_rows = staticmethod(postal_rows)
    write_csv = staticmethod(write_csv)


@pytest.fixture(scope="session")
def synth() -> Synth:
    return Synth()


@pytest.fixture(scope="session")
def haversine():
    return haversine_km


@pytest.fixture(scope="session")
def dest():
    return destination


@dataclass
class SmallSources:
    fsa: Path
    postal: Path
    fsa_rows: list[tuple[str, str, str]]
    postal_rows: list[tuple[str, str, str]]
    #: an FSA that has postal codes but no centroid in ``fsa``
    orphan: str


@pytest.fixture
def small_sources(tmp_path: Path) -> SmallSources:
    """30 FSA centroids near Ottawa; 9 postal codes around each of the first 20, plus an
    FSA (``Y1A``) that has postal codes but no centroid."""
    centroids = fsa_rows(30, lat0=45.0, lon0=-76.0, step=0.1)
    postal = postal_rows(centroids[:20], per_fsa=9)
    orphan = ("Y1A", "46.5000", "-76.0000")
    postal += postal_rows([orphan], per_fsa=9)
    return SmallSources(
        fsa=write_csv(tmp_path / "src" / "fsa.csv", centroids),
        postal=write_csv(tmp_path / "src" / "postal.csv", postal),
        fsa_rows=centroids,
        postal_rows=postal,
        orphan="Y1A",
    )


@pytest.fixture
def small_index(tmp_path: Path, small_sources: SmallSources) -> Path:
    """A small FSA + postal index (root directory), built from ``small_sources``."""
    root = tmp_path / "idx"
    build(root, small_sources.fsa, small_sources.postal, level="postal", progress=quiet)
    return root


@pytest.fixture
def small_fsa_index(tmp_path: Path, small_sources: SmallSources) -> Path:
    """An FSA-only index (no postal level) built from ``small_sources``."""
    root = tmp_path / "fsa-idx"
    build(root, small_sources.fsa, level="fsa", progress=quiet)
    return root


# --------------------------------------------------------------------- the full index


@pytest.fixture(scope="session")
def full_build(tmp_path_factory: pytest.TempPathFactory):
    """Build the FULL index (FSA + postal level) from the committed data, once per session."""
    root = tmp_path_factory.mktemp("full") / "idx"
    result = build(root, FSA_CSV, POSTAL_CSV_GZ, level="postal", progress=quiet)
    return root, result


@pytest.fixture(scope="session")
def full_index(full_build) -> FsaIndex:
    root, _result = full_build
    return FsaIndex.open(root)


@pytest.fixture(scope="session")
def centroids_csv() -> dict[str, tuple[float, float]]:
    """data/fsa_centroids.csv read with the csv module: code -> (lat, lon), all 1,651 rows."""
    with open(FSA_CSV, newline="", encoding="utf-8") as fh:
        return {row["code"]: (float(row["latitude"]), float(row["longitude"])) for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def postal_csv() -> list[tuple[str, float, float]]:
    """data/postal_codes.csv.gz read with gzip + csv: (code, lat, lon) per row."""
    with gzip.open(POSTAL_CSV_GZ, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["code", "latitude", "longitude"]
        return [(code, float(lat), float(lon)) for code, lat, lon in reader]


# --------------------------------------------------------------------- AWS on loopback


@pytest.fixture(scope="module")
def aws():
    """A moto server on 127.0.0.1 for the module, with boto3 pointed at it."""
    from lambda_src.local.moto_env import aws_env, moto_server, patched_env
    from lambda_src.worker import handler as worker

    with moto_server() as endpoint, patched_env(aws_env(endpoint)):
        worker._client.cache_clear()  # the worker's cached clients may point at another server
        yield endpoint
    worker._client.cache_clear()
