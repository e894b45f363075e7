"""Docker-free Lambda packaging with real pip: the size gate, and a trimmed layer still works.

These install wheels from the package index (small ones; pip's cache makes reruns quick).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_logs as logs

from data_builder.index import FsaIndex
from stacks.constructs import lambda_bundle as bundle
from stacks.constructs.python_function import PythonFunction

REPO = bundle.REPO


def test_requirements_over_the_budget_fail_synth_with_the_measured_size(tmp_path, capsys):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n")
    app = cdk.App(outdir=str(tmp_path / "cdk.out"))  # bundles every stack, as `cdk synth` does
    stack = cdk.Stack(app, "Budget")
    with pytest.raises(bundle.BundlingError) as err:
        PythonFunction(
            stack,
            "TooBig",
            name="loader",
            handler="lambda_src.loader.handler.handler",
            architecture="x86_64",
            memory_mb=128,
            timeout=cdk.Duration.seconds(10),
            log_retention=logs.RetentionDays.ONE_DAY,
            size_budget_mb=0.01,
            description="size gate test",
            requirements=requirements,
        )
    message = str(err.value)
    assert message.startswith("loader: function + layers are ")
    assert "over the 0.01 MB budget" in message
    measured = float(message.split(" are ")[1].split(" MB")[0])
    assert 0.01 < measured < 5  # six plus the function's own sources
    assert "unzipped (budget 0.01 MB)" in capsys.readouterr().out


def test_a_missing_package_is_a_clear_pip_error(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==0.0.0.0\n")
    with pytest.raises(bundle.BundlingError, match=r"pip could not install requirements.txt for Lambda \(arm64"):
        bundle.build_layer(requirements, "arm64", cache=tmp_path / "cache", log=lambda _m: None)


def test_trimmed_and_stripped_layer_opens_and_queries_a_real_index(tmp_path, small_index):
    """The worker's numpy and scikit-learn as x86_64 wheels, trimmed and stripped exactly as
    for Lambda, but for this machine's Python (the Lambda runtime's 3.12 is not installed
    here) so they can be imported: the index code opens an index and answers both modes."""
    pins = [line for line in (REPO / "lambda_src" / "worker" / "requirements.txt").read_text().splitlines()
            if line.startswith(("numpy==", "scikit-learn=="))]  # fmt: skip
    assert len(pins) == 2
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(pins) + "\n")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    layer = bundle.build_layer(requirements, "x86_64", python_version=python, cache=tmp_path, log=lambda _m: None)
    site = layer / "python"
    assert not list(site.rglob("tests")), "test directories were not trimmed"
    assert not list(site.rglob("__pycache__"))
    assert not (site / "botocore").exists()
    for subpackage in bundle.UNUSED_SUBPACKAGES:
        assert not (site / subpackage).exists(), subpackage

    probe = (
        "import json, sys, numpy\n"
        "from data_builder.index import FsaIndex\n"
        f"assert numpy.__file__.startswith({str(site)!r}), numpy.__file__\n"
        f"ix = FsaIndex.open({str(small_index)!r})\n"
        "lat, lon = [43.70, 43.64, 50.0], [-79.40, -79.38, -100.0]\n"
        "print(json.dumps([ix.resolve(lat, lon, 2.5, mode) for mode in ('coverage', 'centroid')]))\n"
        "assert 'pandas' not in sys.modules\n"
    )
    base_python = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run(
        [base_python, "-s", "-c", probe],
        env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    index = FsaIndex.open(small_index)
    lat, lon = [43.70, 43.64, 50.0], [-79.40, -79.38, -100.0]
    expected = [index.resolve(lat, lon, 2.5, mode) for mode in ("coverage", "centroid")]
    assert json.loads(done.stdout) == json.loads(json.dumps(expected))
    # Stripping really happened: no shared object keeps a symbol table.
    sample = next(site.glob("numpy/_core/_multiarray_umath*.so"))
    assert ".symtab" not in subprocess.run(["readelf", "-S", str(sample)], capture_output=True, text=True).stdout


def test_layer_key_depends_only_on_inputs(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("numpy==2.4.6\n")
    b.write_text("numpy==2.4.6\n")
    assert bundle.layer_key(a, "arm64") == bundle.layer_key(b, "arm64")
    assert bundle.layer_key(a, "arm64") != bundle.layer_key(a, "x86_64")
    b.write_text("numpy==2.4.5\n")
    assert bundle.layer_key(a, "arm64") != bundle.layer_key(b, "arm64")


def test_source_key_ignores_caches_but_not_code(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "REPO", tmp_path)
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "mod.py").write_text("x = 1\n")
    first = bundle.source_key([pkg])
    (pkg / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"junk")
    assert bundle.source_key([pkg]) == first
    (pkg / "mod.py").write_text("x = 2\n")
    assert bundle.source_key([pkg]) != first


def test_code_asset_holds_only_what_the_function_imports(tmp_path):
    out = tmp_path / "out"
    sources = [bundle.REPO / "lambda_src" / "__init__.py", bundle.REPO / "lambda_src" / "loader"]
    bundle.copy_sources(sources, out)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert "lambda_src/loader/handler.py" in files
    assert not any("__pycache__" in f or f.startswith(("tests/", "lambda_src/local/")) for f in files)
    assert Path(out / "lambda_src" / "__init__.py").is_file()


def _elf_with_load(offset: int, vaddr: int, align: int) -> bytes:
    """A minimal 64-bit little-endian ELF header plus one PT_LOAD program header."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 1, 5, offset, vaddr, vaddr, 0x100, 0x100, align)
    return bytes(header) + phdr


@pytest.mark.parametrize(
    ("offset", "vaddr", "align", "loads"),
    [(0x2B000, 0x2B000, 0x1000, True), (0x2A5E0, 0x2B000, 0x1000, False), (0x10, 0x10010, 0x10000, True)],
)
def test_misaligned_load_segments_are_detected(tmp_path, offset, vaddr, align, loads):
    obj = tmp_path / "lib.so"
    obj.write_bytes(_elf_with_load(offset, vaddr, align))
    assert bundle.load_segments_aligned(obj) is loads
