"""Group postal codes into small same-FSA clusters, so the tree holds clusters, not codes.

A city posting has about a thousand postal codes within 2.5 km, but only a few dozen FSAs.
The postal-level tree therefore holds one representative code per cluster (the codes of
one FSA in one grid cell), and each cluster records its *reach*: the straight-line distance
from its representative to its farthest member. A query finds clusters by their
representative and opens only those whose reach could hold a closer code than already
found (``data_builder.index``), so answers stay exact: the distance to the closest code.

numpy only: built by the loader, read by the worker.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from data_builder.geo import EARTH_RADIUS_KM, chord, unit_vectors

#: Grid cell edge. Larger cells mean fewer tree points but more members to open per query;
#: 0.2 km was fastest for 10,000 real postings at the 2.5 km default (see docs/benchmarks.md).
CELL_KM = 0.2


class Clusters(NamedTuple):
    members: np.ndarray  # point ids grouped by cluster; each cluster's representative first
    bounds: np.ndarray  # cluster c holds members[bounds[c]:bounds[c + 1]]
    reach: np.ndarray  # per cluster, chord from its representative to its farthest member

    @property
    def representatives(self) -> np.ndarray:
        return self.members[self.bounds[:-1]]

    @classmethod
    def singletons(cls, n: int) -> Clusters:
        """Every point its own cluster (the FSA-centroid level)."""
        return cls(np.arange(n, dtype=np.int32), np.arange(n + 1, dtype=np.int64), np.zeros(n))


def grid_clusters(coords: np.ndarray, group_ids: np.ndarray, cell_km: float = CELL_KM) -> Clusters:
    """Cluster points of the same group (FSA) that fall in the same ``cell_km`` grid cell.

    ``coords`` are (lat, lon) radians. The representative is the member nearest the
    cluster's mean, a real postal code, so a distance to it is a true distance."""
    lat, lon = coords[:, 0], coords[:, 1]
    row = np.floor(lat * EARTH_RADIUS_KM / cell_km)
    # Columns are measured along each row's middle latitude, so every cell is a true square.
    row_cos = np.cos((row + 0.5) * cell_km / EARTH_RADIUS_KM)
    col = np.floor(lon * row_cos * EARTH_RADIUS_KM / cell_km)
    cell = np.column_stack([group_ids, row, col]).astype(np.int64)
    cell -= cell.min(axis=0, initial=0)
    key = np.ravel_multi_index(cell.T, tuple(cell.max(axis=0, initial=0) + 1))
    _, cluster = np.unique(key, return_inverse=True)
    n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(n_clusters + 1))
    sizes = np.diff(bounds)
    xyz = unit_vectors(coords)[order]
    mean = np.add.reduceat(xyz, bounds[:-1], axis=0) / sizes[:, None] if n_clusters else np.empty((0, 3))
    to_mean = chord(xyz, np.repeat(mean, sizes, axis=0))
    # The member nearest the mean moves to the front of its cluster (ties: lowest point id).
    ranked = np.lexsort((order, to_mean, np.repeat(np.arange(n_clusters), sizes)))
    members = order[ranked]
    rep_xyz = np.repeat(unit_vectors(coords[members[bounds[:-1]]]), sizes, axis=0)
    spread = chord(unit_vectors(coords[members]), rep_xyz)
    reach = np.maximum.reduceat(spread, bounds[:-1]) if n_clusters else np.empty(0)
    return Clusters(members.astype(np.int32), bounds.astype(np.int64), reach)
