"""Opening a damaged or tampered index fails safely; bad query inputs are refused clearly."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from data_builder.errors import IndexCorrupt, IndexMissing
from data_builder.index import FsaIndex


class WritesAFile:
    """Unpickling this opens ``path`` for writing: it creates the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def version_dir(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def load_manifest(root: Path) -> dict:
    return json.loads((version_dir(root) / "manifest.json").read_text())


def save_manifest(root: Path, manifest: dict) -> None:
    (version_dir(root) / "manifest.json").write_text(json.dumps(manifest))


def fix_sha(root: Path, rel: str) -> None:
    """Do what an attacker with write access would: make the manifest match the new file."""
    manifest = load_manifest(root)
    manifest["files"][rel] = hashlib.sha256((version_dir(root) / rel).read_bytes()).hexdigest()
    save_manifest(root, manifest)


def answers(index: FsaIndex) -> list:
    lats, lons = [45.0, 45.31, 46.0, 45.5], [-76.0, -75.52, -75.0, -75.8]
    return [
        index.within(lats, lons, 5.0, "centroid"),
        index.within(lats, lons, 5.0, "coverage"),
        index.resolve(lats, lons),
        index.nearest(lats, lons, 3),
        index.locate_postal_code("A0A 0A1"),
    ]


def test_small_index_answers(small_index, small_sources, haversine):
    index = FsaIndex.open(small_index)
    assert index.has_postal and index.default_mode == "coverage"
    assert index.manifest["levels"]["postal"]["fsas_without_centroid"] == [small_sources.orphan]
    code, lat, lon = small_sources.fsa_rows[0]
    [nearest] = index.nearest(float(lat), float(lon), 2)
    assert nearest[0] == (code, pytest.approx(0, abs=1e-9))
    clat, clon = map(float, small_sources.fsa_rows[1][1:])
    assert nearest[1].km == pytest.approx(haversine(float(lat), float(lon), clat, clon), abs=1e-6)


# --------------------------------------------------------------------- tampered pickle


def test_payload_really_writes_a_file(tmp_path):
    """Sanity check of the attack itself: an ordinary unpickler would create the file."""
    target = tmp_path / "pwned-sanity"
    pickle.loads(pickle.dumps(WritesAFile(target))).close()
    assert target.exists()


@pytest.mark.parametrize("rel", ["tree.pkl", "postal/tree.pkl"])
@pytest.mark.parametrize("fix_manifest", [False, True], ids=["sha-stale", "sha-updated"])
def test_malicious_tree_pickle_is_never_loaded(small_index, tmp_path, rel, fix_manifest):
    target = tmp_path / "pwned"
    (version_dir(small_index) / rel).write_bytes(pickle.dumps(WritesAFile(target)))
    if fix_manifest:
        fix_sha(small_index, rel)
    with pytest.raises(IndexCorrupt, match="sha256" if not fix_manifest else "not allowed"):
        FsaIndex.open(small_index)
    assert not target.exists()


def test_garbage_tree_pickle_with_matching_sha_is_corrupt(small_index):
    (version_dir(small_index) / "tree.pkl").write_bytes(b"\x80\x05garbage, not a pickle")
    fix_sha(small_index, "tree.pkl")
    with pytest.raises(IndexCorrupt, match=r"tree\.pkl"):
        FsaIndex.open(small_index)


# --------------------------------------------------------------------- damaged files


def test_missing_file(small_index):
    (version_dir(small_index) / "postal" / "fsas.npy").unlink()
    with pytest.raises(IndexCorrupt, match=r"fsas\.npy is missing"):
        FsaIndex.open(small_index)


def test_truncated_codes_npy(small_index):
    path = version_dir(small_index) / "codes.npy"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(IndexCorrupt, match=r"codes\.npy does not match its sha256"):
        FsaIndex.open(small_index)
    # Even with the checksum "fixed" (or verification off) the short array is refused.
    fix_sha(small_index, "codes.npy")
    with pytest.raises(IndexCorrupt, match="cannot read arrays"):
        FsaIndex.open(small_index)
    with pytest.raises(IndexCorrupt, match="cannot read arrays"):
        FsaIndex.open(small_index, verify=False)


def test_coords_of_the_wrong_length(small_index):
    path = version_dir(small_index) / "coords.npy"
    np.save(path, np.load(path)[:-1])
    fix_sha(small_index, "coords.npy")
    with pytest.raises(IndexCorrupt, match="codes but coords of shape"):
        FsaIndex.open(small_index)


@pytest.mark.parametrize(
    ("rel", "damage", "message"),
    [
        ("postal/cluster_bounds.npy", lambda a: a[:-1], "clusters do not partition"),
        ("postal/cluster_members.npy", lambda a: a * 0 + 10**6, "clusters do not partition"),
        ("postal/fsa_ids.npy", lambda a: a + 1000, "FSA ids do not index"),
        ("postal/cluster_reach.npy", lambda a: np.append(a, 0.0), "clusters do not partition"),
    ],
    ids=["bounds-short", "members-out-of-range", "fsa-ids-out-of-range", "reach-long"],
)
def test_arrays_that_disagree_are_refused_even_with_matching_checksums(small_index, rel, damage, message):
    """A builder bug, not tampering: the arrays pass their checksums but do not fit together."""
    path = version_dir(small_index) / rel
    np.save(path, damage(np.load(path)))
    fix_sha(small_index, rel)
    with pytest.raises(IndexCorrupt, match=message):
        FsaIndex.open(small_index)


def test_tree_pkl_missing_without_verification(small_index):
    """Without the checksum pass a missing tree.pkl must still be IndexCorrupt, not an OSError.

    The same path is hit with verification on when a builder prunes the version between
    the checksum pass and the unpickling (see test_build_atomic's rollback race).
    """
    (version_dir(small_index) / "tree.pkl").unlink()
    with pytest.raises(IndexCorrupt):
        FsaIndex.open(small_index, verify=False)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00", b"[]", b'{"files": []}', b""],
    ids=["syntax", "not-utf8", "a-list", "files-not-a-dict", "empty"],
)
def test_invalid_manifest(small_index, content):
    (version_dir(small_index) / "manifest.json").write_bytes(content)
    with pytest.raises(IndexCorrupt, match=r"manifest\.json"):
        FsaIndex.open(small_index)


