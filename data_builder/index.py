"""Open an index and answer batch queries. numpy + scikit-learn only: never pandas.

The worker imports this module on its cold start, so it stays small and lazy.
"""

from __future__ import annotations

import gc
import io
import itertools
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from data_builder import layout
from data_builder.clusters import Clusters
from data_builder.codes import is_fsa, normalize_postal_code
from data_builder.errors import IndexCorrupt, IndexMissing
from data_builder.geo import as_points, as_radius, chord, chord_to_km, km_to_chord, unit_vectors

Mode = Literal["centroid", "coverage"]
MODES: tuple[Mode, ...] = ("centroid", "coverage")
DEFAULT_RADIUS_KM = 2.5
#: Extra neighbours fetched so that ties at the k-th distance break by code, not tree order.
_TIE_SLACK = 8
#: Points answered per step: bounds the (points x FSAs) scratch array to about 14 MB.
_CHUNK = 1024
#: Slack for rounding (chord units, about 6 micrometres): between the tree's distances and
#: numpy's, and at the radius itself, so a posting exactly on a code is within 0 km of it.
_EPS = 1e-12

# The only globals a BallTree pickle written by this project refers to. Anything else in a
# pickle (os.system, builtins.open, ...) is refused before it can run.
_PICKLE_ALLOWED = {
    ("sklearn.neighbors._ball_tree", "BallTree"),
    ("sklearn.neighbors._ball_tree", "newObj"),
    ("sklearn.metrics._dist_metrics", "newObj"),
    ("sklearn.metrics._dist_metrics", "EuclideanDistance64"),
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
    """One level: its points, and a tree over the representatives of its clusters."""

    codes: np.ndarray  # sorted; FSA level: '<U3'; postal level: 'S6' without the space
    coords: np.ndarray  # (n, 2) latitude, longitude in radians
    tree: Any  # sklearn.neighbors.BallTree over the unit vectors of clusters.representatives
    clusters: Clusters
    names: np.ndarray  # what a match is called: the FSA codes this level answers with
    name_ids: np.ndarray  # per point, its index into ``names``
    fsa_points: np.ndarray | None = None  # postal level: per name, the median of its postal codes

    def __post_init__(self) -> None:
        self.rep_names = self.name_ids[self.clusters.representatives]
        self.cluster_sizes = np.diff(self.clusters.bounds)
        self.max_reach = float(self.clusters.reach.max()) if len(self.clusters.reach) else 0.0


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
        postal_files = (
            layout.CODES,
            layout.COORDS,
            layout.TREE,
            layout.FSA_IDS,
            layout.FSAS,
            layout.FSA_POINTS,
            layout.CLUSTER_MEMBERS,
            layout.CLUSTER_BOUNDS,
            layout.CLUSTER_REACH,
        )
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
        ids, km = _knn(self._fsa, unit_vectors(points), min(int(k), len(self._fsa.codes)))
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
        out = self._within(points, radius, mode)
        # A non-empty set already starts with the nearest FSA (sorted by distance, then code).
        empty = [i for i, matches in enumerate(out) if not matches]
        if empty:
            for i, near in zip(empty, self._nearest_one(points[empty], mode)):
                out[i] = [near]
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
            j = int(np.searchsorted(postal.names, fsa))
            if j < len(postal.names) and postal.names[j] == fsa:
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
        xyz = unit_vectors(points)
        point_ids, name_ids, distance = _closest_per_name(level, xyz, np.full(len(xyz), float(km_to_chord(radius_km))))
        return _group(len(points), point_ids, name_ids, chord_to_km(distance), level.names)

    def _nearest_one(self, points: np.ndarray, mode: Mode) -> list[Match]:
        """Per point, the FSA of the nearest point of the level (ties: the lower code)."""
        level = self._level_for(mode)
        xyz = unit_vectors(points)
        # The nearest representative is a real point, so the nearest point is no farther:
        # every point of the level within that distance decides the answer exactly.
        nearest_rep, _ = level.tree.query(xyz, k=1, return_distance=True)
        point_ids, name_ids, distance = _closest_per_name(level, xyz, nearest_rep[:, 0] + _EPS)
        grouped = _group(len(points), point_ids, name_ids, chord_to_km(distance), level.names)
        return [matches[0] for matches in grouped]

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
    # Tens of thousands of small tuples would trigger the cyclic collector again and again,
    # doubling the time; none of them can form a cycle.
    collecting = gc.isenabled()
    gc.disable()
    try:
        rows = list(map(Match._make, zip(names[ids].tolist(), km.tolist())))
        return [rows[a:b] for a, b in itertools.pairwise(bounds)]
    finally:
        if collecting:
            gc.enable()


def _closest_per_name(level: _Level, xyz: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, ...]:
    """(point id, name id, chord) for every name with a point within ``radius`` (chord, per
    query point) of a query point, at the distance of its closest such point. Exact.

    The tree holds one representative per cluster. A cluster can hold a point within the
    radius only if its representative is within radius + reach; and it can hold a point
    closer than the best found for its name only if distance - reach is below that best.
    Only those clusters are opened, so a dense city costs a few clusters per FSA."""
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    # Neighbouring points in the same step share their FSAs, which keeps the scratch small.
    order = _spatial_order(xyz)
    for start in range(0, len(xyz), _CHUNK):
        ids = order[start : start + _CHUNK]
        pid, name, distance = _closest_in_step(level, xyz[ids], radius[ids])
        out.append((ids[pid], name, distance))
    if not out:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp), np.empty(0)
    return tuple(np.concatenate(parts) for parts in zip(*out))


