"""Docker-free packaging of Python Lambda code and dependencies.

Dependencies are installed by pip as Linux wheels for the Lambda runtime and architecture,
trimmed of what Lambda never imports, cached by the hash of their inputs, and measured
against Lambda's unzipped size limit. No Docker, no AWS account.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import ILocalBundling

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "lambda-layers"
PYTHON_VERSION = "3.12"
MIB = 1024 * 1024
#: Bumped when the trimming below changes, so cached layers and asset hashes follow.
TRIM_VERSION = 3

# The Lambda Python runtime already carries these; a layer copy would only add ~90 MB.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
TRIM_DIR_NAMES = {"tests", "__pycache__"}
TRIM_SUFFIXES = (".pyc", ".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".hpp", ".pyi")
# Subpackages that neither function's code path imports: traced with `import sys` after the
# worker's imports, an index open and a query of both modes (scikit-learn 1.9, SciPy 1.17).
# 16 MB together; tests/test_lambda_bundle.py opens and queries an index in a trimmed layer.
UNUSED_SUBPACKAGES = (
    "scipy/cluster", "scipy/datasets", "scipy/differentiate", "scipy/fftpack", "scipy/io", "scipy/misc",
    "scipy/odr", "scipy/signal",
    "sklearn/cluster", "sklearn/datasets", "sklearn/ensemble", "sklearn/manifold", "sklearn/tree",
)  # fmt: skip


class BundlingError(RuntimeError):
    """Dependencies could not be installed, or the function is over its size budget."""


def pip_platforms(architecture: str) -> list[str]:
    """Wheel tags for Lambda's Python 3.12 (glibc 2.34): newest manylinux first."""
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[architecture]
    return [f"manylinux_2_28_{machine}", f"manylinux2014_{machine}"]


def layer_key(requirements: Path, architecture: str, python_version: str = PYTHON_VERSION) -> str:
    """The layer's asset hash: only its inputs, so two machines get the same template."""
    digest = hashlib.sha256()
    for part in (requirements.read_bytes(), architecture, python_version, *pip_platforms(architecture)):
        digest.update(part if isinstance(part, bytes) else part.encode())
    digest.update(f"trim-{TRIM_VERSION}".encode())
    return digest.hexdigest()


def source_key(paths: list[Path]) -> str:
    """Hash of every file (path and content) under ``paths``, caches excluded."""
    digest = hashlib.sha256()
    for file in sorted(source_files(paths)):
        digest.update(file.relative_to(REPO).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build_layer(
    requirements: Path,
    architecture: str,
    *,
    python_version: str = PYTHON_VERSION,
    cache: Path = CACHE,
    log: Any = print,
) -> Path:
    """Install ``requirements`` for Lambda into ``<cache>/<key>/python``; reuse it when cached."""
    key = layer_key(requirements, architecture, python_version)
    target = cache / key
    label = f"layer for {_shown(requirements)} ({architecture}, Python {python_version})"
    if (target / "python").is_dir():
        log(f"  {label}: cached")
        return target
    log(f"  {label}: pip install (first time: about a minute) ...")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=cache))
    try:
        _pip_install(requirements, architecture, python_version, work / "python")
        _trim(work / "python")
        stripped, kept = _strip(work / "python", architecture)
        log(f"  {label}: stripped {stripped} shared objects, kept {kept} that stripping would break")
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def copy_sources(paths: list[Path], output_dir: Path) -> None:
    for file in source_files(paths):
        dest = output_dir / file.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, dest)


@dataclass(frozen=True)
class SizeReport:
    name: str
    code_bytes: int
    layer_bytes: int
    budget_mb: float

    @property
    def total_mb(self) -> float:
        return (self.code_bytes + self.layer_bytes) / MIB

    def line(self) -> str:
        return (
            f"{self.name}: function {self.code_bytes / MIB:.1f} MB + layer {self.layer_bytes / MIB:.1f} MB"
            f" = {self.total_mb:.1f} MB unzipped (budget {self.budget_mb:g} MB)"
        )

    def check(self) -> None:
        if self.total_mb > self.budget_mb:
            raise BundlingError(
                f"{self.name}: function + layers are {self.total_mb:.1f} MB unzipped, over the "
                f"{self.budget_mb:g} MB budget; trim its requirements.txt"
            )


@jsii.implements(ILocalBundling)
class CopyDirectory:
    """Local bundling that copies an already prepared directory: the work (pip, trimming,
    the size gate) happens in plain Python first, so its errors are clean one-liners."""

    def __init__(self, prepare: Any):
        self._prepare = prepare

    def try_bundle(self, output_dir: str, options: Any) -> bool:
        self._prepare(Path(output_dir))
        return True


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def source_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        candidates = [path] if path.is_file() else path.rglob("*")
        files += [f for f in candidates if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"]
    return files


def _pip_install(requirements: Path, architecture: str, python_version: str, target: Path) -> None:
    platforms = [arg for p in pip_platforms(architecture) for arg in ("--platform", p)]
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--requirement", str(requirements), "--target", str(target), *platforms,
        "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp", "--no-compile",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
        raise BundlingError(
            f"pip could not install {_shown(requirements)} for Lambda ({architecture}, "
            f"Python {python_version}): {detail[0] if detail else 'exit ' + str(done.returncode)}"
        )


def _trim(site: Path) -> None:
    for name in RUNTIME_PROVIDED:
        shutil.rmtree(site / name, ignore_errors=True)
        for info in site.glob(f"{name}-*.dist-info"):
            shutil.rmtree(info, ignore_errors=True)
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in TRIM_DIR_NAMES:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.suffix in TRIM_SUFFIXES:
            path.unlink()
    shutil.rmtree(site / "bin", ignore_errors=True)
    for subpackage in UNUSED_SUBPACKAGES:
        shutil.rmtree(site / subpackage, ignore_errors=True)


def strip_tool(architecture: str) -> str | None:
    """GNU strip for the target architecture, else llvm-strip, else None (no stripping)."""
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[architecture]
    native = ["strip"] if platform.machine() == machine else []
    for name in [*native, f"{machine}-linux-gnu-strip", "llvm-strip"]:
        if path := shutil.which(name):
            return path
    return None


def load_segments_aligned(path: Path) -> bool:
    """Whether every LOAD segment of a 64-bit little-endian ELF file keeps offset and address
    congruent modulo its alignment. Strip tools can break that on objects patchelf touched
    (auditwheel's), and the loader then refuses them: 'ELF load command ... not page-aligned'."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return True
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, _filesz, _memsz, p_align = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize
        )
        if p_type == 1 and p_align > 1 and (p_vaddr - p_offset) % p_align:
            return False
    return True


def _strip(site: Path, architecture: str) -> tuple[int, int]:
    """Strip each shared object, keeping the original wherever the result would not load."""
    tool = strip_tool(architecture)
    if tool is None:
        return 0, 0
    stripped = kept = 0
    for obj in sorted(site.rglob("*.so*")):
        if not obj.is_file() or obj.is_symlink():
            continue
        out = obj.with_name(obj.name + ".stripped")
        done = subprocess.run([tool, "--strip-unneeded", "-o", str(out), str(obj)], capture_output=True, check=False)
        if done.returncode == 0 and load_segments_aligned(out) and out.stat().st_size <= obj.stat().st_size:
            os.replace(out, obj)
            stripped += 1
        else:
            out.unlink(missing_ok=True)
            kept += 1
    return stripped, kept


def copy_tree(source: Path, output_dir: Path) -> None:
    shutil.copytree(source, output_dir, dirs_exist_ok=True, symlinks=True)
