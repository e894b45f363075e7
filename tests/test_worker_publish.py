"""Publisher retries and parking, and the alert message's shape.

SNS throttling and transient errors cannot be produced by moto, so the retry path uses a
scripted SNS client (the boundary); parking and the rest run against the real moto server
in test_worker_run.py.
"""

from __future__ import annotations

import json

from data_builder.index import Match
from lambda_src.worker.alerts import TEXT_LIMIT, Alert
from lambda_src.worker.locate import Location
from lambda_src.worker.postings import Posting
from lambda_src.worker.publish import Publisher, batches


def alert(n: int, **posting: object) -> Alert:
    fields = {"source": "s", "id": f"p{n}", "text": f"posting {n}", **posting}
    return Alert(Posting(**fields), Location(43.64, -79.39, "coordinates", ""), [Match("M5V", 0.1), Match("M5J", 0.2)])


class ScriptedSns:
    """Answers PublishBatch from a script: per call, the entry ids to fail and how."""

    def __init__(self, script: list[dict[str, tuple[str, bool]]]) -> None:
        self.script, self.calls = script, []

    def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[dict]) -> dict:
        self.calls.append([e["Id"] for e in PublishBatchRequestEntries])
        failing = self.script.pop(0) if self.script else {}
        entries = PublishBatchRequestEntries
        ok = [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in entries if e["Id"] not in failing]
        failed = [
            {"Id": i, "Code": code, "Message": "scripted", "SenderFault": sender}
            for i, (code, sender) in failing.items()
            if i in {e["Id"] for e in PublishBatchRequestEntries}
        ]
        return {"Successful": ok, "Failed": failed}


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict:
        self.sent.append(json.loads(MessageBody))
        return {"MessageId": "dlq"}


def publisher(sns: ScriptedSns, sqs: RecordingSqs, attempts: int = 3) -> Publisher:
    return Publisher(sns, sqs, topic_arn="arn:t", dlq_url="q", message=lambda a: a.message(
        radius_km=2.5, mode="coverage", index_version="v-x"), attempts=attempts, sleep=lambda _s: None)  # fmt: skip


def test_a_throttled_entry_is_retried_alone_and_then_published():
    sns, sqs = ScriptedSns([{"e1": ("Throttled", False)}]), RecordingSqs()
    deliveries = publisher(sns, sqs).publish([alert(0), alert(1), alert(2)])
    assert [d.outcome for d in deliveries] == ["published"] * 3
    assert [d.failed_attempts for d in deliveries] == [0, 1, 0]
    assert sns.calls == [["e0", "e1", "e2"], ["e1"]]
    assert sqs.sent == []


def test_an_entry_failing_every_attempt_is_parked_with_its_reason():
    script = [{"e0": ("InternalError", False)}] * 3
    sns, sqs = ScriptedSns(script), RecordingSqs()
    deliveries = publisher(sns, sqs).publish([alert(0), alert(1)])
    assert [d.outcome for d in deliveries] == ["parked", "published"]
    assert deliveries[0].failed_attempts == 3 and len(sns.calls) == 3
    assert sqs.sent[0]["posting_id"] == "p0" and sqs.sent[0]["reason"] == "InternalError: scripted"


def test_a_sender_fault_is_parked_without_retrying():
    sns, sqs = ScriptedSns([{"e0": ("InvalidParameter", True)}]), RecordingSqs()
    deliveries = publisher(sns, sqs).publish([alert(0)])
    assert deliveries[0].outcome == "parked" and len(sns.calls) == 1


def test_batches_hold_at_most_ten_entries():
    sns, sqs = ScriptedSns([]), RecordingSqs()
    deliveries = publisher(sns, sqs).publish([alert(i) for i in range(23)])
    assert [len(c) for c in sns.calls] == [10, 10, 3]
    assert all(d.outcome == "published" for d in deliveries)


def test_message_shape_truncation_and_attributes():
    long = alert(0, text="x" * (TEXT_LIMIT + 5), attributes={"category": "vaccine", "capacity": 120.0,
                                                            "blank": " ", "nan": float("nan")})  # fmt: skip
    body = json.loads(long.message(radius_km=2.5, mode="coverage", index_version="v-x"))
    assert body["schema_version"] == 1 and body["text_truncated"] is True and len(body["text"]) == TEXT_LIMIT
    assert body["fsas"] == [{"fsa": "M5V", "km": 0.1}, {"fsa": "M5J", "km": 0.2}]
    attrs = long.attributes()
    assert attrs["fsa"] == {"DataType": "String.Array", "StringValue": '["M5V", "M5J"]'}
    assert attrs["category"] == {"DataType": "String", "StringValue": "vaccine"}
    assert attrs["capacity"] == {"DataType": "Number", "StringValue": "120.0"}
    assert "blank" not in attrs and "nan" not in attrs


def test_at_most_ten_attributes_reach_sns():
    many = alert(0, attributes={f"a{i}": "v" for i in range(12)})
    assert len(many.attributes()) == 10  # fsa + 9: SNS refuses more than 10


def test_batches_stay_under_the_publish_batch_byte_limit():
    # Real SNS refuses a whole PublishBatch over 256 KiB: one huge alert must not take its
    # neighbours down with it.
    big = "https://example.ca/" + "x" * 100_000
    alerts = [alert(0, url=big), alert(1, url=big), alert(2, url=big), alert(3), alert(4, url="x" * 300_000)]
    sns, sqs = ScriptedSns([]), RecordingSqs()
    publisher(sns, sqs).publish(alerts)
    assert sns.calls == [["e0", "e1"], ["e2", "e3"], ["e4"]]


def test_batches_by_count_and_bytes():
    assert batches([1] * 23) == [range(0, 10), range(10, 20), range(20, 23)]
    assert batches([200_000, 100_000, 10]) == [range(0, 1), range(1, 3)]
    assert batches([300_000]) == [range(0, 1)]
    assert batches([]) == []
