"""`python -m lambda_src.replay` on a real moto server: postings parked for real (by the worker
handler publishing to a topic that is gone, or by the worker's Publisher after a refused
PublishBatch entry), then listed, re-published once, skipped, deferred or left.

No mocks of AWS: SNS routing by filter policy, the DynamoDB idempotency records and the SQS
dead-letter queue are moto's, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from data_builder.build import build
from data_builder.index import Match
from lambda_src import replay
from lambda_src.local.aws_resources import WorkerResources, create_worker_resources, drain
from lambda_src.local.context import LocalContext
from lambda_src.local.feed_server import FeedServer
from lambda_src.local.moto_env import patched_env
from lambda_src.worker import handler as worker
from lambda_src.worker.alerts import Alert
from lambda_src.worker.dedup import Dedup
from lambda_src.worker.locate import Location
from lambda_src.worker.postings import Posting
from lambda_src.worker.publish import Publisher

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("moto-replay")

# The synthetic index below puts FSA A0A at (45.0, -76.0) and A0B 0.1 degrees east (~8 km).
A0A = (45.0, -76.0)
A0B = (45.0, -75.9)


@pytest.fixture(autouse=True)
def _no_long_polling(monkeypatch):
    monkeypatch.setattr(replay, "RECEIVE_WAIT_S", 0)  # moto answers at once; the CLI default waits 1 s


@pytest.fixture(scope="module")
def feeds():
    with FeedServer() as server:
        yield server


@pytest.fixture(scope="module")
def index_root(tmp_path_factory, synth) -> Path:
    """20 synthetic FSAs on a grid from (45.0, -76.0), 9 postal codes around each."""
    src = tmp_path_factory.mktemp("replay-index")
    centroids = synth.fsa_rows(20)
    fsa = synth.write_csv(src / "fsa.csv", centroids)
    postal = synth.write_csv(src / "postal.csv", synth.postal_rows(centroids, per_fsa=9))
    build(src / "idx", fsa, postal, level="postal", progress=lambda _m: None)
    return src / "idx"


@pytest.fixture
def resources(aws) -> WorkerResources:
    return create_worker_resources({"a0a": ["A0A"], "all": None}, prefix=f"r{uuid.uuid4().hex[:8]}")


# ------------------------------------------------------------------------------- helpers


def item(posting_id: str, where: tuple[float, float], **fields: Any) -> dict[str, Any]:
    lat, lon = where
    return {"id": posting_id, "text": f"posting {posting_id}", "url": f"https://example.ca/{posting_id}",
            "latitude": lat, "longitude": lon, **fields}  # fmt: skip


def park_with_the_worker(resources: WorkerResources, index_root: Path, feeds: FeedServer, items: list[dict]) -> dict:
    """Run the real worker handler with its topic gone: every alert fails PublishBatch
    (NotFound), is retried, then parked in the DLQ by Publisher._park with its claim released."""
    name = f"feed-{uuid.uuid4().hex[:6]}"
    url = feeds.serve(f"/{name}.json", json.dumps({"items": items}).encode())
    source = {"type": "json_feed", "name": name, "url": url, "items_key": "items", "retries": 0}
    env = {
        **resources.env(),
        "TOPIC_ARN": resources.topic_arn + "-gone",
        "INDEX_ROOT": str(index_root),
        "SOURCES": json.dumps([source]),
        "POWERTOOLS_SERVICE_NAME": "fsa-worker",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    with patched_env(env):
        summary = worker.handler({"id": "park"}, LocalContext(function_name="fsa-worker", timeout_s=600))
    assert summary["parked"] == len(items) and summary["published"] == 0
    return summary


class RefusingSns:
    """PublishBatch that fails every entry with a transient error (as SNS throttling does)."""

    def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[dict]) -> dict:
        failed = [{"Id": e["Id"], "Code": "Throttled", "Message": "Rate exceeded", "SenderFault": False}
                  for e in PublishBatchRequestEntries]  # fmt: skip
        return {"Successful": [], "Failed": failed}


def alert(source: str, posting_id: str, fsas: list[str], **posting: Any) -> Alert:
    return Alert(
        Posting(source, posting_id, text=f"posting {posting_id}", url=f"https://example.ca/{posting_id}", **posting),
        Location(*A0A, "coordinates"),
        [Match(code, 0.1 * n) for n, code in enumerate(fsas)],
    )


def message_of(a: Alert) -> str:
    return a.message(radius_km=2.5, mode="coverage", index_version="v-test")


def park_with_the_publisher(resources: WorkerResources, alerts: list[Alert]) -> None:
    """The worker's Publisher, refused by SNS, parks each alert into the real DLQ."""
    publisher = Publisher(RefusingSns(), boto3.client("sqs"), topic_arn=resources.topic_arn,
                          dlq_url=resources.dlq_url, message=message_of, attempts=1)  # fmt: skip
    assert [d.outcome for d in publisher.publish(alerts)] == ["parked"] * len(alerts)


