"""The clustered postal level: the clusters partition the codes, and answers stay exact.

Coverage mode searches one representative per (FSA, 200 m cell) cluster and opens a cluster
only when its reach says a member could be closer. These tests compare every answer with a
brute-force haversine over every postal code the index holds.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_builder.clusters import CELL_KM, Clusters, grid_clusters
from data_builder.geo import EARTH_RADIUS_KM, chord, chord_to_km, km_to_chord, unit_vectors

RNG_SEED = 20261125


def brute_force(index, lat: float, lon: float) -> np.ndarray:
    """km from (lat, lon) to the closest postal code of every FSA, with numpy haversine."""
    postal = index._postal
    p1, l1 = np.radians(lat), np.radians(lon)
    c = postal.coords
    h = np.sin((c[:, 0] - p1) / 2) ** 2 + np.cos(p1) * np.cos(c[:, 0]) * np.sin((c[:, 1] - l1) / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(h))
    best = np.full(len(postal.names), np.inf)
    np.minimum.at(best, postal.name_ids, km)
    return best


@pytest.fixture(scope="module")
def query_points(full_index):
    """Postal codes (where postings cluster: cities), some moved a little, plus random rural points."""
    rng = np.random.default_rng(RNG_SEED)
    coords = np.degrees(full_index._postal.coords[rng.choice(len(full_index._postal.codes), 60, replace=False)])
    moved = coords + rng.normal(0, 0.01, coords.shape)
    rural = np.column_stack([rng.uniform(44, 60, 20), rng.uniform(-125, -65, 20)])
    return np.vstack([coords, moved, rural])


def test_clusters_partition_the_points_by_fsa_and_cell():
    rng = np.random.default_rng(1)
    coords = np.radians(np.column_stack([rng.uniform(43.64, 43.65, 3000), rng.uniform(-79.40, -79.38, 3000)]))
    groups = rng.integers(0, 5, 3000)
    clusters = grid_clusters(coords, groups)
    members, bounds, reach = clusters
    assert sorted(members.tolist()) == list(range(3000))
    assert bounds[0] == 0 and bounds[-1] == 3000 and np.all(np.diff(bounds) >= 1)
    xyz = unit_vectors(coords)
    for c in range(len(reach)):
        group = members[bounds[c] : bounds[c + 1]]
        assert len(set(groups[group].tolist())) == 1, "a cluster mixes FSAs"
        rep = np.repeat(xyz[group[:1]], len(group), axis=0)
        assert reach[c] == pytest.approx(chord(rep, xyz[group]).max(), abs=1e-15)
    # A cell is CELL_KM square, so no member is farther from its representative than the diagonal.
    assert chord_to_km(reach.max()) <= CELL_KM * np.sqrt(2) + 1e-6
    # 3,000 points of 5 FSAs on about 1.1 x 1.6 km, so at most 5 x 7 x 10 cells
    # (a 1.1 km span can touch 7 cells of 0.2 km).
    assert len(reach) <= 5 * 7 * 10 < 3000


def test_singletons_are_the_identity():
    members, bounds, reach = Clusters.singletons(4)
    assert members.tolist() == [0, 1, 2, 3] and bounds.tolist() == [0, 1, 2, 3, 4] and not reach.any()


def test_the_index_stores_far_fewer_clusters_than_codes(full_index):
    postal = full_index._postal
    assert len(postal.clusters.reach) < len(postal.codes) / 2
    assert full_index.manifest["cluster_km"] == CELL_KM


@pytest.mark.parametrize("radius_km", [0.0, 0.3, 2.5, 10.0])
def test_coverage_equals_brute_force_over_every_postal_code(full_index, query_points, radius_km):
    within = full_index.within(query_points[:, 0], query_points[:, 1], radius_km, mode="coverage")
    resolved = full_index.resolve(query_points[:, 0], query_points[:, 1], radius_km, mode="coverage")
    names = full_index._postal.names
    for (lat, lon), got, res in zip(query_points, within, resolved, strict=True):
        best = brute_force(full_index, lat, lon)
        # Within a micrometre of the radius, rounding may decide either way (query points here
        # sit exactly on postal codes); everywhere else the sets must be equal.
        surely_in = {str(names[j]) for j in np.flatnonzero(best <= radius_km - 1e-9)}
        maybe_in = {str(names[j]): best[j] for j in np.flatnonzero(best <= radius_km + 1e-9)}
        assert surely_in <= {m.code for m in got} <= set(maybe_in), (lat, lon)
        for m in got:
            assert m.km == pytest.approx(maybe_in[m.code], abs=1e-6)
        nearest = np.lexsort((np.arange(len(best)), best))[0]
        assert res[0].code == names[nearest] and res[0].km == pytest.approx(best[nearest], abs=1e-6)


def test_a_posting_exactly_on_a_code_finds_it_at_radius_zero(full_index):
    lat, lon = np.degrees(full_index._postal.coords[12345])
    [matches] = full_index.within(lat, lon, 0.0, mode="coverage")
    fsa = full_index._postal.codes[12345].decode()[:3]
    assert (fsa, 0.0) in [(m.code, m.km) for m in matches]


def test_chord_and_km_round_trip():
    km = np.array([0.0, 0.001, 2.5, 100.0, 5000.0])
    assert chord_to_km(km_to_chord(km)) == pytest.approx(km, abs=1e-9)