def test_missing_manifest(small_index):
    (version_dir(small_index) / "manifest.json").unlink()
    with pytest.raises(IndexCorrupt, match=r"has no manifest\.json"):
        FsaIndex.open(small_index)


def test_manifest_that_omits_a_required_file(small_index):
    manifest = load_manifest(small_index)
    del manifest["files"]["postal/tree.pkl"]
    save_manifest(small_index, manifest)
    with pytest.raises(IndexCorrupt, match=r"does not list postal/tree\.pkl"):
        FsaIndex.open(small_index)


def test_manifest_path_outside_the_index(small_index):
    manifest = load_manifest(small_index)
    manifest["files"]["../CURRENT"] = "0" * 64
    save_manifest(small_index, manifest)
    with pytest.raises(IndexCorrupt, match="outside the index"):
        FsaIndex.open(small_index)


@pytest.mark.parametrize(
    "patch",
    [{"libraries": None}, {"libraries": []}, {"levels": None}, {"leaf_size": "forty"}],
    ids=["libraries-null", "libraries-list", "levels-null", "leaf-size-text"],
)
def test_manifest_of_the_wrong_shape_is_corrupt(small_index, patch):
    """A manifest that is valid JSON but not what the builder writes is corrupt, not a crash."""
    manifest = load_manifest(small_index)
    manifest.update(patch)
    save_manifest(small_index, manifest)
    with pytest.raises(IndexCorrupt):
        FsaIndex.open(small_index)


def test_current_names_a_missing_version(small_index):
    (small_index / "CURRENT").write_text("v-000000000000\n")
    with pytest.raises(IndexMissing, match="names v-000000000000, which does not exist"):
        FsaIndex.open(small_index)


@pytest.mark.parametrize("case", ["no-root", "empty-root", "empty-current"])
def test_no_index(tmp_path, case):
    root = tmp_path / "idx"
    if case != "no-root":
        root.mkdir()
    if case == "empty-current":
        (root / "CURRENT").write_text("\n")
    with pytest.raises(IndexMissing, match="no index at"):
        FsaIndex.open(root)


# --------------------------------------------------------------------- other scikit-learn


