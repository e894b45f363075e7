"""Known places on the full index, and distances checked against an independent haversine."""

from __future__ import annotations

from collections import defaultdict

import pytest

from data_builder.geo import EARTH_RADIUS_KM

CN_TOWER = (43.6426, -79.3871)
PARLIAMENT_HILL = (45.4236, -75.7009)
RURAL_SASKATCHEWAN = (51.0, -106.0)
IQALUIT = (63.7467, -68.5170)
PLACES = [CN_TOWER, PARLIAMENT_HILL, RURAL_SASKATCHEWAN, IQALUIT]

ONE_METRE_KM = 0.001


def codes(matches):
    return [m.code for m in matches]


def test_earth_radius_is_the_mean_radius():
    assert EARTH_RADIUS_KM == 6371.0088


def test_full_build_summary(full_build, full_index):
    root, result = full_build
    assert result.status == "built"
    assert full_index.version == result.version == (root / "CURRENT").read_text().strip()
    assert full_index.has_postal and full_index.default_mode == "coverage"
    fsa = result.levels["fsa"]
    assert (fsa["rows_in"], fsa["rows"], fsa["dropped"]) == (1651, 1650, {"outside_canada": 1})
    assert "H0H" not in set(full_index.fsa_codes.tolist())
    assert result.levels["postal"]["rows_in"] == 891_910


def test_cn_tower_resolves_to_m5v_first(full_index):
    [matches] = full_index.resolve(*CN_TOWER, radius_km=2.5, mode="coverage")
    assert matches[0].code == "M5V"
    assert all(m.km <= 2.5 for m in matches)


@pytest.mark.parametrize("mode", ["centroid", "coverage"])
def test_parliament_hill_includes_k1a(full_index, mode):
    [within] = full_index.within(*PARLIAMENT_HILL, radius_km=2.5, mode=mode)
    assert "K1A" in codes(within)
    [resolved] = full_index.resolve(*PARLIAMENT_HILL, radius_km=2.5, mode=mode)
    assert "K1A" in codes(resolved)


@pytest.mark.parametrize("mode", ["centroid", "coverage"])
def test_rural_saskatchewan_has_nothing_within_but_resolves_to_one_fsa(full_index, mode):
    assert full_index.within(*RURAL_SASKATCHEWAN, radius_km=2.5, mode=mode) == [[]]
    [resolved] = full_index.resolve(*RURAL_SASKATCHEWAN, radius_km=2.5, mode=mode)
    assert len(resolved) == 1
    assert resolved[0].code.startswith("S")
    assert resolved[0].km > 2.5


def test_iqaluit_resolves_to_x0a(full_index):
    [matches] = full_index.resolve(*IQALUIT, radius_km=2.5, mode="coverage")
    assert matches[0].code == "X0A"


@pytest.mark.parametrize("place", PLACES)
def test_centroid_mode_matches_brute_force_haversine(full_index, centroids_csv, haversine, place):
    """within(centroid) == every centroid (read with csv) whose haversine distance <= radius."""
    radius = 2.5
    lat, lon = place
    expected = {}
    for code, (clat, clon) in centroids_csv.items():
        if code == "H0H":  # Santa's placeholder at the North Pole is dropped by the build
            continue
        d = haversine(lat, lon, clat, clon)
        assert abs(d - radius) > ONE_METRE_KM, f"{code} is within 1 m of the radius: ambiguous fixture"
        if d <= radius:
            expected[code] = d
    [matches] = full_index.within(lat, lon, radius_km=radius, mode="centroid")
    assert set(codes(matches)) == set(expected)
    for m in matches:
        assert m.km == pytest.approx(expected[m.code], abs=ONE_METRE_KM)
    assert [(m.km, m.code) for m in matches] == sorted((m.km, m.code) for m in matches)


@pytest.mark.parametrize("place", PLACES)
def test_nearest_five_match_brute_force(full_index, centroids_csv, haversine, place):
    lat, lon = place
    ranked = sorted(
        (haversine(lat, lon, clat, clon), code) for code, (clat, clon) in centroids_csv.items() if code != "H0H"
    )
    [nearest] = full_index.nearest(lat, lon, k=5)
    assert codes(nearest) == [code for _d, code in ranked[:5]]
    for m, (d, _code) in zip(nearest, ranked[:5], strict=True):
        assert m.km == pytest.approx(d, abs=ONE_METRE_KM)


def test_coverage_distances_are_to_the_closest_postal_code(full_index, haversine):
    """In coverage mode each FSA's distance is that of its closest kept postal code."""
    [matches] = full_index.within(*CN_TOWER, radius_km=0.5, mode="coverage")
    assert matches
    for m in matches:
        assert 0 <= m.km <= 0.5
    [wider] = full_index.within(*CN_TOWER, radius_km=2.5, mode="coverage")
    # Growing the radius adds FSAs but never changes the distance of the ones already found.
    assert {m.code: m.km for m in wider if m.code in codes(matches)} == {m.code: m.km for m in matches}


def test_shared_centroids_come_out_in_code_order(full_index, centroids_csv):
    groups = defaultdict(list)
    for code, point in centroids_csv.items():
        groups[point].append(code)
    shared = {point: sorted(cs) for point, cs in groups.items() if len(cs) > 1}
    assert shared[(43.6492, -79.3823)] == ["M5L", "M5X"]
    for (lat, lon), group in shared.items():
        [nearest] = full_index.nearest(lat, lon, k=len(group))
        assert codes(nearest) == group
        assert all(m.km == pytest.approx(0, abs=1e-9) for m in nearest)
        [within] = full_index.within(lat, lon, radius_km=0.01, mode="centroid")
        assert codes(within) == group


def test_ties_are_deterministic_near_the_cn_tower(full_index):
    [matches] = full_index.within(*CN_TOWER, radius_km=2.5, mode="centroid")
    m5l, m5x = codes(matches).index("M5L"), codes(matches).index("M5X")
    assert m5x == m5l + 1
    assert matches[m5l].km == matches[m5x].km
    # Same answer on repetition and inside a batch, at any position.
    lats, lons = [PARLIAMENT_HILL[0], CN_TOWER[0]] * 3, [PARLIAMENT_HILL[1], CN_TOWER[1]] * 3
    batch = full_index.within(lats, lons, radius_km=2.5, mode="centroid")
    assert all(b == matches for b in batch[1::2])
    assert full_index.within(*CN_TOWER, radius_km=2.5, mode="centroid") == [matches]
