"""Versioned builds: idempotence, activation, pruning, stale temp dirs, and real concurrency."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from data_builder import layout
from data_builder.build import build
from data_builder.errors import DatasetError
from data_builder.index import FsaIndex, verify_version

# fork: children share the already-imported numpy/pandas/scikit-learn, so they start fast.
CTX = mp.get_context("fork")


def quiet(_message: str) -> None:
    pass


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: relative path -> (mtime_ns, sha256)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = (
                path.stat().st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return out


def current(root: Path) -> str:
    return (root / "CURRENT").read_text().strip()


def dataset(synth, path: Path, n: int = 12, *, variant: int = 0, first: str = "KLM") -> Path:
    """A small FSA dataset; ``variant`` moves one centroid so the content (and version) differs."""
    rows = synth.fsa_rows(n, first=first)
    code, lat, lon = rows[-1]
    rows[-1] = (code, f"{float(lat) + variant * 0.001:.4f}", lon)
    return synth.write_csv(path, rows)


def test_same_input_twice_is_unchanged(tmp_path, synth):
    root = tmp_path / "idx"
    src = dataset(synth, tmp_path / "a.csv")
    first = build(root, src, progress=quiet)
    assert first.status == "built" and first.pruned == []
    before = snapshot(root)
    time.sleep(0.01)
    messages = []
    second = build(root, src, progress=messages.append)
    assert second.status == "unchanged"
    assert second.version == first.version and second.path == first.path
    assert second.levels == first.levels
    assert any("already live" in m for m in messages)
    assert snapshot(root) == before
    # The version is a function of the content, not of the file's name or the root.
    copy = tmp_path / "renamed.csv"
    copy.write_bytes(src.read_bytes())
    assert build(tmp_path / "other", copy, progress=quiet).version == first.version


def test_changed_dataset_makes_a_new_live_version_and_keeps_the_old(tmp_path, synth):
    root = tmp_path / "idx"
    a = build(root, dataset(synth, tmp_path / "a.csv", variant=0), progress=quiet)
    b = build(root, dataset(synth, tmp_path / "b.csv", variant=1), progress=quiet)
    assert b.status == "built" and b.version != a.version
    assert current(root) == b.version
    assert layout.versions(root) == sorted([a.version, b.version])
    verify_version(a.path)  # the old version is intact
    assert FsaIndex.open(root).version == b.version


def test_only_three_versions_are_kept(tmp_path, synth):
    root = tmp_path / "idx"
    results = []
    for i in range(5):
        results.append(build(root, dataset(synth, tmp_path / f"d{i}.csv", variant=i), progress=quiet))
        time.sleep(0.01)  # distinct directory mtimes
    versions = [r.version for r in results]
    assert len(set(versions)) == 5 and all(r.status == "built" for r in results)
    assert current(root) == versions[4]
    assert layout.versions(root) == sorted(versions[2:])
    assert [r.pruned for r in results] == [[], [], [], [versions[0]], [versions[1]]]
    for v in versions[2:]:
        verify_version(root / v)

    # An older dataset still on disk is activated, not rebuilt.
    again = build(root, tmp_path / "d3.csv", progress=quiet)
    assert (again.status, again.version) == ("activated", versions[3])
    assert current(root) == versions[3] and FsaIndex.open(root).version == versions[3]
    assert layout.versions(root) == sorted(versions[2:])

    # A pruned dataset is built again, under the same version name; the live one is kept.
    rebuilt = build(root, tmp_path / "d0.csv", progress=quiet)
    assert (rebuilt.status, rebuilt.version) == ("built", versions[0])
    assert current(root) == versions[0]
    remaining = layout.versions(root)
    assert len(remaining) == 3 and versions[0] in remaining


def test_a_corrupt_version_is_rebuilt(tmp_path, synth):
    root = tmp_path / "idx"
    a = build(root, dataset(synth, tmp_path / "a.csv"), progress=quiet)
    build(root, dataset(synth, tmp_path / "b.csv", variant=1), progress=quiet)
    (a.path / "codes.npy").write_bytes(b"truncated")
    again = build(root, tmp_path / "a.csv", progress=quiet)
    assert again.status == "built" and again.version == a.version
    verify_version(a.path)
    assert FsaIndex.open(root).version == a.version


def test_stale_temp_dirs_are_removed(tmp_path, synth):
    root = tmp_path / "idx"
    src = dataset(synth, tmp_path / "a.csv")
    build(root, src, progress=quiet)
    stale_dir = root / ".tmp-v-0123456789ab-4242"
    (stale_dir / "postal").mkdir(parents=True)
    (stale_dir / "codes.npy").write_bytes(b"half written")
    stale_file = root / ".tmp-CURRENT-4242"
    stale_file.write_text("v-0123456789ab\n")
    result = build(root, src, progress=quiet)  # even a no-op build cleans up
    assert result.status == "unchanged"
    assert not stale_dir.exists() and not stale_file.exists()
    assert sorted(p.name for p in root.iterdir()) == sorted([".lock", "CURRENT", result.version])


def test_a_failed_build_leaves_the_live_version_alone(tmp_path, synth):
    root = tmp_path / "idx"
    good = build(root, dataset(synth, tmp_path / "a.csv"), progress=quiet)
    before = snapshot(root)
    bad = synth.write_csv(tmp_path / "bad.csv", [("D1A", "45", "-75"), ("K1A", "abc", "-75")])
    with pytest.raises(DatasetError):
        build(root, bad, progress=quiet)
    assert snapshot(root) == before
    assert FsaIndex.open(root).version == good.version


# --------------------------------------------------------------------- concurrency
#
# Dataset family A puts FSA K1A on PROBE, family B puts M5V there; every other FSA is the
# same. A reader's answer at PROBE therefore says which dataset it opened, and a partial
# index shows up as an error, a wrong FSA count or an unknown answer.

PROBE = (45.0, -76.0)
FAMILY_FSA = {"A": "K1A", "B": "M5V"}


def family_dataset(synth, path: Path, family: str, variant: int) -> Path:
    rows = synth.fsa_rows(30, lat0=45.3, lon0=-76.0, first="ABCEG")
    rows.append((FAMILY_FSA[family], f"{PROBE[0]:.4f}", f"{PROBE[1]:.4f}"))
    # A far-away FSA that moves with each variant, so every build is a new version.
    rows.append(("X0E", f"{62.0 + variant * 0.001:.4f}", "-114.0000"))
    return synth.write_csv(path, rows)


def _builder(root: str, sources: list[str], start, results) -> None:
    start.wait()
    errors, statuses = [], []
    try:
        for src in sources:
            result = build(root, src, progress=quiet)
            statuses.append((Path(src).name, result.status))
    except BaseException as exc:
        errors.append(f"builder: {type(exc).__name__}: {exc}")
    results.put(("builder", statuses, errors))


def _reader(root: str, start, stop, results) -> None:
    """Open and query until told to stop; report (opens, failures, answers seen) once."""
    start.wait()
    opens, failures, answers = 0, [], set()
    while True:
        last = stop.is_set()
        try:
            index = FsaIndex.open(root)
            [matches] = index.resolve(*PROBE, radius_km=0.5, mode="centroid")
            answer = tuple(m.code for m in matches)
            if answer not in {("K1A",), ("M5V",)} or len(index.fsa_codes) != 32:
                failures.append(f"reader: partial index {index.version}: {answer}, {len(index.fsa_codes)} FSAs")
            answers.add(answer[0] if answer else "")
            opens += 1
        except BaseException as exc:
            failures.append(f"reader: {type(exc).__name__}: {exc}")
        if last:
            break
    results.put(
        (
            "reader",
            opens,
            failures[:5] + ([f"... {len(failures)} in all"] if len(failures) > 5 else []),
            sorted(answers),
        )
    )


def _run(root: Path, builder_sources: list[list[Path]], timeout: float = 60) -> list[tuple]:
    start, stop, results = CTX.Event(), CTX.Event(), CTX.Queue()
    builders = [
        CTX.Process(target=_builder, args=(str(root), [str(s) for s in srcs], start, results))
        for srcs in builder_sources
    ]
    reader = CTX.Process(target=_reader, args=(str(root), start, stop, results))
    for p in [*builders, reader]:
        p.start()
    start.set()
    deadline = time.monotonic() + timeout
    for p in builders:
        p.join(max(0.1, deadline - time.monotonic()))
    stop.set()
    reader.join(max(0.1, deadline - time.monotonic()))
    alive = [p for p in [*builders, reader] if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a builder or the reader hung (lock never released?)"
    assert all(p.exitcode == 0 for p in [*builders, reader])
    return [results.get(timeout=5) for _ in range(len(builders) + 1)]


def test_reader_never_sees_a_partial_index_while_two_builders_run(tmp_path, synth):
    root = tmp_path / "idx"
    n = 15
    a = [family_dataset(synth, tmp_path / f"a{i}.csv", "A", i) for i in range(n)]
    b = [family_dataset(synth, tmp_path / f"b{i}.csv", "B", i) for i in range(n)]
    build(root, a[0], progress=quiet)
    # Builder 1 alternates the families; builder 2 does the same in the opposite phase.
    # Every dataset is new, so each build writes, flips CURRENT and prunes.
    alternating_1 = [a[i] if i % 2 else b[i] for i in range(1, n)]
    alternating_2 = [b[i] if i % 2 else a[i] for i in range(1, n)]
    results = _run(root, [alternating_1, alternating_2])
    assert [r[2] for r in results if r[0] == "builder"] == [[], []]
    [(_, opens, failures, answers)] = [r for r in results if r[0] == "reader"]
    print(f"\nreader opened the index {opens} times, saw {answers}")
    assert failures == []
    assert opens >= 10
    assert answers == ["K1A", "M5V"]  # the reader really raced the flips of CURRENT
    # Both builders finished: the final state is consistent and verifies.
    live = current(root)
    remaining = layout.versions(root)
    assert live in remaining and len(remaining) == 3
    for v in remaining:
        verify_version(root / v)
    assert not list(root.glob(".tmp-*"))
    final = FsaIndex.open(root)
    assert final.resolve(*PROBE, radius_km=0.5, mode="centroid")[0][0].code in {"K1A", "M5V"}


def test_two_builders_of_different_datasets_both_finish(tmp_path, synth):
    root = tmp_path / "idx"
    c = family_dataset(synth, tmp_path / "c.csv", "A", 99)
    a = family_dataset(synth, tmp_path / "a.csv", "A", 0)
    b = family_dataset(synth, tmp_path / "b.csv", "B", 0)
    vc = build(root, c, progress=quiet).version
    results = _run(root, [[a, b], [b, a]])
    builders = [r for r in results if r[0] == "builder"]
    assert [r[2] for r in builders] == [[], []]
    [(_, _opens, failures, _answers)] = [r for r in results if r[0] == "reader"]
    assert failures == []
    # Under the lock each dataset is built exactly once; the other builder finds it ready.
    statuses = sorted(s for r in builders for s in r[1])
    assert [s for s in statuses if s[1] == "built"] == [("a.csv", "built"), ("b.csv", "built")]
    assert all(status in ("activated", "unchanged") for name, status in statuses if status != "built")
    remaining = layout.versions(root)
    assert len(remaining) == 3 and vc in remaining and current(root) in remaining
    for v in remaining:
        verify_version(root / v)
    assert not list(root.glob(".tmp-*"))
    assert FsaIndex.open(root).version == current(root)


def _build_when_told(root: str, src: str, go, started, done) -> None:
    go.wait()
    started.set()
    build(root, src, progress=quiet)
    done.set()


def test_a_builder_waits_for_the_lock(tmp_path, synth):
    root = tmp_path / "idx"
    root.mkdir()
    src = dataset(synth, tmp_path / "a.csv")
    go, started, done = CTX.Event(), CTX.Event(), CTX.Event()
    # Fork before taking the lock: a child must not inherit the lock's open file description.
    proc = CTX.Process(target=_build_when_told, args=(str(root), str(src), go, started, done))
    proc.start()
    try:
        with layout.exclusive_lock(root):
            go.set()
            assert started.wait(10)
            assert not done.wait(1.0), "the build ran while another process held the lock"
            assert not (root / "CURRENT").exists()
        assert done.wait(30)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    assert FsaIndex.open(root).version == current(root)


# --------------------------------------------------------------------- rollback race


def _rollback_builder(root: str, by_version: dict[str, str], rounds: int, stop, results) -> None:
    """Alternately re-activate the oldest kept version (a rollback) and build a missing one."""
    errors = []
    try:
        for i in range(rounds):
            have, live = layout.versions(Path(root)), layout.read_current(Path(root))
            if i % 2 == 0:
                pick = min((v for v in have if v != live), key=lambda v: os.stat(os.path.join(root, v)).st_mtime_ns)
            else:
                pick = next(v for v in by_version if v not in have)
            build(root, by_version[pick], progress=quiet)
    except BaseException as exc:
        errors.append(f"builder: {type(exc).__name__}: {exc}")
    finally:
        stop.set()
        results.put(("builder", rounds, errors))


def _plain_reader(root: str, stop, results) -> None:
    opens, failures = 0, []
    while not stop.is_set():
        try:
            FsaIndex.open(root).resolve(*PROBE)
            opens += 1
        except BaseException as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    results.put(("reader", opens, failures))


def test_reader_survives_pruning_of_the_version_it_is_opening(tmp_path, synth):
    """After a rollback the live version is the oldest on disk, so the next build prunes the
    version readers were just told to open. They must retry with the new CURRENT, never fail.

    Probabilistic: ~60 such prunes race two readers; a fault shows up in practically every run.
    """
    root = tmp_path / "idx"
    by_version = {}
    for i in range(4):
        src = family_dataset(synth, tmp_path / f"r{i}.csv", "AB"[i % 2], i)
        by_version[build(root, src, progress=quiet).version] = str(src)
        time.sleep(0.01)
    stop, results = CTX.Event(), CTX.Queue()
    builder = CTX.Process(target=_rollback_builder, args=(str(root), by_version, 120, stop, results))
    readers = [CTX.Process(target=_plain_reader, args=(str(root), stop, results)) for _ in range(2)]
    for p in [*readers, builder]:
        p.start()
    out = [results.get(timeout=120) for _ in range(3)]
    for p in [builder, *readers]:
        p.join(10)
    assert [r[2] for r in out if r[0] == "builder"] == [[]]
    opens = [r[1] for r in out if r[0] == "reader"]
    failures = [f for r in out if r[0] == "reader" for f in r[2]]
    print(f"\nreaders opened {opens}; {len(failures)} failed")
    assert failures == [], f"{len(failures)} failed opens, e.g. {failures[:3]}"