@pytest.mark.parametrize("payload", ["garbage", "malicious"])
def test_other_sklearn_version_rebuilds_the_tree_from_arrays(small_index, tmp_path, payload):
    expected = answers(FsaIndex.open(small_index))
    target = tmp_path / "pwned"
    for rel in ("tree.pkl", "postal/tree.pkl"):
        data = b"garbage bytes, not a pickle" if payload == "garbage" else pickle.dumps(WritesAFile(target))
        (version_dir(small_index) / rel).write_bytes(data)
        fix_sha(small_index, rel)
    # With the same scikit-learn the pickles would be loaded, and are refused ...
    with pytest.raises(IndexCorrupt):
        FsaIndex.open(small_index)
    # ... with another scikit-learn they are never read: the trees come from the arrays.
    manifest = load_manifest(small_index)
    manifest["libraries"]["scikit-learn"] = "0.0.1"
    save_manifest(small_index, manifest)
    index = FsaIndex.open(small_index)
    assert answers(index) == expected
    assert not target.exists()


# --------------------------------------------------------------------- bad query input


@pytest.fixture
def index(small_index) -> FsaIndex:
    return FsaIndex.open(small_index)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda ix: ix.resolve(float("nan"), -75.0), ("latitude", "nan", "position 0")),
        (lambda ix: ix.within(45.0, float("inf")), ("longitude", "inf")),
        (lambda ix: ix.resolve(91, -75.0), ("latitude", "91.0")),
        (lambda ix: ix.resolve(-90.5, -75.0), ("latitude", "-90.5")),
        (lambda ix: ix.nearest(45.0, -181), ("longitude", "-181.0")),
        (lambda ix: ix.resolve([45.0, 45.1, 95.0], [-75.0, -75.0, -75.0]), ("latitude", "95.0", "at position 2")),
        (lambda ix: ix.resolve([45.0, 45.1], [-75.0, -75.0, -75.2]), "shapes (2,) and (3,)"),
        (lambda ix: ix.within([[45.0]], [[-75.0]]), "shapes (1, 1) and (1, 1)"),
        (lambda ix: ix.resolve("abc", -75.0), "'abc'"),
        (lambda ix: ix.within(45.0, -75.0, radius_km=-1), "got -1"),
        (lambda ix: ix.resolve(45.0, -75.0, radius_km="far"), "'far'"),
        (lambda ix: ix.within(45.0, -75.0, radius_km=float("nan")), "got nan"),
        (lambda ix: ix.nearest(45.0, -75.0, k=0), "got 0"),
        (lambda ix: ix.nearest(45.0, -75.0, k=-3), "got -3"),
        (lambda ix: ix.nearest(45.0, -75.0, k=1.5), "got 1.5"),
        (lambda ix: ix.nearest(45.0, -75.0, k=True), "got True"),
        (lambda ix: ix.resolve(45.0, -75.0, mode="nearest"), "'nearest'"),
        (lambda ix: ix.within(45.0, -75.0, mode="COVERAGE"), "'COVERAGE'"),
    ],
)
def test_bad_query_input_names_the_value(index, call, needle):
    with pytest.raises(ValueError) as info:
        call(index)
    for part in (needle,) if isinstance(needle, str) else needle:
        assert part in str(info.value)
    assert not isinstance(info.value, IndexCorrupt | IndexMissing)


def test_bad_coordinate_message_shows_a_plain_number(index):
    """The message reaches users verbatim (CLI: ``error: ...``): no numpy repr in it."""
    with pytest.raises(ValueError) as info:
        index.resolve(95.0, -75.0)
    assert str(info.value).startswith("latitude 95.0 at position 0")


def test_coverage_needs_the_postal_level(small_fsa_index):
    index = FsaIndex.open(small_fsa_index)
    assert not index.has_postal and index.default_mode == "centroid"
    with pytest.raises(ValueError, match="'coverage'"):
        index.within(45.0, -76.0, 2.5, "coverage")
    with pytest.raises(ValueError, match="'coverage'"):
        index.resolve(45.0, -76.0, mode="coverage")
    # The default mode works, and postal codes fall back to the FSA centroid.
    assert index.resolve(45.0, -76.0)[0][0].code == "A0A"
    assert index.locate_postal_code("a0a 0a1") == (45.0, -76.0, "fsa_centroid", "A0A 0A1")


def test_edge_coordinates_are_accepted(index):
    for lat, lon in [(90, 180), (-90, -180), (0, 0)]:
        [matches] = index.resolve(lat, lon)
        assert len(matches) == 1 and matches[0].km > 1000