def run(resources: WorkerResources, capsys, *args: str, topic_arn: str | None = None) -> tuple[int, dict, str]:
    """``main`` in-process with the resources' names: (exit code, the stdout JSON, stderr)."""
    capsys.readouterr()  # drop what the worker handler printed
    code = replay.main(
        ["--topic-arn", topic_arn or resources.topic_arn, "--table", resources.table,
         "--dlq-url", resources.dlq_url, *args]
    )  # fmt: skip
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    return code, json.loads(lines[0]), err


def counts(summary: dict) -> tuple[int, int, int, int, int]:
    return tuple(summary[k] for k in ("replayed", "skipped", "deferred", "failed", "unreadable"))  # type: ignore[return-value]


def depth(queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = boto3.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return int(got[names[0]]), int(got[names[1]])


def peek(queue_url: str) -> list[str]:
    """Every body in the queue, sorted; the messages are made visible again."""
    sqs = boto3.client("sqs")
    seen: list[dict[str, Any]] = []
    while got := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30).get(
        "Messages", []
    ):
        seen += got
    for m in seen:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    return sorted(m["Body"] for m in seen)


def idempotency_records(table: str) -> list[dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return [i for i in items if i["id"]["S"].startswith("posting#")]


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err


# ------------------------------------------------------------------------------ dry run


def test_a_dry_run_lists_the_parked_postings_and_changes_nothing(resources, index_root, feeds, capsys):
    huge = "https://example.ca/" + "x" * 300_000  # its alert is cut to fit the queue
    items = [item("p1", A0A), item("p2", A0B), item("p3", A0A), item("big", A0A, url=huge)]
    park_with_the_worker(resources, index_root, feeds, items)
    before = peek(resources.dlq_url)
    assert len(before) == 4

    code, summary, err = run(resources, capsys, "--dry-run")
    assert code == 0 and summary["dry_run"] is True
    assert counts(summary) == (3, 0, 0, 1, 0)  # what a replay would do
    listed = {p["posting_id"]: p for p in summary["postings"]}
    assert set(listed) == {"p1", "p2", "p3", "big"}
    assert (listed["p1"]["fsas"], listed["p2"]["fsas"]) == (["A0A"], ["A0B"])
    assert listed["p1"]["action"] == "replay" and listed["big"]["action"].startswith("cannot replay")
    assert all("NotFound" in p["reason"] for p in listed.values())
    assert "batch 1 (dry run): 4 message(s): would replay 3" in err and "A0A" in err

    assert depth(resources.dlq_url) == (4, 0)  # visible again at once
    assert peek(resources.dlq_url) == before
    assert idempotency_records(resources.table) == []  # nothing claimed
    assert drain(resources.queues["all"]) == []


# -------------------------------------------------------------------------------- replay


def test_a_replay_publishes_each_parked_posting_once_and_a_second_publishes_nothing(
    resources, index_root, feeds, capsys
):
    huge = "https://example.ca/" + "x" * 300_000
    items = [item("p1", A0A), item("p2", A0B), item("p3", A0A), item("big", A0A, url=huge)]
    park_with_the_worker(resources, index_root, feeds, items)
    (big,) = [b for b in peek(resources.dlq_url) if json.loads(b)["posting_id"] == "big"]

    code, summary, err = run(resources, capsys)
    assert code == 0 and summary == {"replayed": 3, "skipped": 0, "deferred": 0, "failed": 1, "unreadable": 0,
                                     "dry_run": False}  # fmt: skip
    assert "batch 1: 4 message(s): replayed 3" in err
    assert sorted(m["posting_id"] for m in drain(resources.queues["a0a"])) == ["p1", "p3"]
    everything = drain(resources.queues["all"])
    assert sorted(m["posting_id"] for m in everything) == ["p1", "p2", "p3"]
    p2 = next(m for m in everything if m["posting_id"] == "p2")
    assert p2["schema_version"] == 1 and p2["fsas"][0]["fsa"] == "A0B" and p2["url"] == "https://example.ca/p2"
    # The alert cut to fit the queue cannot be sent whole: it stays, exactly as it was, unclaimed.
    assert peek(resources.dlq_url) == [big]
    dedup = Dedup(resources.table, boto3.client("dynamodb"))
    assert [dedup.claim(s, p, 1000) for s, p in [(p2["source"], "p1"), (p2["source"], "p2")]] == ["already_sent"] * 2
    assert dedup.claim(p2["source"], "big", 1000) == "claimed"
    dedup.release(p2["source"], "big", RuntimeError("test"))

    code, summary, _ = run(resources, capsys)
    assert code == 0 and counts(summary) == (0, 0, 0, 1, 0)
    assert drain(resources.queues["all"]) == [] and depth(resources.dlq_url) == (1, 0)


def test_a_posting_already_sent_is_skipped_and_removed_not_sent_twice(resources, capsys):
    park_with_the_publisher(resources, [alert("s", "sent", ["A0A"]), alert("s", "new", ["A0A"])])
    dedup = Dedup(resources.table, boto3.client("dynamodb"))
    assert dedup.claim("s", "sent", 60_000) == "claimed"
    dedup.complete("s", "sent", {"message_id": "published-elsewhere"})

    code, summary, _ = run(resources, capsys)
    assert code == 0 and counts(summary) == (1, 1, 0, 0, 0)
    assert [m["posting_id"] for m in drain(resources.queues["all"])] == ["new"]
    assert depth(resources.dlq_url) == (0, 0)


def test_a_posting_parked_twice_is_sent_once(resources, capsys):
    twice = alert("s", "twice", ["A0A"])
    park_with_the_publisher(resources, [twice, alert("s", "once", ["A0A"])])
    park_with_the_publisher(resources, [twice])

    code, summary, _ = run(resources, capsys)
    assert code == 0 and counts(summary) == (2, 1, 0, 0, 0)
    assert sorted(m["posting_id"] for m in drain(resources.queues["all"])) == ["once", "twice"]
    assert depth(resources.dlq_url) == (0, 0)


def test_a_posting_another_run_holds_is_deferred_and_left_visible(resources, capsys):
    park_with_the_publisher(resources, [alert("s", "held", ["A0A"])])
    dedup = Dedup(resources.table, boto3.client("dynamodb"))
    assert dedup.claim("s", "held", 600_000) == "claimed"  # a worker run, mid-publish

    code, summary, err = run(resources, capsys)
    assert code == 0 and counts(summary) == (0, 0, 1, 0, 0)
    assert "holds it" in err
    assert depth(resources.dlq_url) == (1, 0) and drain(resources.queues["all"]) == []

    dedup.release("s", "held", RuntimeError("that run died"))
    code, summary, _ = run(resources, capsys)
    assert counts(summary) == (1, 0, 0, 0, 0) and depth(resources.dlq_url) == (0, 0)
    assert [m["posting_id"] for m in drain(resources.queues["all"])] == ["held"]


def test_a_posting_refused_again_is_parked_again_with_the_new_reason(resources, capsys):
    alerts = [alert("s", "r1", ["A0A"], attributes={"category": "clinic"}), alert("s", "r2", ["A0B"])]
    park_with_the_publisher(resources, alerts)
    old = {json.loads(b)["posting_id"]: json.loads(b) for b in peek(resources.dlq_url)}
    assert {b["reason"] for b in old.values()} == {"Throttled: Rate exceeded"}

    gone = resources.topic_arn + "-gone"
    code, summary, err = run(resources, capsys, topic_arn=gone)
    assert code == 0 and counts(summary) == (0, 0, 0, 2, 0)  # each tried once, not again as parked anew
    assert "refused again" in err
    new = {json.loads(b)["posting_id"]: json.loads(b) for b in peek(resources.dlq_url)}
    assert set(new) == {"r1", "r2"}
    for posting_id, body in new.items():
        assert "NotFound" in body["reason"]
        assert {k: v for k, v in body.items() if k != "reason"} == {k: v for k, v in old[posting_id].items()
                                                                    if k != "reason"}  # fmt: skip
    assert idempotency_records(resources.table) == []  # claims released: a later replay may send them

    code, summary, _ = run(resources, capsys)
    assert counts(summary) == (2, 0, 0, 0, 0) and depth(resources.dlq_url) == (0, 0)
    received = {m["posting_id"]: m for m in drain(resources.queues["all"])}
    assert set(received) == {"r1", "r2"}
    assert received["r1"] == json.loads(message_of(alerts[0]))
    assert [m["posting_id"] for m in drain(resources.queues["a0a"])] == ["r1"]


def test_unreadable_messages_are_counted_and_left(resources, capsys):
    sqs = boto3.client("sqs")
    good = {"reason": "r", "source": "s", "posting_id": "x", "message": "{}", "message_truncated": False,
            "attributes": {}}  # fmt: skip
    bad = [
        "not json at all",
        json.dumps([1, 2]),
        json.dumps({"source": "s", "posting_id": "1"}),
        json.dumps({**good, "posting_id": ""}),
        json.dumps({**good, "attributes": {"fsa": "A0A"}}),
    ]
    for body in bad:
        sqs.send_message(QueueUrl=resources.dlq_url, MessageBody=body)
    park_with_the_publisher(resources, [alert("s", "fine", ["A0A"])])

    code, summary, err = run(resources, capsys, "--dry-run")
    assert code == 0 and counts(summary) == (1, 0, 0, 0, 5)
    code, summary, err = run(resources, capsys)
    assert code == 0 and counts(summary) == (1, 0, 0, 0, 5)
    assert "missing reason, message, message_truncated, attributes" in err and "body is not JSON" in err
    assert [m["posting_id"] for m in drain(resources.queues["all"])] == ["fine"]
    assert depth(resources.dlq_url) == (5, 0) and peek(resources.dlq_url) == sorted(bad)


def test_max_takes_at_most_that_many_messages(resources, capsys):
    park_with_the_publisher(resources, [alert("s", f"m{i}", ["A0A"]) for i in range(3)])
    code, summary, _ = run(resources, capsys, "--max", "2")
    assert code == 0 and counts(summary) == (2, 0, 0, 0, 0) and depth(resources.dlq_url) == (1, 0)
    code, summary, _ = run(resources, capsys, "--max", "5")
    assert counts(summary) == (1, 0, 0, 0, 0) and depth(resources.dlq_url) == (0, 0)
    assert len(drain(resources.queues["all"])) == 3


# ------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max", "0"], "--max: must be a whole number of 1 or more"),
        (["--max", "x"], "--max: must be a whole number"),
        (["--topic-arn", "alerts"], "is not an SNS topic ARN"),
        (["--dlq-url", "ftp://queue"], "is not an SQS queue URL"),
        (["--region", "Canada"], "is not an AWS region"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    assert replay.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err) and message in err


def test_no_region_is_one_line_and_exit_2(aws, monkeypatch, tmp_path, capsys):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert replay.main(["--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err) and "no AWS region" in err


def test_an_aws_error_during_the_run_is_one_line_and_exit_1(resources, capsys):
    code = replay.main(["--topic-arn", resources.topic_arn, "--table", resources.table,
                        "--dlq-url", resources.dlq_url + "-gone"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1 and one_line(err) and "does not exist" in err
    assert json.loads(out) == {"replayed": 0, "skipped": 0, "deferred": 0, "failed": 0, "unreadable": 0,
                               "dry_run": False, "error": err.strip().removeprefix("error: ")}  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambda_src.replay", *args],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_cli_reads_its_defaults_from_the_worker_stack(resources):
    park_with_the_publisher(resources, [alert("s", "c1", ["A0A"]), alert("s", "c2", ["A0B"])])
    outputs = {"AlertsTopicArn": resources.topic_arn, "StateTableName": resources.table,
               "PostingsDlqUrl": resources.dlq_url}  # fmt: skip
    template = {"Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()}}  # fmt: skip
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName=replay.STACK_NAME, TemplateBody=json.dumps(template))
    try:
        dry = _cli("--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["replayed"] == 2 and "batch 1 (dry run)" in dry.stderr
        assert depth(resources.dlq_url) == (2, 0)

        real = _cli()
        assert real.returncode == 0, real.stderr
        assert len(real.stdout.splitlines()) == 1
        assert json.loads(real.stdout) == {"replayed": 2, "skipped": 0, "deferred": 0, "failed": 0,
                                           "unreadable": 0, "dry_run": False}  # fmt: skip
        assert sorted(m["posting_id"] for m in drain(resources.queues["all"])) == ["c1", "c2"]
        assert depth(resources.dlq_url) == (0, 0)
    finally:
        cloudformation.delete_stack(StackName=replay.STACK_NAME)


def test_a_missing_stack_is_one_line_and_exit_2(aws):
    result = _cli("--stack", "FsaAlerts-Nowhere")
    assert result.returncode == 2 and result.stdout == ""
    assert one_line(result.stderr) and "stack FsaAlerts-Nowhere not found" in result.stderr


def test_a_batch_is_split_to_stay_under_the_publish_batch_size_limit():
    def parked(n: int, size: int) -> replay.Parked:
        return replay.Parked(f"m{n}", "r", replay.PostingKey("s", f"p{n}"), "why", "x" * size, False,
                             {"fsa": {"DataType": "String.Array", "StringValue": '["A0A"]'}})  # fmt: skip

    items = [parked(0, 100_000), parked(1, 100_000), parked(2, 100_000), parked(3, 10), parked(4, 300_000)]
    groups = replay.by_size(items)
    assert [[p.posting.id for p in g] for g in groups] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert all(sum(map(replay.publish_size, g)) <= replay.BATCH_LIMIT_BYTES for g in groups[:2])
