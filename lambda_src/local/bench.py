"""``make bench``: speed and size, measured side by side with their baselines, in one run.

Prints one JSON object per measure (name, value, unit, baseline, ratio, target, ok), then a
table; writes docs/benchmarks.md and docs/benchmarks.png. Medians of several runs; the
targets are ratios measured in the same run (the machine is noisy), except size budgets.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
DOCS = REPO / "docs"
LOADER_TIMEOUT_S = 5 * 60  # cdk.json loader_timeout_minutes default
# Peak RSS of the measuring child, from its own address space (VmHWM, in kB). Not ru_maxrss:
# Linux carries that across exec, so a child would report its parent's peak at fork time.
PEAK_RSS_MB = "[int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')][0] / 1024"


@dataclass
class Measure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = "report"
    ok: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.baseline / self.value if self.unit in ("s", "ms") else self.value / self.baseline

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        out["value"] = round(float(self.value), 4)
        out["ok"] = None if self.ok is None else bool(self.ok)
        out["baseline"] = None if self.baseline is None else round(self.baseline, 4)
        return out


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter at the repo root; return its stdout."""
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO).stdout


def fresh_process_seconds(code: str, runs: int, env: dict[str, str] | None = None) -> float:
    command = [sys.executable, "-c", code]
    return median_time(lambda: subprocess.run(command, check=True, env=env, cwd=REPO), runs)


# ------------------------------------------------------------------------------ measures


def bench_build(root: Path) -> list[Measure]:
    say("index build: both levels from the committed data ...")
    code = (
        "import json, sys\n"
        "from data_builder.build import build\n"
        f"r = build({str(root)!r}, {str(DATA / 'fsa_centroids.csv')!r}, {str(DATA / 'postal_codes.csv.gz')!r},"
        " level='postal', progress=lambda m: None)\n"
        "print(json.dumps({'seconds': r.seconds,"
        f" 'rss_mb': {PEAK_RSS_MB}}}))\n"
    )
    result = json.loads(run_child(code))
    return [
        Measure(
            "index_build",
            result["seconds"],
            "s",
            LOADER_TIMEOUT_S,
            "loader timeout",
            "<= 25% of timeout",
            result["seconds"] <= 0.25 * LOADER_TIMEOUT_S,
        ),
        Measure("index_build_peak_rss", result["rss_mb"], "MB"),
    ]


def bench_cold_start(root: Path, runs: int) -> list[Measure]:
    say("worker cold start: fresh processes ...")
    worker = (
        "import lambda_src.worker.handler\n"
        "from data_builder.index import FsaIndex\n"
        f"ix = FsaIndex.open({str(root)!r})\n"
        "ix.resolve(43.6426, -79.3871)\n"
    )
    bare = fresh_process_seconds("import sklearn.neighbors", runs)
    cold = fresh_process_seconds(worker, runs)
    return [Measure("worker_cold_start", cold, "s", bare, "import sklearn.neighbors", "<= 1.3x baseline",
                    cold <= 1.3 * bare)]  # fmt: skip


