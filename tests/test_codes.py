"""Postal code and FSA shapes, and locating a posting by its postal code."""

from __future__ import annotations

import statistics

import pytest

from data_builder.codes import FIRST_LETTERS, OTHER_LETTERS, is_fsa, normalize_postal_code


@pytest.mark.parametrize("text", ["m5v3l9", "M5V-3L9", " M5V 3L9 ", "M5V 3L9", "m5V  3l9", "\tM5V\t3L9\n", "M5V - 3L9"])
def test_normalize_postal_code_spellings(text):
    assert normalize_postal_code(text) == "M5V 3L9"


@pytest.mark.parametrize(
    "text",
    [
        "D5V 3L9",  # D is never used
        "W5V 3L9",  # W is not a first letter
        "M5V 3D9",  # nor D in the LDU
        "M5V 3L",  # too short
        "M5V3L9X",  # too long
        "M5V 3L99",
        "5MV 3L9",  # letters and digits swapped
        "M5V_3L9",  # only spaces and a hyphen may separate the halves
        "M5V",  # an FSA alone
        "",
        "   ",
    ],
)
def test_normalize_postal_code_rejects(text):
    assert normalize_postal_code(text) is None


def test_letter_sets_match_canada_post():
    # Canada Post never uses D, F, I, O, Q or U; W and Z never start a postal code.
    assert set(FIRST_LETTERS) == set("ABCEGHJKLMNPRSTVXY")
    assert set(OTHER_LETTERS) == set("ABCEGHJKLMNPRSTVWXYZ")


@pytest.mark.parametrize("code", ["M5V", "K1A", "X0A", "H0H", "A1W", "T2Z"])
def test_is_fsa_accepts(code):
    assert is_fsa(code)


@pytest.mark.parametrize("code", ["D1A", "A1D", "W1A", "Z1A", "M5", "M5VX", "5MV", "M5V 3L9", "", "MMV", "M55"])
def test_is_fsa_rejects(code):
    assert not is_fsa(code)


def test_is_fsa_rejects_a_trailing_newline():
    """``$`` also matches before a final newline: FSA_RE must anchor with ``\\Z`` / fullmatch."""
    assert not is_fsa("M5V\n")


# --------------------------------------------------------------------- locate (full index)


def test_locate_known_postal_code(full_index, haversine):
    for spelling in ("M5V 3L9", "m5v3l9", "M5V-3L9"):
        located = full_index.locate_postal_code(spelling)
        assert located is not None
        assert located.method == "postal_code" and located.code == "M5V 3L9"
        assert haversine(located.lat, located.lon, 43.642, -79.386) < 0.2


def _median_of_fsa(postal_csv: list[tuple[str, float, float]], fsa: str) -> tuple[float, float]:
    points = [(lat, lon) for code, lat, lon in postal_csv if code.startswith(fsa)]
    return statistics.median(p[0] for p in points), statistics.median(p[1] for p in points)


def test_unknown_code_in_a_known_fsa_falls_back_to_where_its_fsa_is(full_index, postal_csv, haversine):
    for code in ("M5V 9Z9", "K1A 9Z9"):
        assert full_index.locate_postal_code(code.replace(" ", "")) is not None
        located = full_index.locate_postal_code(code)
        assert located.method == "fsa_centroid" and located.code == code
        # The median of the FSA's postal codes (the few dropped ones barely move it).
        assert haversine(located.lat, located.lon, *_median_of_fsa(postal_csv, code[:3])) < 0.5


def test_an_fsa_missing_from_the_centroid_table_is_placed_by_its_postal_codes(full_index, postal_csv, haversine):
    # J5N has postal codes but no centroid in the dataset.
    located = full_index.locate_postal_code("J5N 9Z9")
    assert located.method == "fsa_centroid"
    assert haversine(located.lat, located.lon, *_median_of_fsa(postal_csv, "J5N")) < 0.5
    assert full_index.resolve(located.lat, located.lon)[0][0].code == "J5N"
    # H0H's only code (the North Pole) was dropped, so Santa cannot be placed.
    assert full_index.locate_postal_code("H0H 0H0") is None


def test_locate_fsa_prefers_where_the_fsa_is_over_a_distant_centroid(full_index, centroids_csv, haversine):
    # GeoNames puts T2P (downtown Calgary) 26 km from its own postal codes.
    located = full_index.locate_fsa(" t2p ")
    assert located.method == "fsa_centroid" and located.code == "T2P"
    assert haversine(located.lat, located.lon, *centroids_csv["T2P"]) > 20
    assert full_index.resolve(located.lat, located.lon)[0][0].code == "T2P"
    assert full_index.locate_fsa("D5V") is None


def test_locate_fsa_without_the_postal_level_is_the_dataset_centroid(small_fsa_index, small_sources):
    from data_builder.index import FsaIndex

    code, lat, lon = small_sources.fsa_rows[0]
    located = FsaIndex.open(small_fsa_index).locate_fsa(code)
    assert located is not None and located.method == "fsa_centroid"
    assert (located.lat, located.lon) == pytest.approx((float(lat), float(lon)), abs=1e-9)


@pytest.mark.parametrize("text", ["hello", "", "M5V", "M5V 3L", "D5V 3L9", "12345", "M5V 3L9 extra"])
def test_garbage_is_none(full_index, text):
    assert full_index.locate_postal_code(text) is None
