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
from typing import Any, Literal

import numpy as np

from data_builder.geo import EARTH_RADIUS_KM

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
DOCS = REPO / "docs"
LOADER_TIMEOUT_S = 5 * 60  # cdk.json loader_timeout_minutes default


def peak_rss_mb() -> float:
    """This process's peak RSS from its own address space (VmHWM). Not ru_maxrss: Linux
    carries that across exec, so a child would report its parent's peak at fork time."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass
class Measure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = "report"
    ok: bool | None = None
    #: How the ratio reads: "speedup" (baseline / value for times, value / baseline for the
    #: rest, so higher is better) or "multiple" (value / baseline: how many baselines it costs).
    ratio_kind: Literal["speedup", "multiple"] = "speedup"

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        if self.ratio_kind == "multiple" or self.unit not in ("s", "ms"):
            return self.value / self.baseline
        return self.baseline / self.value

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


def seconds_to_done(code: str, env: dict[str, str] | None = None) -> float:
    """Wall time from starting a fresh interpreter until ``code`` has run: interpreter start
    included, its teardown at exit not (a Lambda environment stays up after a cold start,
    and tearing down the worker's larger heap would be timed against the bare import)."""
    started = time.time()
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport time\nprint(time.time())"], check=True,
                          env=env, cwd=REPO, capture_output=True, text=True)  # fmt: skip
    return float(done.stdout.split()[-1]) - started


# ------------------------------------------------------------------------------ measures