def bench_open(root: Path, runs: int) -> list[Measure]:
    from data_builder.index import FsaIndex

    say("index open: both levels with sha256 verification ...")
    version_dir = root / (root / "CURRENT").read_text().strip()
    mb_read = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file()) / 1e6
    dropped = _drop_page_cache()
    seconds = median_time(lambda: FsaIndex.open(root), runs)
    note = "cold page cache" if dropped else "warm page cache (could not drop caches)"
    return [
        Measure("index_open", seconds * 1000, "ms", None, note, "<= 300 ms", seconds <= 0.3),
        Measure("index_open_mb_read", mb_read, "MB"),
    ]


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def sample_points(n: int, seed: int, move_m: float = 0.0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` real postal-code points (seeded), each moved ``move_m`` metres on a random bearing."""
    import csv
    import gzip

    with gzip.open(DATA / "postal_codes.csv.gz", "rt") as fh:
        rows = [(r[0], float(r[1]), float(r[2])) for r in csv.reader(fh) if r[0] != "code"]
    rng = np.random.default_rng(seed)
    picks = [rows[i] for i in rng.choice(len(rows), size=n * 2, replace=False)]
    picks = [p for p in picks if 41.6 <= p[1] <= 83.2][:n]
    lat, lon = np.radians([p[1] for p in picks]), np.radians([p[2] for p in picks])
    if move_m:
        d = move_m / 1000 / 6371.0088
        bearing = rng.uniform(0, 2 * np.pi, len(picks))
        lat2 = np.arcsin(np.sin(lat) * np.cos(d) + np.cos(lat) * np.sin(d) * np.cos(bearing))
        lon = lon + np.arctan2(np.sin(bearing) * np.sin(d) * np.cos(lat), np.cos(d) - np.sin(lat) * np.sin(lat2))
        lat = lat2
    return np.degrees(lat), np.degrees(lon), [p[0] for p in picks]


def brute_force_centroids(index: Any, lat: np.ndarray, lon: np.ndarray, radius_km: float) -> list[np.ndarray]:
    """The baseline: vectorised numpy haversine from every point to every FSA centroid."""
    c = index._fsa.coords  # radians
    p1, l1 = np.radians(lat)[:, None], np.radians(lon)[:, None]
    a = np.sin((c[:, 0] - p1) / 2) ** 2 + np.cos(p1) * np.cos(c[:, 0]) * np.sin((c[:, 1] - l1) / 2) ** 2
    km = 2 * 6371.0088 * np.arcsin(np.sqrt(a))
    return [np.flatnonzero(row <= radius_km) for row in km]


def bench_resolve(index: Any, runs: int) -> list[Measure]:
    say("batch resolve: 10,000 postings, both modes ...")
    lat, lon, _ = sample_points(10_000, seed=7)
    out = []
    brute = median_time(lambda: brute_force_centroids(index, lat, lon, 2.5), runs)
    for mode in ("centroid", "coverage"):
        batch = median_time(lambda m=mode: index.resolve(lat, lon, 2.5, m), runs)
        one_by_one = median_time(lambda m=mode: [index.resolve(a, b, 2.5, m) for a, b in zip(lat, lon)], 1)
        out.append(Measure(f"resolve_batch_vs_per_posting_{mode}", batch, "s", one_by_one,
                           "one resolve call per posting", ">= 3x", one_by_one / batch >= 3))  # fmt: skip
        out.append(Measure(f"resolve_batch_vs_brute_force_{mode}", batch, "s", brute,
                           "numpy haversine over all FSA centroids", ">= 3x", brute / batch >= 3))  # fmt: skip
    return out


def bench_quality(index: Any) -> list[Measure]:
    say("matching quality: 2,000 seeded postal-code points moved 150 m ...")
    lat, lon, codes = sample_points(2_000, seed=11, move_m=150)
    out = []
    for mode in ("coverage", "centroid"):
        resolved = index.resolve(lat, lon, 2.5, mode)
        within = index.within(lat, lon, 2.5, mode)
        hit = np.mean([code[:3] in {m.code for m in r} for code, r in zip(codes, resolved)]) * 100
        empty = np.mean([not w for w in within]) * 100
        target_hit, target_empty = (">= 98%", "0%") if mode == "coverage" else ("report", "report")
        out.append(Measure(f"quality_own_fsa_found_{mode}", hit, "%", None, "", target_hit,
                           hit >= 98 if mode == "coverage" else None))  # fmt: skip
        out.append(Measure(f"quality_empty_radius_set_{mode}", empty, "%", None, "", target_empty,
                           empty == 0 if mode == "coverage" else None))  # fmt: skip
    return out


def bench_publish(runs: int) -> list[Measure]:
    """1,000 alerts through the worker's PublishBatch path vs one Publish each, on moto."""
    import boto3

    from data_builder.index import Match
    from lambda_src.local.aws_resources import create_worker_resources
    from lambda_src.worker.alerts import Alert
    from lambda_src.worker.locate import Location
    from lambda_src.worker.postings import Posting
    from lambda_src.worker.publish import Publisher

    say("publish throughput: 1,000 alerts on the local moto server ...")
    alerts = [
        Alert(Posting("bench", f"p{i}", f"posting {i}"), Location(43.64, -79.39, "coordinates", ""),
              [Match("M5V", 0.1), Match("M5J", 0.2)])
        for i in range(1000)
    ]  # fmt: skip
    res = create_worker_resources({"m5v": ["M5V"]}, prefix=f"bench{time.time_ns() % 10**6}")
    sns, sqs = boto3.client("sns"), boto3.client("sqs")

    def message(a: Alert) -> str:
        return a.message(radius_km=2.5, mode="coverage", index_version="bench")

    publisher = Publisher(sns, sqs, topic_arn=res.topic_arn, dlq_url=res.dlq_url, message=message)
    batched = median_time(lambda: publisher.publish(alerts), min(runs, 3))
    single = median_time(
        lambda: [sns.publish(TopicArn=res.topic_arn, Message=message(a), MessageAttributes=a.attributes())
                 for a in alerts], 1)  # fmt: skip
    return [Measure("publish_1000", batched, "s", single, "one Publish per posting", ">= 4x", single / batched >= 4)]


def bench_worker_run() -> list[Measure]:
    """The real handler over a 1,000-posting loopback feed on moto, with time per stage."""
    from lambda_src.local.aws_resources import create_worker_resources
    from lambda_src.local.context import LocalContext
    from lambda_src.local.feed_server import FeedServer
    from lambda_src.local.moto_env import patched_env
    from lambda_src.worker import cursors, dedup, handler, publish
    from lambda_src.worker.sources import json_feed

    say("worker run: 1,000 postings end to end ...")
    lat, lon, _ = sample_points(1000, seed=3)
    items = [{"id": f"w{i}", "text": f"posting {i}", "latitude": float(a), "longitude": float(b)}
             for i, (a, b) in enumerate(zip(lat, lon))]  # fmt: skip
    from data_builder.index import FsaIndex

    spent: dict[str, float] = {"fetch": 0.0, "resolve": 0.0, "publish": 0.0, "state": 0.0}
    patches = [
        (json_feed.JsonFeed, "fetch", "fetch"),
        (handler.Locator, "locate", "resolve"),
        (FsaIndex, "resolve", "resolve"),
        (publish.Publisher, "publish", "publish"),
        (dedup.Dedup, "claim", "state"),
        (dedup.Dedup, "complete", "state"),
        (cursors.CursorStore, "get", "state"),
        (cursors.CursorStore, "put", "state"),
    ]
    originals = []
    for cls, attr, stage in patches:
        original = getattr(cls, attr)
        originals.append((cls, attr, original))
        setattr(cls, attr, _timed(original, spent, stage))
    try:
        with FeedServer() as feeds, tempfile.TemporaryDirectory() as tmp:
            url = feeds.serve("/bench.json", json.dumps(items).encode())
            res = create_worker_resources({}, prefix=f"wrun{time.time_ns() % 10**6}")
            index_root = Path(tmp) / "index"
            _build_quietly(index_root)
            env = {**res.env(), "INDEX_ROOT": str(index_root), "POWERTOOLS_TRACE_DISABLED": "true",
                   "SOURCES": json.dumps([{"type": "json_feed", "name": "bench", "url": url}]),
                   "POWERTOOLS_LOG_LEVEL": "ERROR"}  # fmt: skip
            with patched_env(env), contextlib.redirect_stdout(io.StringIO()):
                started = time.perf_counter()
                summary = handler.handler({"id": "bench"}, LocalContext(timeout_s=900))
                seconds = time.perf_counter() - started
    finally:
        for cls, attr, original in originals:
            setattr(cls, attr, original)
    out = [Measure("worker_run_postings_per_s", summary["published"] / seconds, "postings/s")]
    out += [Measure(f"worker_run_share_{k}", 100 * v / seconds, "%") for k, v in spent.items()]
    return out


def _timed(fn: Callable[..., Any], spent: dict[str, float], stage: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[stage] += time.perf_counter() - started

    return wrapper


def _build_quietly(root: Path) -> None:
    from data_builder.build import build

    build(root, DATA / "fsa_centroids.csv", DATA / "postal_codes.csv.gz", level="postal", progress=lambda m: None)


def bench_sizes() -> list[Measure]:
    from stacks.constructs import lambda_bundle as bundle

    say("Lambda sizes: layers for arm64 and x86_64 (pip, cached after the first time) ...")
    targets = {"worker": 175, "loader": 215}
    out = []
    for name, budget in targets.items():
        requirements = REPO / "lambda_src" / name / "requirements.txt"
        sources = [REPO / "lambda_src" / "__init__.py", REPO / "lambda_src" / name, REPO / "lambda_src" / "shared",
                   REPO / "data_builder"]  # fmt: skip
        code = sum(f.stat().st_size for f in bundle.source_files(sources))
        for arch in ("arm64", "x86_64"):
            layer = bundle.build_layer(requirements, arch, log=lambda m: None)
            mb = (code + bundle.tree_bytes(layer)) / bundle.MIB
            out.append(Measure(f"lambda_size_{name}_{arch}", mb, "MB", budget, "budget", f"<= {budget} MB",
                               mb <= budget))  # fmt: skip
    return out


def bench_memory(root: Path) -> list[Measure]:
    say("memory: peak RSS of a process that opens both levels and resolves 1,000 postings ...")
    code = (
        "import numpy as np, lambda_src.worker.handler\n"
        "from data_builder.index import FsaIndex\n"
        f"ix = FsaIndex.open({str(root)!r})\n"
        "rng = np.random.default_rng(1)\n"
        "ix.resolve(rng.uniform(43.5, 45.5, 1000), rng.uniform(-80, -75, 1000))\n"
        f"print({PEAK_RSS_MB})\n"
    )
    return [Measure("worker_peak_rss", float(run_child(code)), "MB", None, "", "report; memory = 2x")]


# ------------------------------------------------------------------------------ report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions per timing (median)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.*")
    args = parser.parse_args(argv)

    from data_builder.index import FsaIndex
    from lambda_src.local.moto_env import aws_env, moto_server_process, patched_env

    measures: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="fsa-bench-") as tmp:
        root = Path(tmp) / "index"
        measures += bench_build(root)
        measures += bench_cold_start(root, args.runs)
        measures += bench_open(root, args.runs)
        index = FsaIndex.open(root)
        measures += bench_resolve(index, args.runs)
        measures += bench_quality(index)
        measures += bench_memory(root)
        with moto_server_process() as endpoint, patched_env(aws_env(endpoint)):
            measures += bench_publish(args.runs)
            measures += bench_worker_run()
        measures += bench_sizes()
    rows = [m.row() for m in measures]
    for row in rows:
        print(json.dumps(row))
    print(table(rows), file=sys.stderr)
    if not args.no_docs:
        write_docs(rows, index_resolve_curve())
    failed = [r["name"] for r in rows if r["ok"] is False]
    say(f"{len(rows)} measures, {len(failed)} missing their target" + (f": {', '.join(failed)}" if failed else ""))
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'measure':45} {'value':>12} {'unit':10} {'baseline':>12} {'ratio':>8}  target / ok"]
    for r in rows:
        ok = {True: "ok", False: "MISSED", None: ""}[r["ok"]]
        base = "" if r["baseline"] is None else f"{r['baseline']:.4g}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(f"{r['name']:45} {r['value']:>12.4g} {r['unit']:10} {base:>12} {ratio:>8}  {r['target']} {ok}")
    return "\n".join(lines)


def index_resolve_curve() -> dict[str, list[tuple[int, float]]]:
    """Seconds per resolve call against batch size, per mode (for the plot)."""
    from data_builder.index import FsaIndex

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        _build_quietly(root)
        index = FsaIndex.open(root)
        lat, lon, _ = sample_points(10_000, seed=5)
        curve: dict[str, list[tuple[int, float]]] = {}
        for mode in ("centroid", "coverage"):
            curve[mode] = [
                (n, median_time(lambda n=n, m=mode: index.resolve(lat[:n], lon[:n], 2.5, m), 3))
                for n in (1, 10, 100, 1000, 10_000)
            ]
        curve["numpy brute force (centroids)"] = [
            (n, median_time(lambda n=n: brute_force_centroids(index, lat[:n], lon[:n], 2.5), 3))
            for n in (1, 10, 100, 1000, 10_000)
        ]
    return curve


def write_docs(rows: list[dict[str, Any]], curve: dict[str, list[tuple[int, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import sklearn

    DOCS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in curve.items():
        ax.loglog([n for n, _ in points], [s for _, s in points], marker="o", label=label)
    ax.set_xlabel("postings per resolve call")
    ax.set_ylabel("seconds per call (median of 3)")
    ax.set_title("FSA resolve time against batch size (2.5 km)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks.png", dpi=110)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {_memory_gb():.0f} GB, Python {platform.python_version()}"
    libs = f"numpy {np.__version__}, scikit-learn {sklearn.__version__}"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d')}: {machine}; {libs}.",
        "Timings are medians; ratios compare against a baseline measured in the same run.",
        "",
        "| measure | value | unit | baseline | ratio | target | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = {True: "yes", False: "**no**", None: ""}[r["ok"]]
        base = "" if r["baseline"] is None else f"{r['baseline']:.4g} ({r['baseline_name']})"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['name']} | {r['value']:.4g} | {r['unit']} | {base} | {ratio} | {r['target']} | {ok} |")
    lines += ["", "![resolve time against batch size](benchmarks.png)", ""]
    (DOCS / "benchmarks.md").write_text("\n".join(lines), encoding="utf-8")


def _memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


if __name__ == "__main__":
    sys.exit(main())
