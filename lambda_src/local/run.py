"""``make run``: FSA Alerts end to end on this machine, no AWS account, no internet.

Starts moto on 127.0.0.1 and a feed server on loopback serving data/sample_feeds, runs the
real loader handler to build the index into a temporary directory standing in for EFS,
creates the topic, state table, dead-letter queue and two subscriber queues (M5V in
Toronto, K1P in Ottawa), invokes the real worker handler twice, and checks what arrived.
Exits non-zero when anything does not hold; the last line is one JSON object of counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lambda_src.local.aws_resources import create_worker_resources, drain
from lambda_src.local.context import LocalContext
from lambda_src.local.feed_server import FeedServer
from lambda_src.local.moto_env import REGION, aws_env, moto_server, patched_env

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
BUCKET = "fsa-alerts-datasets-local"
SUBSCRIBERS = {"toronto-m5v": ["M5V"], "ottawa-k1p": ["K1P"]}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, default=Path(".local"), help="where the Lambda logs go")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="fsa-index-") as efs,
        moto_server() as endpoint,
        patched_env(aws_env(endpoint)),
        FeedServer() as feeds,
    ):
        say(f"moto on {endpoint}; feeds on {feeds.url('/')}")
        loader = build_index(Path(efs), args.logs)
        samples = DATA / "sample_feeds"
        sources = [
            {"type": "json_feed", "name": "clinics", "url": feeds.serve_file("/clinics.json", samples / "clinics.json"),
             "items_key": "items", "fields": {"attributes": {"category": "category", "capacity": "capacity"}}},
            {"type": "georss", "name": "quakes", "url": feeds.serve_file("/quakes.xml", samples / "quakes.xml")},
        ]  # fmt: skip
        resources = create_worker_resources(SUBSCRIBERS)
        say(f"created topic, state table, DLQ and subscriber queues {', '.join(SUBSCRIBERS)}")
        env = {
            **resources.env(),
            "INDEX_ROOT": efs,
            "SOURCES": json.dumps(sources),
            "POWERTOOLS_SERVICE_NAME": "fsa-worker",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        runs = [invoke_worker(env, n, args.logs) for n in (1, 2)]
        received = {name: drain(url) for name, url in resources.queues.items()}
        parked = drain(resources.dlq_url)
    problems = check(runs, received)
    report(runs, received, parked, problems)
    counts = {
        "index_version": loader["version"],
        "runs": [{k: r[k] for k in ("fetched", "resolved", "published", "parked", "skipped", "deferred")}
                 | {"unresolved": sum(r["unresolved"].values())} for r in runs],
        "received": {name: len(msgs) for name, msgs in received.items()},
        "ok": not problems,
    }  # fmt: skip
    print(json.dumps(counts))
    return 1 if problems else 0


def build_index(efs: Path, logs: Path) -> dict[str, Any]:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    files = [DATA / "fsa_centroids.csv", DATA / "postal_codes.csv.gz"]
    for path in files:
        s3.upload_file(str(path), BUCKET, f"datasets/{path.name}")
    env = {
        "INDEX_ROOT": str(efs),
        "DATASET_BUCKET": BUCKET,
        "FSA_DATASET_KEY": f"datasets/{files[0].name}",
        "POSTAL_DATASET_KEY": f"datasets/{files[1].name}",
        "POWERTOOLS_SERVICE_NAME": "fsa-loader",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    say("loader: building the FSA index from the datasets in S3 (about 10 s) ...")
    started = time.perf_counter()
    with patched_env(env):
        from lambda_src.loader import handler as loader

        with _captured(logs / "loader.log", loader.logger):
            summary = loader.handler({}, LocalContext(function_name="fsa-loader"))
    say(f"loader: {summary['status']} {summary['version']} in {time.perf_counter() - started:.1f} s")
    for level, info in summary["levels"].items():
        say(f"  {level:6} kept {info['rows']:,} of {info['rows_in']:,}; dropped {info['dropped']}")
    return summary


def invoke_worker(env: dict[str, str], n: int, logs: Path) -> dict[str, Any]:
    say(f"worker run {n}: fetching, resolving, publishing ...")
    started = time.perf_counter()
    with patched_env(env):
        from lambda_src.worker import handler as worker

        with _captured(logs / f"worker-run-{n}.log", worker.logger):
            summary = worker.handler({"id": f"local-run-{n}"}, LocalContext(function_name="fsa-worker", timeout_s=300))
    say(
        f"worker run {n}: fetched {summary['fetched']}, resolved {summary['resolved']}, "
        f"unresolved {sum(summary['unresolved'].values())} {summary['unresolved']}, published {summary['published']}, "
        f"parked {summary['parked']}, already sent {summary['skipped']}, deferred {summary['deferred']} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return summary


def check(runs: list[dict[str, Any]], received: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    first, second = runs
    for n, run in enumerate(runs, 1):
        for source in run["sources"]:
            accounted = (source["published"] + source["parked"] + sum(source["unresolved"].values())
                         + source["skipped"] + source["deferred"])  # fmt: skip
            if accounted != source["fetched"]:
                problems.append(f"run {n}, {source['source']}: fetched {source['fetched']} but accounted {accounted}")
        if run["source_errors"]:
            problems.append(f"run {n}: source errors {run['source_errors']}")
    if first["published"] == 0:
        problems.append("run 1 published nothing")
    if second["published"] != 0:
        problems.append(f"run 2 published {second['published']} alerts again")
    for name, fsas in SUBSCRIBERS.items():
        if not received[name]:
            problems.append(f"subscriber {name} received nothing")
        for message in received[name]:
            if not set(fsas) & {m["fsa"] for m in message["fsas"]}:
                problems.append(f"subscriber {name} received {message['posting_id']} outside its FSAs")
    return problems


def report(runs: list[dict[str, Any]], received: dict[str, list[dict[str, Any]]], parked: list, problems: list[str]):
    for name, messages in received.items():
        say(f"subscriber {name} ({', '.join(SUBSCRIBERS[name])}) received {len(messages)} alert(s):")
        for m in messages:
            say(f"  {m['source']}/{m['posting_id']}: {m['location']['method']}, {m['text'][:60]!r}")
    if parked:
        say(f"dead-letter queue: {len(parked)} parked")
    say("second run published nothing: " + ("yes" if runs[1]["published"] == 0 else "NO"))
    for problem in problems:
        say(f"FAILED: {problem}")


@contextlib.contextmanager
def _captured(log: Path, logger: Any):
    """The Lambda's output (EMF metrics on stdout, its Powertools logger) goes to a file, not
    over the progress lines."""
    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        handler.setStream(previous)
        log.write_text(buffer.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