def _closest_in_step(level: _Level, p: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    clusters = level.clusters
    found, dist = level.tree.query_radius(p, r + level.max_reach + _EPS, return_distance=True)
    counts = np.fromiter((len(f) for f in found), dtype=np.int64, count=len(found))
    pid = np.repeat(np.arange(len(p)), counts)
    cluster, d = np.concatenate(found), np.concatenate(dist)
    # Number the names this step meets 0..m-1: the scratch is points x m, not x all FSAs.
    names = level.rep_names[cluster]
    present = np.bincount(names, minlength=len(level.names)) > 0
    step_names = np.flatnonzero(present)
    local = np.cumsum(present) - 1
    key = pid * len(step_names) + local[names]
    best = np.full(len(p) * len(step_names), np.inf)
    np.minimum.at(best, key, d)
    # Open a cluster only if a member could beat both the best so far and the radius.
    multi = np.flatnonzero(clusters.reach[cluster] > 0)
    lower = d[multi] - clusters.reach[cluster[multi]]
    opened = multi[lower < np.minimum(best[key[multi]], r[pid[multi]]) + _EPS]
    if len(opened):
        starts, sizes = clusters.bounds[cluster[opened]], level.cluster_sizes[cluster[opened]]
        offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        members = clusters.members[np.repeat(starts, sizes) + offsets]
        member_d = chord(p[np.repeat(pid[opened], sizes)], unit_vectors(level.coords[members]))
        np.minimum.at(best, np.repeat(key[opened], sizes), member_d)
    best = best.reshape(len(p), len(step_names))
    hit_pid, hit_name = np.nonzero(best <= r[:, None] + _EPS)
    return hit_pid, step_names[hit_name], best[hit_pid, hit_name]


def _spatial_order(xyz: np.ndarray) -> np.ndarray:
    """Points ordered along 0.5-degree bands of latitude, then by longitude."""
    band = np.floor(np.degrees(np.arcsin(np.clip(xyz[:, 2], -1, 1))) * 2)
    return np.lexsort((np.arctan2(xyz[:, 1], xyz[:, 0]), band))


def _knn(level: _Level, xyz: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest (ids, km) per point of a level of single-point clusters; ties at equal
    distance ordered by id (= code order)."""
    k_query = min(len(level.rep_names), k + _TIE_SLACK)
    dist, ind = level.tree.query(xyz, k=k_query, return_distance=True)
    order = np.lexsort((ind, dist), axis=1)
    ind = np.take_along_axis(ind, order, axis=1)[:, :k]
    dist = np.take_along_axis(dist, order, axis=1)[:, :k]
    return level.clusters.representatives[ind], chord_to_km(dist)


def _load_level(level_dir: Path, same_sklearn: bool, leaf_size: int, *, postal: bool = False) -> _Level:
    def array(name: str) -> np.ndarray:
        return np.load(level_dir / name, allow_pickle=False)

    try:
        codes, coords = array(layout.CODES), array(layout.COORDS)
        if postal:
            names, name_ids, fsa_points = array(layout.FSAS), array(layout.FSA_IDS), array(layout.FSA_POINTS)
            clusters = Clusters(
                array(layout.CLUSTER_MEMBERS), array(layout.CLUSTER_BOUNDS), array(layout.CLUSTER_REACH)
            )
        else:
            names, name_ids, fsa_points = codes, np.arange(len(codes)), None
            clusters = Clusters.singletons(len(codes))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read arrays in {level_dir}: {exc}") from exc
    _check_shapes(level_dir, codes, coords, names, name_ids, clusters)
    if same_sklearn:
        tree = _unpickle_tree(level_dir / layout.TREE)
    else:  # a pickle from another scikit-learn may not load, or load wrong: rebuild instead
        from sklearn.neighbors import BallTree

        tree = BallTree(unit_vectors(coords[clusters.representatives]), leaf_size=leaf_size)
    if tree.data.shape != (len(clusters.reach), 3):
        raise IndexCorrupt(f"{level_dir}: the tree holds {tree.data.shape} points, not {len(clusters.reach)} clusters")
    return _Level(codes, coords, tree, clusters, names, name_ids, fsa_points)


def _check_shapes(
    level_dir: Path, codes: np.ndarray, coords: np.ndarray, names: np.ndarray, name_ids: np.ndarray, clusters: Clusters
) -> None:
    """Arrays that passed their checksums can still disagree if a builder had a bug: refuse
    them here rather than index out of bounds mid-query."""
    n = len(codes)
    if coords.ndim != 2 or coords.shape != (n, 2):
        raise IndexCorrupt(f"{level_dir}: {n} codes but coords of shape {coords.shape}")
    if name_ids.shape != (n,) or (n and not 0 <= name_ids.min() <= name_ids.max() < len(names)):
        raise IndexCorrupt(f"{level_dir}: FSA ids do not index its {len(names)} FSAs")
    members, bounds, reach = clusters
    if (
        members.shape != (n,)
        or bounds.shape != (len(reach) + 1,)
        or (len(bounds) and (bounds[0] != 0 or bounds[-1] != n or np.any(np.diff(bounds) < 1)))
        or (n and not 0 <= members.min() <= members.max() < n)
    ):
        raise IndexCorrupt(f"{level_dir}: clusters do not partition its {n} points")


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
