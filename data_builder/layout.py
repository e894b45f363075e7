"""The on-disk layout of an index root, and the file operations that keep it consistent.

    <root>/CURRENT              names the live version
    <root>/.lock                held by a builder while it writes
    <root>/v-<hash>/manifest.json, codes.npy, coords.npy, tree.pkl
    <root>/v-<hash>/postal/codes.npy, coords.npy, fsa_ids.npy, fsas.npy, fsa_points.npy,
                              cluster_members.npy, cluster_bounds.npy, cluster_reach.npy, tree.pkl

Standard library only: both the builder and the query side use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from data_builder.errors import IndexCorrupt

CURRENT = "CURRENT"
LOCK = ".lock"
MANIFEST = "manifest.json"
VERSION_PREFIX = "v-"
TMP_PREFIX = ".tmp-"
POSTAL_DIR = "postal"

CODES = "codes.npy"
COORDS = "coords.npy"
TREE = "tree.pkl"
FSA_IDS = "fsa_ids.npy"
FSAS = "fsas.npy"
FSA_POINTS = "fsa_points.npy"
CLUSTER_MEMBERS = "cluster_members.npy"
CLUSTER_BOUNDS = "cluster_bounds.npy"
CLUSTER_REACH = "cluster_reach.npy"

#: Bumped when the layout or the meaning of a file changes; part of every version hash.
FORMAT_VERSION = 3
#: Versions kept after a build (the live one is never pruned).
KEEP_VERSIONS = 3


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and directory below ``path`` (and ``path`` itself)."""
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def read_current(root: Path) -> str | None:
    """The live version named by ``CURRENT``, or None when there is none."""
    try:
        name = (root / CURRENT).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorrupt(f"cannot read {root / CURRENT}: {exc}") from exc
    return name or None


def write_current(root: Path, version: str) -> None:
    """Replace ``CURRENT`` atomically: a reader sees the old name or the new, never a mix."""
    tmp = root / f"{TMP_PREFIX}{CURRENT}-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(VERSION_PREFIX))


@contextlib.contextmanager
def exclusive_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/.lock`` so two builders never interleave (flock works on EFS/NFSv4)."""
    with open(root / LOCK, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