def bench_build(root: Path) -> list[Measure]:
    say("index build: both levels from the committed data ...")
    code = (
        "import json, sys\n"
        "from data_builder.build import build\n"
        "from lambda_src.local.bench import peak_rss_mb\n"
        f"r = build({str(root)!r}, {str(DATA / 'fsa_centroids.csv')!r}, {str(DATA / 'postal_codes.csv.gz')!r},"
        " level='postal', progress=lambda m: None)\n"
        "print(json.dumps({'seconds': r.seconds,"
        " 'rss_mb': peak_rss_mb()}))\n"
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
    # What Lambda sets for every function. Without LAMBDA_TASK_ROOT the X-Ray SDK builds a
    # botocore client at import for centralised sampling (+0.2 s), which it skips in Lambda.
    env = {**os.environ, "LAMBDA_TASK_ROOT": str(REPO), "AWS_REGION": "ca-central-1",
           "AWS_DEFAULT_REGION": "ca-central-1", "AWS_LAMBDA_FUNCTION_NAME": "bench"}  # fmt: skip
    # The noisiest measure (the bare import alone varies 1.7-2.4 s here): twice the pairs.
    pairs = [(seconds_to_done("import sklearn.neighbors", env), seconds_to_done(worker, env))
             for _ in range(2 * runs - 1)]  # fmt: skip
    bare, cold = statistics.median(b for b, _ in pairs), statistics.median(c for _, c in pairs)
    return [Measure("worker_cold_start", cold, "s", bare, "import sklearn.neighbors", "<= 1.3x baseline",
                    cold <= 1.3 * bare, ratio_kind="multiple")]  # fmt: skip


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


def sample_points(index: Any, n: int, seed: int, move_m: float = 0.0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` real postal-code points (seeded) of the codes the index kept, each moved
    ``move_m`` metres on a random bearing. Validation drops 0.43 % of GeoNames' points as
    geocoding errors (1,700 km from their FSA, or on a placeholder point shared by other
    FSAs); those are not where their code is, so they are not sampled."""
    postal = index._postal
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(postal.codes), size=n, replace=False)  # random order: any prefix is a fair sample
    lat, lon = postal.coords[picks, 0], postal.coords[picks, 1]
    if move_m:
        d = move_m / 1000 / EARTH_RADIUS_KM
        bearing = rng.uniform(0, 2 * np.pi, n)
        lat2 = np.arcsin(np.sin(lat) * np.cos(d) + np.cos(lat) * np.sin(d) * np.cos(bearing))
        lon = lon + np.arctan2(np.sin(bearing) * np.sin(d) * np.cos(lat), np.cos(d) - np.sin(lat) * np.sin(lat2))
        lat = lat2
    return np.degrees(lat), np.degrees(lon), [c.decode() for c in postal.codes[picks]]


def brute_force_centroids(index: Any, lat: np.ndarray, lon: np.ndarray, radius_km: float) -> list[np.ndarray]:
    """The baseline: vectorised numpy haversine from every point to every FSA centroid."""
    c = index._fsa.coords
    km = haversine_km(np.radians(lat)[:, None], np.radians(lon)[:, None], c[:, 0], c[:, 1])
    return [np.flatnonzero(row <= radius_km) for row in km]


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle km between points in radians (broadcasting): the baselines' distance."""
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def brute_force_postal_codes(index: Any, lat: np.ndarray, lon: np.ndarray, radius_km: float) -> list[np.ndarray]:
    """Coverage mode's own answer by brute force: numpy haversine from each point to every
    postal code, then the closest per FSA (one point at a time: a batch would need GBs)."""
    postal = index._postal
    c = postal.coords
    out = []
    for p1, l1 in zip(np.radians(lat), np.radians(lon)):
        km = haversine_km(p1, l1, c[:, 0], c[:, 1])
        best = np.full(len(postal.names), np.inf)
        np.minimum.at(best, postal.name_ids, km)
        out.append(np.flatnonzero(best <= radius_km))
    return out


def bench_resolve(index: Any, runs: int) -> list[Measure]:
    say("batch resolve: 10,000 postings, both modes ...")
    lat, lon, _ = sample_points(index, 10_000, seed=7)
    # Interleaved, so the baseline and both modes see the same moments of a noisy machine.
    times: dict[str, list[float]] = {"brute": [], "centroid": [], "coverage": []}
    for _ in range(runs):
        times["brute"].append(median_time(lambda: brute_force_centroids(index, lat, lon, 2.5), 1))
        for mode in ("centroid", "coverage"):
            times[mode].append(median_time(lambda m=mode: index.resolve(lat, lon, 2.5, m), 1))
    brute = statistics.median(times["brute"])
    batch = {mode: statistics.median(times[mode]) for mode in ("centroid", "coverage")}
    out = []
    for mode in ("centroid", "coverage"):
        one_by_one = median_time(lambda m=mode: [index.resolve(a, b, 2.5, m) for a, b in zip(lat, lon)], 1)
        out.append(Measure(f"resolve_batch_vs_per_posting_{mode}", batch[mode], "s", one_by_one,
                           "one resolve call per posting", ">= 3x", one_by_one / batch[mode] >= 3))  # fmt: skip
        out.append(Measure(f"resolve_batch_vs_brute_force_{mode}", batch[mode], "s", brute,
                           "numpy haversine over all FSA centroids", ">= 3x", brute / batch[mode] >= 3))  # fmt: skip
    # Like for like: the same coverage answer by brute force over every postal code, timed on
    # 100 postings and scaled to 10,000 (the whole run would take minutes).
    sample = 100
    per_posting = median_time(lambda: brute_force_postal_codes(index, lat[:sample], lon[:sample], 2.5), 1) / sample
    out.append(Measure("resolve_batch_vs_brute_force_postal_codes_coverage", batch["coverage"], "s",
                       per_posting * len(lat),
                       "numpy haversine over all postal codes (100 postings, scaled)", "report"))  # fmt: skip
    return out


def bench_quality(index: Any) -> list[Measure]:
    say("matching quality: 2,000 seeded postal-code points moved 150 m ...")
    lat, lon, codes = sample_points(index, 2_000, seed=11, move_m=150)
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
    # A subscriber whose filter matches none of these alerts: moto evaluates the filter policy
    # inside each Publish call, as SNS does after accepting it. Were every alert delivered,
    # moto's SQS would be timed too, and it slows with each message a queue holds (1,000
    # batched alerts: 27 s into a queue, 1.5 s without); SNS delivers after Publish returns.
    res = create_worker_resources({"k1a": ["K1A"]}, prefix=f"bench{time.time_ns() % 10**6}")
    sns, sqs = boto3.client("sns"), boto3.client("sqs")

    def message(a: Alert) -> str:
        return a.message(radius_km=2.5, mode="coverage", index_version="bench")

    publisher = Publisher(sns, sqs, topic_arn=res.topic_arn, dlq_url=res.dlq_url, message=message)
    batched = median_time(lambda: publisher.publish(alerts), min(runs, 3))
    single = median_time(
        lambda: [sns.publish(TopicArn=res.topic_arn, Message=message(a), MessageAttributes=a.attributes())
                 for a in alerts], 1)  # fmt: skip
    return [Measure("publish_1000", batched, "s", single, "one Publish per posting", ">= 4x", single / batched >= 4)]


def bench_worker_run(root: Path, index: Any, endpoint: str) -> list[Measure]:
    """The real handler over a 1,000-posting loopback feed on moto, in a fresh process: its
    throughput, the share of time per stage, and its peak RSS (what sets the memory size)."""
    from lambda_src.local.aws_resources import create_worker_resources
    from lambda_src.local.feed_server import FeedServer
    from lambda_src.local.moto_env import aws_env

    say("worker run: 1,000 postings end to end, in a fresh process ...")
    lat, lon, _ = sample_points(index, 1000, seed=3)
    items = [{"id": f"w{i}", "text": f"posting {i}", "latitude": float(a), "longitude": float(b)}
             for i, (a, b) in enumerate(zip(lat, lon))]  # fmt: skip
    with FeedServer() as feeds:
        url = feeds.serve("/bench.json", json.dumps(items).encode())
        res = create_worker_resources({}, prefix=f"wrun{time.time_ns() % 10**6}")
        env = {**os.environ, **aws_env(endpoint), **res.env(), "INDEX_ROOT": str(root),
               "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR",
               "SOURCES": json.dumps([{"type": "json_feed", "name": "bench", "url": url}])}  # fmt: skip
        code = "from lambda_src.local.bench import worker_run_child; worker_run_child()"
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO,
                              env=env)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = result["seconds"]
    out = [Measure("worker_run_postings_per_s", result["published"] / seconds, "postings/s")]
    out += [Measure(f"worker_run_share_{k}", 100 * v / seconds, "%") for k, v in result["spent"].items()]
    out.append(Measure("worker_peak_rss", result["rss_mb"], "MB", None, "", "report; memory = 2x"))
    return out


def worker_run_child() -> None:
    """Inside the fresh process: run the handler once with each stage timed; print JSON."""
    from data_builder.index import FsaIndex
    from lambda_src.local.context import LocalContext
    from lambda_src.worker import cursors, dedup, handler, publish
    from lambda_src.worker.sources import json_feed

    spent: dict[str, float] = {"fetch": 0.0, "resolve": 0.0, "publish": 0.0, "state": 0.0}
    for cls, attr, stage in [
        (json_feed.JsonFeed, "fetch", "fetch"),
        (handler.Locator, "locate", "resolve"),
        (FsaIndex, "resolve", "resolve"),
        (publish.Publisher, "publish", "publish"),
        (dedup.Dedup, "claim", "state"),
        (dedup.Dedup, "complete", "state"),
        (cursors.CursorStore, "get", "state"),
        (cursors.CursorStore, "put", "state"),
    ]:
        setattr(cls, attr, _timed(getattr(cls, attr), spent, stage))
    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        summary = handler.handler({"id": "bench"}, LocalContext(timeout_s=900))
        seconds = time.perf_counter() - started
    rss_mb = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "published": summary["published"], "spent": spent, "rss_mb": rss_mb}))


def _timed(fn: Callable[..., Any], spent: dict[str, float], stage: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[stage] += time.perf_counter() - started

    return wrapper


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


# ------------------------------------------------------------------------------ report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions per timing (median)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.*")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")

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
        with moto_server_process() as endpoint, patched_env(aws_env(endpoint)):
            measures += bench_publish(args.runs)
            measures += bench_worker_run(root, index, endpoint)
        measures += bench_sizes()
        curve = None if args.no_docs else index_resolve_curve(index)
    rows = [m.row() for m in measures]
    for row in rows:
        print(json.dumps(row))
    print(table(rows), file=sys.stderr)
    if not args.no_docs:
        write_docs(rows, curve)
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


def index_resolve_curve(index: Any) -> dict[str, list[tuple[int, float]]]:
    """Seconds per resolve call against batch size, per mode (for the plot)."""
    say("resolve time against batch size, for the plot ...")
    lat, lon, _ = sample_points(index, 10_000, seed=5)
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
        "Timings are medians; ratios compare against a baseline measured in the same run. A",
        "ratio is a speed-up (how many times faster than the baseline; for sizes, the share of the",
        "budget used), except the cold start's, which is how many bare imports it takes.",
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


def run(argv: list[str] | None = None) -> int:
    """``main`` with its failures as one line each: a measuring process that died says how."""
    from stacks.constructs.lambda_bundle import BundlingError

    try:
        return main(argv)
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or "").strip().splitlines()
        say(f"error: a measuring process exited with {exc.returncode}: {lines[-1] if lines else 'no output'}")
    except (BundlingError, RuntimeError) as exc:
        say(f"error: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(run())
