"""The worker handler end to end on a real moto server and a loopback feed server.

No mocks: SNS routing by filter policy, DynamoDB idempotency and cursors, the SQS
dead-letter queue and the HTTP feeds are all real servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from data_builder.errors import IndexCorrupt, IndexMissing
from lambda_src.local.aws_resources import WorkerResources, create_worker_resources, drain
from lambda_src.local.context import LocalContext
from lambda_src.local.feed_server import FeedServer
from lambda_src.local.moto_env import patched_env
from lambda_src.worker import handler as worker
from lambda_src.worker.config import ConfigError
from lambda_src.worker.cursors import CursorStore
from lambda_src.worker.dedup import Dedup

CN_TOWER = (43.6426, -79.3871)
PARLIAMENT = (45.4236, -75.7009)
CALGARY = (51.0447, -114.0719)


@pytest.fixture(scope="module")
def feeds():
    with FeedServer() as server:
        yield server


@pytest.fixture
def resources(aws) -> WorkerResources:
    return create_worker_resources({"m5v": ["M5V"], "k1p": ["K1P"], "all": None}, prefix=f"t{uuid.uuid4().hex[:8]}")


def item(posting_id: str, where: tuple[float, float] | None = None, **fields: Any) -> dict[str, Any]:
    body = {"id": posting_id, "text": f"posting {posting_id}", "url": f"https://example.ca/{posting_id}", **fields}
    if where:
        body["latitude"], body["longitude"] = where
    return body


def json_source(feeds: FeedServer, name: str, items: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    url = feeds.serve(f"/{name}.json", json.dumps({"items": items}).encode())
    return {"type": "json_feed", "name": name, "url": url, "items_key": "items", "retries": 0,
            "connect_timeout_s": 0.5, "read_timeout_s": 1, **config}  # fmt: skip


class Clock:
    """A Lambda context whose remaining time drops to zero after ``calls`` checks."""

    def __init__(self, calls: int = 10**9) -> None:
        self.calls = calls

    def __call__(self) -> int:
        self.calls -= 1
        return 600_000 if self.calls >= 0 else 0


def invoke(resources: WorkerResources, index_root: Path, sources: list[dict[str, Any]], clock: Clock | None = None):
    env = {
        **resources.env(),
        "INDEX_ROOT": str(index_root),
        "SOURCES": json.dumps(sources),
        "POWERTOOLS_SERVICE_NAME": "fsa-worker",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "MARGIN_SECONDS": "30",
    }
    context = LocalContext(function_name="fsa-worker", timeout_s=600)
    if clock is not None:
        context.get_remaining_time_in_millis = clock  # type: ignore[method-assign]
    with patched_env(env):
        return worker.handler({"id": "evt"}, context)


def emf(capsys) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]


def metric(blobs: list[dict[str, Any]], name: str, **dims: str) -> list[float]:
    out = []
    for blob in blobs:
        if name in blob and all(blob.get(k) == v for k, v in dims.items()):
            value = blob[name]
            out += value if isinstance(value, list) else [value]
    return out


def accounted(source: dict[str, Any]) -> int:
    return (source["published"] + source["parked"] + sum(source["unresolved"].values())
            + source["skipped"] + source["deferred"])  # fmt: skip


# ------------------------------------------------------------------------------------ routing


def test_each_subscriber_gets_exactly_the_alerts_for_its_fsas(resources, feeds, full_build, capsys):
    items = [item("t1", CN_TOWER), item("o1", PARLIAMENT), item("c1", CALGARY), item("n1", text="no place at all")]
    summary = invoke(resources, full_build[0], [json_source(feeds, "routing", items)])
    assert summary["published"] == 3 and summary["unresolved"] == {"no_location": 1}
    assert all(accounted(s) == s["fetched"] for s in summary["sources"])

    everything = drain(resources.queues["all"])
    assert sorted(m["posting_id"] for m in everything) == ["c1", "o1", "t1"]
    for name, fsa in (("m5v", "M5V"), ("k1p", "K1P")):
        expected = {m["posting_id"] for m in everything if fsa in {f["fsa"] for f in m["fsas"]}}
        got = [m["posting_id"] for m in drain(resources.queues[name])]
        assert sorted(got) == sorted(expected) and expected, name
    tower = next(m for m in everything if m["posting_id"] == "t1")
    assert tower["schema_version"] == 1 and tower["fsas"][0]["fsa"] == "M5V"
    assert tower["location"]["method"] == "coordinates"

    blobs = emf(capsys)
    assert metric(blobs, "PostingsFetched") == [4]
    assert metric(blobs, "AlertsPublished") == [3]
    assert metric(blobs, "PostingsUnresolved") == [1]
    assert metric(blobs, "RunCompleted") == [1]
    assert metric(blobs, "SourceErrors", source="routing") == [0]
    assert blobs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "FsaAlerts"


def test_mapped_attributes_route_too(resources, feeds, full_build):
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    url = sqs.create_queue(QueueName=f"cat-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {"fsa": ["M5V"], "category": ["booster"]}
    sns.subscribe(TopicArn=resources.topic_arn, Protocol="sqs", Endpoint=arn,
                  Attributes={"FilterPolicy": json.dumps(policy), "RawMessageDelivery": "true"})  # fmt: skip
    items = [item("b1", CN_TOWER, category="booster"), item("v1", CN_TOWER, category="vaccine")]
    source = json_source(feeds, "attrs", items, fields={"attributes": {"category": "category"}})
    assert invoke(resources, full_build[0], [source])["published"] == 2
    assert [m["posting_id"] for m in drain(url)] == ["b1"]


# ------------------------------------------------------------------------- exactly once


def test_a_rerun_sends_nothing_twice_and_a_new_posting_once(resources, feeds, full_build):
    items = [item("r1", CN_TOWER), item("r2", PARLIAMENT)]
    source = json_source(feeds, "rerun", items)
    assert invoke(resources, full_build[0], [source])["published"] == 2
    again = invoke(resources, full_build[0], [source])
    assert again["published"] == 0 and again["sources"][0]["not_modified"]

    source = json_source(feeds, "rerun", [*items, item("r3", CALGARY)])  # new body, new ETag
    third = invoke(resources, full_build[0], [source])
    assert (third["published"], third["skipped"], third["fetched"]) == (1, 2, 3)
    assert sorted(m["posting_id"] for m in drain(resources.queues["all"])) == ["r1", "r2", "r3"]


def test_an_overlapping_run_defers_what_the_other_holds(resources, feeds, full_build):
    items = [item("h1", CN_TOWER), item("h2", PARLIAMENT), item("h3", CALGARY)]
    source = json_source(feeds, "overlap", items, since_param="since")
    dedup = Dedup(resources.table, boto3.client("dynamodb"))
    assert dedup.claim("overlap", "h2", remaining_ms=600_000) == "claimed"  # the other run, mid-publish

    summary = invoke(resources, full_build[0], [source])
    assert (summary["published"], summary["deferred"]) == (2, 1)
    cursor, _ = CursorStore(resources.table, boto3.client("dynamodb")).get("overlap")
    assert cursor == {"since_id": "h1"}  # stops before the posting it could not finish

    dedup.release("overlap", "h2", RuntimeError("the other run died"))
    summary = invoke(resources, full_build[0], [source])
    assert (summary["published"], summary["skipped"]) == (1, 2)
    assert sorted(m["posting_id"] for m in drain(resources.queues["all"])) == ["h1", "h2", "h3"]


# -------------------------------------------------------------------------------- faults


def test_a_publish_failure_is_parked_with_its_reason(resources, feeds, full_build, capsys):
    huge_url = "https://example.ca/" + "x" * 300_000  # SNS refuses the message: too long
    items = [item("p1", CN_TOWER), item("p2", CN_TOWER, url=huge_url), item("p3", PARLIAMENT)]
    summary = invoke(resources, full_build[0], [json_source(feeds, "parking", items)])
    assert (summary["published"], summary["parked"]) == (2, 1)
    assert accounted(summary["sources"][0]) == summary["fetched"] == 3
    parked = drain(resources.dlq_url)
    assert len(parked) == 1 and parked[0]["posting_id"] == "p2"
    assert "InvalidParameter" in parked[0]["reason"] and "too long" in parked[0]["reason"]
    assert parked[0]["message_truncated"] is True
    assert metric(emf(capsys), "AlertsParked") == [1]
    assert summary["sources"][0]["cursor_moved"]


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ({"status": 500}, "HTTP 500"),
        ({"body": b"<html><body>Service unavailable</body></html>", "content_type": "text/html"}, "html"),
        ({"body": b"{not json"}, "json"),
    ],
)
def test_a_failing_source_does_not_stop_the_others_and_keeps_its_cursor(
    resources, feeds, full_build, capsys, route, why
):
    name = f"bad-{uuid.uuid4().hex[:6]}"
    body = route.pop("body", b"[]")
    bad_url = feeds.serve(f"/{name}.json", body, **route)
    bad = {"type": "json_feed", "name": name, "url": bad_url, "retries": 0}
    good = json_source(feeds, f"good-{name}", [item("g1", CN_TOWER)])
    summary = invoke(resources, full_build[0], [bad, good])
    assert summary["published"] == 1
    assert why.lower() in summary["source_errors"][name].lower()
    assert CursorStore(resources.table, boto3.client("dynamodb")).get(name) == ({}, 0)
    blobs = emf(capsys)
    assert metric(blobs, "SourceErrors", source=name) == [1]
    assert metric(blobs, "SourceErrors", source=f"good-{name}") == [0]


def test_running_out_of_time_leaves_the_cursor_at_the_last_completed_posting(resources, feeds, full_build):
    items = [item(f"s{i:02d}", CN_TOWER) for i in range(15)]
    source = json_source(feeds, "slow", items, since_param="since")
    # Remaining time is checked before each chunk and at each claim: the first chunk of
    # ten gets through (1 + 10 checks), then the run stops taking new work.
    summary = invoke(resources, full_build[0], [source], clock=Clock(calls=11))
    report = summary["sources"][0]
    assert report["stopped_early"] and (report["published"], report["deferred"]) == (10, 5)
    cursor, _ = CursorStore(resources.table, boto3.client("dynamodb")).get("slow")
    assert cursor == {"since_id": "s09"}


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_index_fails_the_run_loudly(resources, feeds, small_index, tmp_path, capsys, damage):
    root = tmp_path / "efs"
    if damage == "corrupt":
        shutil.copytree(small_index, root)
        codes = next(root.glob("v-*/codes.npy"))
        codes.write_bytes(codes.read_bytes()[:-10])
    else:
        root.mkdir()
    worker._index_cache.cache_clear()
    with pytest.raises(IndexCorrupt if damage == "corrupt" else IndexMissing):
        invoke(resources, root, [json_source(feeds, f"idx-{damage}", [item("i1", CN_TOWER)])])
    assert metric(emf(capsys), "IndexErrors") == [1]
    assert boto3.client("dynamodb").scan(TableName=resources.table)["Count"] == 0  # nothing claimed, no cursor
    assert drain(resources.queues["all"]) == []


def test_a_bad_source_config_is_one_clear_error(resources, full_build):
    with pytest.raises(ConfigError, match=r"SOURCES: 0\.json_feed\.url"):
        invoke(resources, full_build[0], [{"type": "json_feed", "name": "x", "url": "ftp://nope"}])


def test_an_alert_that_can_be_neither_published_nor_parked_is_left_for_the_next_run(resources, feeds, full_build):
    huge_url = "https://example.ca/" + "x" * 300_000
    items = [item("u1", CN_TOWER, url=huge_url), item("u2", CN_TOWER)]
    broken = WorkerResources(resources.topic_arn, resources.table, resources.dlq_url + "-missing", resources.queues)
    summary = invoke(broken, full_build[0], [json_source(feeds, "unparkable", items, since_param="since")])
    report = summary["sources"][0]
    assert (report["published"], report["parked"], report["deferred"]) == (1, 0, 1)
    assert report["fetched"] == accounted(report)
    assert CursorStore(resources.table, boto3.client("dynamodb")).get("unparkable") == ({}, 0)
    # Its claim was released: nothing marks it as sent, so a later run tries again.
    assert Dedup(resources.table, boto3.client("dynamodb")).claim("unparkable", "u1", 1000) == "claimed"
