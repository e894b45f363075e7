"""Coverage mode on the full index: a point near a postal code resolves to its own FSA."""

from __future__ import annotations

import random

import pytest

SAMPLE = 1000
MOVE_KM = 0.150
RADIUS_KM = 2.5


@pytest.fixture(scope="module")
def moved_points(full_index, postal_csv, dest):
    """1,000 seeded random postal codes the index kept, each moved 150 m in a random bearing."""
    rng = random.Random(20240611)
    picked = []
    for code, lat, lon in rng.sample(postal_csv, SAMPLE * 2):
        located = full_index.locate_postal_code(code)
        if located is None or located.method != "postal_code":
            continue  # dropped by validation (far_from_fsa, placeholder_point, ...)
        assert (located.lat, located.lon) == pytest.approx((lat, lon), abs=1e-9)
        picked.append((code, *dest(lat, lon, rng.uniform(0, 360), MOVE_KM)))
        if len(picked) == SAMPLE:
            break
    assert len(picked) == SAMPLE
    return picked


def test_moved_points_really_moved_150_m(moved_points, postal_csv, haversine):
    where = {code: (lat, lon) for code, lat, lon in postal_csv}
    for code, lat, lon in moved_points[:50]:
        assert haversine(*where[code], lat, lon) == pytest.approx(MOVE_KM, abs=1e-6)


def test_coverage_mode_finds_the_own_fsa(full_index, moved_points):
    lats = [p[1] for p in moved_points]
    lons = [p[2] for p in moved_points]
    rates = {}
    for mode in ("coverage", "centroid"):
        within = full_index.within(lats, lons, RADIUS_KM, mode)
        resolved = full_index.resolve(lats, lons, RADIUS_KM, mode)
        assert len(within) == len(resolved) == SAMPLE
        assert all(resolved), "resolve never returns an empty list"
        hits = sum(code[:3] in {m.code for m in r} for (code, _, _), r in zip(moved_points, resolved))
        empty = sum(not w for w in within)
        rates[mode] = (hits / SAMPLE, empty / SAMPLE)
        print(f"\n{mode:>8}: own FSA in resolve({RADIUS_KM} km) {hits / SAMPLE:.1%}; within empty {empty / SAMPLE:.1%}")
        if mode == "coverage":
            # The own postal code is 150 m away, so its FSA is within the radius at <= 150 m.
            for (code, _, _), w in zip(moved_points, within):
                own = [m for m in w if m.code == code[:3]]
                assert own and own[0].km <= MOVE_KM + 1e-6, code
    assert rates["coverage"][0] >= 0.98
    assert rates["coverage"][1] == 0
    assert rates["coverage"][0] >= rates["centroid"][0]


def test_fsas_without_centroid_are_found_in_coverage_mode_only(full_build, full_index, postal_csv):
    _root, result = full_build
    orphans = result.levels["postal"]["fsas_without_centroid"]
    assert orphans == full_index.manifest["levels"]["postal"]["fsas_without_centroid"]
    assert len(orphans) == 13
    assert {"J5N", "V7Z"} <= set(orphans)
    centroids = set(full_index.fsa_codes.tolist())
    assert not set(orphans) & centroids

    first_code = {}
    for code, lat, lon in postal_csv:
        fsa = code[:3]
        if fsa in orphans and fsa not in first_code:
            located = full_index.locate_postal_code(code)
            if located is not None and located.method == "postal_code":
                first_code[fsa] = (lat, lon)
    assert set(first_code) == set(orphans)

    for fsa, (lat, lon) in sorted(first_code.items()):
        [coverage] = full_index.resolve(lat, lon, RADIUS_KM, "coverage")
        own = [m for m in coverage if m.code == fsa]
        assert own and own[0].km == pytest.approx(0, abs=1e-6), (fsa, coverage)
        [centroid_within] = full_index.within(lat, lon, RADIUS_KM, "centroid")
        [centroid_resolved] = full_index.resolve(lat, lon, RADIUS_KM, "centroid")
        assert fsa not in {m.code for m in centroid_within}
        assert fsa not in {m.code for m in centroid_resolved}
        assert centroid_resolved  # it resolves to some other FSA instead
        # Named on its own ("FSA J5N"), it is placed where its postal codes are.
        located = full_index.locate_fsa(fsa)
        assert located is not None and full_index.resolve(located.lat, located.lon, RADIUS_KM, "coverage")[0]


@pytest.mark.parametrize("mode", ["coverage", "centroid"])
def test_batch_equals_single_calls(full_index, moved_points, mode):
    points = moved_points[:200]
    lats = [p[1] for p in points]
    lons = [p[2] for p in points]
    batch = full_index.resolve(lats, lons, RADIUS_KM, mode)
    single = [full_index.resolve(lat, lon, RADIUS_KM, mode)[0] for lat, lon in zip(lats, lons)]
    assert batch == single
    assert full_index.within(lats, lons, RADIUS_KM, mode) == [
        full_index.within(lat, lon, RADIUS_KM, mode)[0] for lat, lon in zip(lats, lons)
    ]
    if mode == "centroid":
        assert full_index.nearest(lats, lons, 3) == [full_index.nearest(lat, lon, 3)[0] for lat, lon in zip(lats, lons)]
