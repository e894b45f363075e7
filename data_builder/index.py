"""Open an index and answer batch queries. numpy + scikit-learn only: never pandas.

The worker imports this module on its cold start, so it stays small and lazy.
"""

from __future__ import annotations

import io
import itertools
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from data_builder import layout
from data_builder.codes import is_fsa, normalize_postal_code
from data_builder.errors import IndexCorrupt, IndexMissing
from data_builder.geo import as_points, as_radius, km_to_radians, radians_to_km

Mode = Literal["centroid", "coverage"]
MODES: tuple[Mode, ...] = ("centroid", "coverage")
DEFAULT_RADIUS_KM = 2.5
#: Extra neighbours fetched so that ties at the k-th distance break by code, not tree order.
_TIE_SLACK = 8

# The only globals a BallTree pickle written by this project refers to. Anything else in a
# pickle (os.system, builtins.open, ...) is refused before it can run.
_PICKLE_ALLOWED = {
    ("sklearn.neighbors._ball_tree", "BallTree"),
    ("sklearn.neighbors._ball_tree", "newObj"),
    ("sklearn.metrics._dist_metrics", "newObj"),
    ("sklearn.metrics._dist_metrics", "HaversineDistance64"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
}


class Match(NamedTuple):
    """An FSA and its distance in km (to its centroid, or to its closest postal code)."""

    code: str
    km: float


class Located(NamedTuple):
    """Where a postal code puts a posting, and how it was found."""

    lat: float
    lon: float
    method: Literal["postal_code", "fsa_centroid"]
    code: str


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise IndexCorrupt(f"tree pickle refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


@dataclass
class _Level:
    codes: np.ndarray  # sorted; FSA level: '<U3'; postal level: 'S6' without the space
    coords: np.ndarray  # (n, 2) latitude, longitude in radians
    tree: Any  # sklearn.neighbors.BallTree
    fsa_ids: np.ndarray | None = None  # postal level: index into ``fsas`` per postal code
    fsas: np.ndarray | None = None  # postal level: sorted FSAs that have postal codes
    fsa_points: np.ndarray | None = None  # postal level: per ``fsas``, the median of its postal codes


def read_manifest(version_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((version_dir / layout.MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexCorrupt(f"{version_dir} has no {layout.MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorrupt(f"{version_dir / layout.MANIFEST} is not valid JSON: {exc}") from exc
    where = version_dir / layout.MANIFEST
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IndexCorrupt(f"{where} lists no files")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise IndexCorrupt(f"{where}: files must map paths to sha256 strings")
    for key in ("levels", "libraries"):
        if not isinstance(manifest.get(key, {}), dict):
            raise IndexCorrupt(f"{where}: {key} must be an object, got {manifest[key]!r}")
    if not isinstance(manifest.get("leaf_size", 40), int) or isinstance(manifest.get("leaf_size"), bool):
        raise IndexCorrupt(f"{where}: leaf_size must be a whole number, got {manifest['leaf_size']!r}")
    return manifest


def verify_version(version_dir: Path) -> dict[str, Any]:
    """Check the sha256 of every file the manifest lists; return the manifest.

    Raises IndexCorrupt naming the first missing, truncated or altered file.
    """
    manifest = read_manifest(version_dir)
    required = {layout.CODES, layout.COORDS, layout.TREE}
    if "postal" in manifest.get("levels", {}):
        postal_files = (layout.CODES, layout.COORDS, layout.TREE, layout.FSA_IDS, layout.FSAS)
        required |= {f"{layout.POSTAL_DIR}/{f}" for f in postal_files}
    missing = required - set(manifest["files"])
    if missing:
        raise IndexCorrupt(f"{version_dir / layout.MANIFEST} does not list {', '.join(sorted(missing))}")
    for rel, expected in sorted(manifest["files"].items()):
        path = version_dir / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise IndexCorrupt(f"{version_dir / layout.MANIFEST} lists a path outside the index: {rel}")
        try:
            actual = layout.sha256_file(path)
        except FileNotFoundError as exc:
            raise IndexCorrupt(f"{path} is missing") from exc
        if actual != expected:
            raise IndexCorrupt(f"{path} does not match its sha256 in the manifest (truncated or altered)")
    return manifest


class FsaIndex:
    """The FSA index of one version: centroids, and optionally every full postal code."""

    def __init__(self, version: str, manifest: dict[str, Any], fsa: _Level, postal: _Level | None):
        self.version = version
        self.manifest = manifest
        self._fsa = fsa
        self._postal = postal

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, root: str | Path, *, verify: bool = True) -> FsaIndex:
        """Open the version ``CURRENT`` names, verifying checksums before unpickling anything.

        A version pruned between reading ``CURRENT`` and its files is retried with the new
        ``CURRENT``. Raises IndexMissing or IndexCorrupt.
        """
        root = Path(root)
        for _attempt in range(5):
            version = layout.read_current(root)
            if version is None:
                raise IndexMissing(f"no index at {root}: {layout.CURRENT} is missing or empty")
            version_dir = root / version
            try:
                if not version_dir.is_dir():
                    raise IndexMissing(f"{root / layout.CURRENT} names {version}, which does not exist")
                return cls.open_version(version_dir, verify=verify)
            except (IndexMissing, IndexCorrupt):
                # A builder flipped CURRENT and pruned this version while we read it: retry
                # with the new one. An unchanged CURRENT means the index really is broken.
                if layout.read_current(root) != version:
                    continue
                raise
        raise IndexMissing(f"{root}: {layout.CURRENT} kept changing while opening the index")

    @classmethod
    def open_version(cls, version_dir: Path, *, verify: bool = True) -> FsaIndex:
        manifest = verify_version(version_dir) if verify else read_manifest(version_dir)
        same_sklearn = manifest.get("libraries", {}).get("scikit-learn") == _sklearn_version()
        leaf_size = int(manifest.get("leaf_size", 40))
        fsa = _load_level(version_dir, same_sklearn, leaf_size)
        postal = None
        if "postal" in manifest.get("levels", {}):
            postal = _load_level(version_dir / layout.POSTAL_DIR, same_sklearn, leaf_size, postal=True)
        return cls(version_dir.name, manifest, fsa, postal)

    @property
    def has_postal(self) -> bool:
        return self._postal is not None

    @property
    def default_mode(self) -> Mode:
        return "coverage" if self.has_postal else "centroid"

    @property
    def fsa_codes(self) -> np.ndarray:
        return self._fsa.codes

    # ----------------------------------------------------------------- queries

    def within(
        self, lat: object, lon: object, radius_km: float = DEFAULT_RADIUS_KM, mode: Mode | None = None
    ) -> list[list[Match]]:
        """Per point, the FSAs within ``radius_km``, nearest first.

        ``centroid``: FSAs whose centroid is within the radius. ``coverage``: FSAs with any
        full postal code within the radius, at the distance of their closest one.
        """
        points, radius, mode = as_points(lat, lon), as_radius(radius_km), self._mode(mode)
        return self._within(points, radius, mode) if len(points) else []

    def nearest(self, lat: object, lon: object, k: int = 1) -> list[list[Match]]:
        """Per point, the ``k`` FSAs with the nearest centroids; equal distances break by code."""
        points = as_points(lat, lon)
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        if not len(points):
            return []
        ids, km = _knn(self._fsa.tree, points, min(int(k), len(self._fsa.codes)))
        codes = self._fsa.codes
        return [[Match(str(codes[i]), float(d)) for i, d in zip(row, kms)] for row, kms in zip(ids, km)]

    def resolve(
        self, lat: object, lon: object, radius_km: float = DEFAULT_RADIUS_KM, mode: Mode | None = None
    ) -> list[list[Match]]:
        """Per point, the FSAs ``within`` the radius plus always the nearest one, nearest first.

        The nearest is the FSA of the nearest postal code in ``coverage`` mode and the
        nearest centroid in ``centroid`` mode, so no point is ever matched to nothing.
        """
        points, radius, mode = as_points(lat, lon), as_radius(radius_km), self._mode(mode)
        if not len(points):
            return []
        out = []
        for matches, near in zip(self._within(points, radius, mode), self._nearest_one(points, mode)):
            if all(m.code != near.code for m in matches):
                matches = sorted([*matches, near], key=lambda m: (m.km, m.code))
            out.append(matches)
        return out

    def locate_postal_code(self, text: str) -> Located | None:
        """A full postal code in any spelling -> its point; else its FSA's centroid; else None."""
        code = normalize_postal_code(text)
        if code is None:
            return None
        if self._postal is not None:
            key = np.bytes_(code.replace(" ", "").encode("ascii"))
            i = int(np.searchsorted(self._postal.codes, key))
            if i < len(self._postal.codes) and self._postal.codes[i] == key:
                lat, lon = np.degrees(self._postal.coords[i])
                return Located(float(lat), float(lon), "postal_code", code)
        return self.locate_fsa(code[:3], code=code)

    def locate_fsa(self, fsa: str, *, code: str | None = None) -> Located | None:
        """An FSA's centre, or None when the index knows no point for it.

        With the postal level that is the median of the FSA's postal codes (where its
        addresses are, and known for FSAs missing from the centroid table); without it, the
        dataset's centroid."""
        fsa = fsa.strip().upper()
        if not is_fsa(fsa):
            return None
        postal = self._postal
        if postal is not None and postal.fsa_points is not None:
            j = int(np.searchsorted(postal.fsas, fsa))
            if j < len(postal.fsas) and postal.fsas[j] == fsa:
                lat, lon = np.degrees(postal.fsa_points[j])
                return Located(float(lat), float(lon), "fsa_centroid", code or fsa)
        i = int(np.searchsorted(self._fsa.codes, fsa))
        if i < len(self._fsa.codes) and self._fsa.codes[i] == fsa:
            lat, lon = np.degrees(self._fsa.coords[i])
            return Located(float(lat), float(lon), "fsa_centroid", code or fsa)
        return None

    # ----------------------------------------------------------------- helpers

    def _within(self, points: np.ndarray, radius_km: float, mode: Mode) -> list[list[Match]]:
        level = self._level_for(mode)
        ind, dist = level.tree.query_radius(points, km_to_radians(radius_km), return_distance=True)
        counts = np.fromiter((len(i) for i in ind), dtype=np.int64, count=len(ind))
        point_ids = np.repeat(np.arange(len(points)), counts)
        flat_ind = np.concatenate(ind)
        flat_km = radians_to_km(np.concatenate(dist))
        if mode == "coverage":
            fsa_ids = level.fsa_ids[flat_ind]
            # Closest postal code per (point, FSA): sort, then keep each group's first row.
            order = np.lexsort((flat_km, fsa_ids, point_ids))
            point_ids, fsa_ids, flat_km = point_ids[order], fsa_ids[order], flat_km[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = (point_ids[1:] != point_ids[:-1]) | (fsa_ids[1:] != fsa_ids[:-1])
            return _group(len(points), point_ids[first], fsa_ids[first], flat_km[first], level.fsas)
        return _group(len(points), point_ids, flat_ind, flat_km, level.codes)

    def _nearest_one(self, points: np.ndarray, mode: Mode) -> list[Match]:
        level = self._level_for(mode)
        ids, km = _knn(level.tree, points, 1)
        names = level.fsas[level.fsa_ids[ids[:, 0]]] if mode == "coverage" else level.codes[ids[:, 0]]
        return [Match(str(code), float(d)) for code, d in zip(names, km[:, 0])]

    def _mode(self, mode: Mode | None) -> Mode:
        mode = mode or self.default_mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "coverage" and self._postal is None:
            raise ValueError(f"mode 'coverage' needs the postal level; index {self.version} has only FSAs")
        return mode

    def _level_for(self, mode: Mode) -> _Level:
        return self._postal if mode == "coverage" else self._fsa


def _group(n: int, point_ids: np.ndarray, ids: np.ndarray, km: np.ndarray, names: np.ndarray) -> list[list[Match]]:
    """Split flat (point, id, km) rows into one list per point, sorted by (km, code)."""
    order = np.lexsort((ids, km, point_ids))
    point_ids, ids, km = point_ids[order], ids[order], km[order]
    bounds = np.searchsorted(point_ids, np.arange(n + 1))
    codes = names[ids].tolist()
    kms = km.tolist()
    return [[Match(str(c), d) for c, d in zip(codes[a:b], kms[a:b])] for a, b in itertools.pairwise(bounds)]


def _knn(tree: Any, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest (ids, km) per point; ties at equal distance ordered by id (= code order)."""
    n = tree.data.shape[0]
    k_query = min(n, k + _TIE_SLACK)
    dist, ind = tree.query(points, k=k_query, return_distance=True, sort_results=True)
    order = np.lexsort((ind, dist), axis=1)
    ind = np.take_along_axis(ind, order, axis=1)[:, :k]
    dist = np.take_along_axis(dist, order, axis=1)[:, :k]
    return ind, radians_to_km(dist)


def _load_level(level_dir: Path, same_sklearn: bool, leaf_size: int, *, postal: bool = False) -> _Level:
    try:
        codes = np.load(level_dir / layout.CODES, allow_pickle=False)
        coords = np.load(level_dir / layout.COORDS, allow_pickle=False)
        fsa_ids = np.load(level_dir / layout.FSA_IDS, allow_pickle=False) if postal else None
        fsas = np.load(level_dir / layout.FSAS, allow_pickle=False) if postal else None
        points_file = level_dir / layout.FSA_POINTS
        fsa_points = np.load(points_file, allow_pickle=False) if postal and points_file.exists() else None
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read arrays in {level_dir}: {exc}") from exc
    if coords.ndim != 2 or coords.shape != (len(codes), 2):
        raise IndexCorrupt(f"{level_dir}: {len(codes)} codes but coords of shape {coords.shape}")
    if same_sklearn:
        tree = _unpickle_tree(level_dir / layout.TREE)
    else:  # a pickle from another scikit-learn may not load, or load wrong: rebuild instead
        from sklearn.neighbors import BallTree

        tree = BallTree(coords, metric="haversine", leaf_size=leaf_size)
    return _Level(codes=codes, coords=coords, tree=tree, fsa_ids=fsa_ids, fsas=fsas, fsa_points=fsa_points)


def _unpickle_tree(path: Path) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except IndexCorrupt:
        raise
    except Exception as exc:  # any failure to unpickle means the file is not what we wrote
        raise IndexCorrupt(f"cannot load {path}: {exc}") from exc


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__
