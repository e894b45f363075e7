"""Re-publish the postings parked in the postings dead-letter queue, through the worker's idempotent path.

    python -m lambda_src.replay --dry-run      # list what a replay would do; change nothing
    python -m lambda_src.replay                # replay everything parked
    make replay ARGS="--max 50 --region ca-central-1"

Each DLQ message is what ``Publisher._park`` wrote (JSON: reason, source, posting_id, message,
message_truncated, attributes). Per message, as the worker does per posting:

* ``Dedup.claim(source, posting_id)``: ``already_sent`` -> the message is deleted (skipped);
  ``in_progress`` -> a worker run or another replay holds the posting, the message is left
  (deferred); ``claimed`` -> the stored message and attributes are published with the worker's
  ``Publisher`` (PublishBatch, up to ten and 256 KiB at a time, failed entries retried).
* published: ``Dedup.complete`` and the message is deleted (replayed). Refused again: the
  posting is parked anew with the new reason, the old message deleted and the claim released
  (failed), so a later replay may try again.
* left (counted, never replayed): messages that are not a parked posting (``unreadable``: not
  JSON, keys missing) and postings whose message was cut to fit the queue
  (``message_truncated``: SNS refused it for its size and would again; failed).

Messages left in the queue are made visible again when the run ends. ``--dry-run`` receives
with a short visibility timeout, reads the idempotency records without writing any, lists each
parked posting (source, posting_id, reason, FSAs) and what a replay would do with it, and
makes every message visible again; its counts are what a replay would do.

Progress goes to stderr, one line per batch; stdout gets one JSON line:
{"replayed": n, "skipped": n, "deferred": n, "failed": n, "unreadable": n, "dry_run": bool}
(a dry run adds "postings", the listing). The topic, table and queue default to the outputs
of the FsaAlerts-Worker stack (CloudFormation DescribeStacks). Exit codes: 0 done (see the
counts), 1 AWS error during the run (the summary so far is still printed), 2 bad arguments,
no region, or the stack or one of its outputs not found, 130 interrupted. Errors are one line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lambda_src.subscribe import STACK_NAME, TOPIC_OUTPUT
from lambda_src.worker.publish import BATCH_BYTES, entry_size

#: The worker stack's outputs (stacks/worker.py) for the state table and the postings DLQ.
TABLE_OUTPUT = "StateTableName"
DLQ_OUTPUT = "PostingsDlqUrl"
#: Seconds a received message stays invisible while a replay decides about it (a dry run: less);
#: every message left in the queue is made visible again when the run ends.
VISIBILITY_S = 120
DRY_RUN_VISIBILITY_S = 30
#: Long polling on receive, so an empty answer means an empty queue, not a sampled one.
RECEIVE_WAIT_S = 1
#: How long a replay's claim on a posting holds if the replay dies before it completes or
#: releases it (Dedup.claim's remaining time): then a worker run or a later replay may take it.
CLAIM_MS = 120_000
#: PublishBatch's limit for all its entries together (SNS answers BatchRequestTooLong above it).
BATCH_LIMIT_BYTES = BATCH_BYTES
#: Receives in a row that bring back only messages already seen this run before giving up.
MAX_STALE_RECEIVES = 3
PARKED_KEYS = ("reason", "source", "posting_id", "message", "message_truncated", "attributes")

_TOPIC_ARN = re.compile(r"^arn:aws[\w-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}$")
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_QUEUE_URL = re.compile(r"^https?://[^\s/]+/\S+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_STACK = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")


class UsageError(ValueError):
    """Bad input, or nothing to work on: exit code 2."""


class ReplayRefused(Exception):
    """Why a replay released its claim: SNS refused the posting again (it was parked anew)."""


# ------------------------------------------------------------------------ parked postings


@dataclass(frozen=True)
class PostingKey:
    source: str
    id: str


@dataclass
class Parked:
    """One DLQ message that is a parked posting. Quacks like the ``Alert`` that Publisher
    publishes and parks: ``posting.source``, ``posting.id``, ``attributes()``."""

    message_id: str
    receipt: str
    posting: PostingKey
    reason: str
    message: str
    truncated: bool
    attrs: dict[str, dict[str, str]]

    @property
    def key(self) -> tuple[str, str]:
        return self.posting.source, self.posting.id

    def attributes(self) -> dict[str, dict[str, str]]:
        return self.attrs

    def fsas(self) -> list[str] | str:
        raw = self.attrs.get("fsa", {}).get("StringValue", "")
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        return [str(v) for v in value] if isinstance(value, list) else raw

    def label(self) -> str:
        fsas = self.fsas()
        where = ",".join(fsas) if isinstance(fsas, list) else repr(fsas)
        return f"{self.posting.source}/{self.posting.id} fsa={where or '-'} reason={self.reason!r}"


def parse_parked(message: dict[str, Any]) -> Parked | str:
    """The parked posting in an SQS message, or why it is not one (one line)."""
    try:
        body = json.loads(message.get("Body", ""))
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    missing = [k for k in PARKED_KEYS if k not in body]
    if missing:
        return f"missing {', '.join(missing)}"
    for name in ("reason", "source", "posting_id", "message"):
        if not isinstance(body[name], str) or (name != "reason" and not body[name]):
            return f"{name} is not a non-empty string" if name != "reason" else "reason is not a string"
    if not isinstance(body["message_truncated"], bool):
        return "message_truncated is not true or false"
    attrs = body["attributes"]
    if not (
        isinstance(attrs, dict)
        and all(
            isinstance(v, dict) and isinstance(v.get("DataType"), str) and isinstance(v.get("StringValue"), str)
            for v in attrs.values()
        )
    ):
        return "attributes are not SNS message attributes"
    return Parked(
        message_id=message["MessageId"],
        receipt=message["ReceiptHandle"],
        posting=PostingKey(body["source"], body["posting_id"]),
        reason=body["reason"],
        message=body["message"],
        truncated=body["message_truncated"],
        attrs=attrs,
    )


# ------------------------------------------------------------------------------ the run


@dataclass
class Summary:
    replayed: int = 0
    skipped: int = 0
    deferred: int = 0
    failed: int = 0
    unreadable: int = 0
    dry_run: bool = False
    #: A dry run's listing: one entry per message, with what a replay would do.
    postings: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> tuple[int, ...]:
        return self.replayed, self.skipped, self.deferred, self.failed, self.unreadable

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.dry_run:
            del out["postings"]
        return out


class _SeenSqs:
    """The SQS client Publisher parks with: records the id of each message it sends, so a
    posting parked anew by this run is not received and tried again by the same run."""

    def __init__(self, sqs: Any, seen: set[str]) -> None:
        self._sqs, self._seen = sqs, seen

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        response = self._sqs.send_message(**kwargs)
        self._seen.add(response["MessageId"])
        return response


class Replayer:
    def __init__(
        self,
        *,
        sqs: Any,
        dlq_url: str,
        dedup: Any,
        publisher: Callable[[Any], Any] | None,
        dry_run: bool = False,
        max_messages: int | None = None,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        """``publisher(sqs)`` builds the Publisher that parks through ``sqs``; None for a dry run."""
        self.sqs, self.dlq_url, self.dedup = sqs, dlq_url, dedup
        self.dry_run, self.max, self.say = dry_run, max_messages, say
        self.summary = Summary(dry_run=dry_run)
        self._seen: set[str] = set()  # message ids received (or sent) this run
        self._held: dict[str, str] = {}  # message id -> latest receipt: left in the queue
        self._keys: set[tuple[str, str]] = set()  # a dry run's postings so far
        self._publisher = None if dry_run or publisher is None else publisher(_SeenSqs(sqs, self._seen))

    def run(self) -> Summary:
        """Every message, or ``max_messages``; the summary also when an AWS error ends the run."""
        taken, batch, stale = 0, 0, 0
        try:
            while self.max is None or taken < self.max:
                received = self._receive(10 if self.max is None else min(10, self.max - taken))
                if not received:
                    break
                fresh = []
                for message in received:
                    if message["MessageId"] in self._seen:  # back after its visibility ran out, or parked anew
                        self._held[message["MessageId"]] = message["ReceiptHandle"]
                    else:
                        self._seen.add(message["MessageId"])
                        fresh.append(message)
                if not fresh:
                    stale += 1
                    if stale >= MAX_STALE_RECEIVES:
                        break
                    continue
                stale, batch, taken = 0, batch + 1, taken + len(fresh)
                before = self.summary.counts()
                self._batch(fresh)
                self._progress(batch, len(fresh), before)
        finally:
            self._make_visible()
        return self.summary

    # ---------------------------------------------------------------- one batch

    def _batch(self, messages: list[dict[str, Any]]) -> None:
        parked: list[Parked] = []
        for message in messages:
            if self.dry_run:  # every message stays, visible again when the run ends
                self._hold(message["MessageId"], message["ReceiptHandle"])
            item = parse_parked(message)
            if isinstance(item, str):
                self.summary.unreadable += 1
                self._hold(message["MessageId"], message["ReceiptHandle"])
                self.say(f"  left unreadable message {message['MessageId']}: {item}")
                if self.dry_run:
                    self.summary.postings.append({"message_id": message["MessageId"], "action": f"unreadable: {item}"})
            elif item.truncated:
                self.summary.failed += 1
                self._hold(item.message_id, item.receipt)
                why = "its message was cut to fit the queue (SNS refused it for its size)"
                self.say(f"  left {item.label()}: cannot replay: {why}")
                if self.dry_run:
                    self._list(item, f"cannot replay: {why}")
            else:
                parked.append(item)
        if self.dry_run:
            for item in parked:
                self._dry_run(item)
            return
        # A posting parked twice is claimed once per round: its second message then finds it sent.
        for this_round in _rounds(parked):
            self._round(this_round)

    def _round(self, items: list[Parked]) -> None:
        claimed: list[Parked] = []
        for item in items:
            claim = self.dedup.claim(*item.key, CLAIM_MS)
            if claim == "already_sent":
                self.summary.skipped += 1
                self._delete(item)
            elif claim == "in_progress":
                self.summary.deferred += 1
                self._hold(item.message_id, item.receipt)
                self.say(f"  left {item.label()}: a worker run or another replay holds it")
            else:
                claimed.append(item)
        if not claimed:
            return
        pending = {item.message_id: item for item in claimed}
        try:
            for group in by_size(claimed):
                deliveries = self._publisher.publish(group)
                for item, delivery in zip(group, deliveries):
                    del pending[item.message_id]
                    self._settle(item, delivery)
        except BaseException:
            for item in pending.values():  # not known to be sent: let a later run take them
                self._release(item, "the replay stopped before publishing")
            raise

    def _settle(self, item: Parked, delivery: Any) -> None:
        if delivery.outcome == "published":
            self.summary.replayed += 1
            try:
                self.dedup.complete(*item.key, {"message_id": delivery.message_id, "replayed": True})
            except Exception as exc:  # sent all the same: its claim expires, the message goes
                self.say(f"  {item.label()}: published, but its record was not completed: {_one_line(exc)}")
            self._delete(item)
        else:
            self.summary.failed += 1
            self._release(item, delivery.reason or "")
            if delivery.outcome == "parked":  # parked anew with the new reason: the old one goes
                self._delete(item)
            else:  # could not even be parked: the old message stays
                self._hold(item.message_id, item.receipt)
            self.say(f"  {item.posting.source}/{item.posting.id} refused again: {delivery.reason}")

    def _dry_run(self, item: Parked) -> None:
        if item.key in self._keys:
            self.summary.skipped += 1
            self._list(item, "skip: a message above replays it")
            return
        self._keys.add(item.key)
        status = sent_status(self.dedup, *item.key)
        if status == "already_sent":
            self.summary.skipped += 1
            self._list(item, "skip: already sent; the message would be deleted")
        elif status == "in_progress":
            self.summary.deferred += 1
            self._list(item, "defer: a worker run or another replay holds it")
        else:
            self.summary.replayed += 1
            self._list(item, "replay")

    def _list(self, item: Parked, action: str) -> None:
        fsas = item.fsas()
        self.summary.postings.append(
            {"source": item.posting.source, "posting_id": item.posting.id, "reason": item.reason,
             "fsas": fsas, "action": action}
        )  # fmt: skip
        self.say(f"  {action}: {item.label()}")

    # ---------------------------------------------------------------- SQS

    def _receive(self, count: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.dlq_url,
            MaxNumberOfMessages=count,
            VisibilityTimeout=DRY_RUN_VISIBILITY_S if self.dry_run else VISIBILITY_S,
            WaitTimeSeconds=RECEIVE_WAIT_S,
        )
        return response.get("Messages", [])

    def _hold(self, message_id: str, receipt: str) -> None:
        self._held[message_id] = receipt

    def _delete(self, item: Parked) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=item.receipt)
        except Exception as exc:  # it comes back; its posting is sent, so the next replay skips it
            self.say(f"  {item.posting.source}/{item.posting.id}: message not deleted: {_one_line(exc)}")

    def _release(self, item: Parked, reason: str) -> None:
        try:
            self.dedup.release(*item.key, ReplayRefused(reason))
        except Exception as exc:  # the claim expires after CLAIM_MS instead
            self.say(f"  {item.posting.source}/{item.posting.id}: claim not released: {_one_line(exc)}")

    def _make_visible(self) -> None:
        """Everything this run left in the queue, visible again now rather than after its timeout."""
        held = list(self._held.values())
        for start in range(0, len(held), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
                for i, receipt in enumerate(held[start : start + 10])
            ]
            try:
                failed = self.sqs.change_message_visibility_batch(QueueUrl=self.dlq_url, Entries=entries).get(
                    "Failed", []
                )
            except Exception as exc:
                failed = entries
                self.say(f"  could not make {len(entries)} message(s) visible again: {_one_line(exc)}")
            if failed:
                timeout = DRY_RUN_VISIBILITY_S if self.dry_run else VISIBILITY_S
                self.say(f"  {len(failed)} message(s) left become visible again within {timeout} s")
        self._held.clear()

    def _progress(self, batch: int, size: int, before: tuple[int, ...]) -> None:
        delta = [now - then for now, then in zip(self.summary.counts(), before)]
        names = ("replayed", "skipped", "deferred", "failed", "unreadable")
        if self.dry_run:
            names = ("would replay", "would skip", "would defer", "cannot replay", "unreadable")
        counts = ", ".join(f"{name} {n}" for name, n in zip(names, delta))
        self.say(f"batch {batch}{' (dry run)' if self.dry_run else ''}: {size} message(s): {counts}")


def publish_size(item: Parked) -> int:
    return entry_size(item.message, item.attrs)


def by_size(items: list[Parked], limit: int = BATCH_LIMIT_BYTES) -> list[list[Parked]]:
    """Consecutive groups whose sizes add up to at most ``limit`` (one item over it goes alone):
    SNS refuses a whole PublishBatch over 256 KiB, which would park all ten entries again."""
    groups: list[list[Parked]] = []
    total = 0
    for item in items:
        size = publish_size(item)
        if groups and total + size <= limit:
            groups[-1].append(item)
            total += size
        else:
            groups.append([item])
            total = size
    return groups


def _rounds(items: list[Parked]) -> list[list[Parked]]:
    """``[a, b, a']`` -> ``[[a, b], [a']]``: each posting once per round, in queue order."""
    rounds: list[list[Parked]] = []
    for item in items:
        for this_round in rounds:
            if all(other.key != item.key for other in this_round):
                this_round.append(item)
                break
        else:
            rounds.append([item])
    return rounds


def sent_status(dedup: Any, source: str, posting_id: str) -> str:
    """What ``Dedup.claim`` would answer now, read without writing: ``already_sent``,
    ``in_progress`` or ``claimed``."""
    from lambda_src.worker import dedup as dedup_module

    record = dedup._get(dedup_module._data(source, posting_id))
    if record is None or record.is_expired:
        return "claimed"
    if record.status == "COMPLETED":
        return "already_sent"
    expiry = record.in_progress_expiry_timestamp
    if expiry is not None and expiry < int(time.time() * 1000):
        return "claimed"
    return "in_progress"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------ the CLI


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    """The stack's outputs by key; UsageError when there is no such stack."""
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in error.get("Message", ""):
            raise UsageError(
                f"stack {stack} not found in this region; is it deployed? (or pass --topic-arn, --table and --dlq-url)"
            ) from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in (stacks[0].get("Outputs", []) if stacks else [])}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {value!r}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m lambda_src.replay",
        description="Re-publish the postings parked in the postings dead-letter queue, each at most once.",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what a replay would do; change nothing")
    parser.add_argument("--max", type=_positive, metavar="N", help="take at most N messages from the queue")
    parser.add_argument("--topic-arn", help=f"the alerts topic (default: the {TOPIC_OUTPUT} output of the stack)")
    parser.add_argument("--table", help=f"the state table (default: the {TABLE_OUTPUT} output of the stack)")
    parser.add_argument("--dlq-url", help=f"the postings DLQ URL (default: the {DLQ_OUTPUT} output of the stack)")
    parser.add_argument("--stack", default=STACK_NAME, help=f"the worker stack to read defaults from ({STACK_NAME})")
    parser.add_argument("--region", help="AWS region (default: the AWS CLI/SDK configuration)")
    args = parser.parse_args(argv)
    checks = [
        ("--topic-arn", args.topic_arn, _TOPIC_ARN, "an SNS topic ARN"),
        ("--table", args.table, _TABLE, "a DynamoDB table name"),
        ("--dlq-url", args.dlq_url, _QUEUE_URL, "an SQS queue URL"),
        ("--region", args.region, _REGION, "an AWS region such as ca-central-1"),
        ("--stack", args.stack, _STACK, "a CloudFormation stack name"),
    ]
    for flag, value, pattern, what in checks:
        if value is not None and not pattern.fullmatch(value):
            raise UsageError(f"{flag} {value!r} is not {what}")
    return args


def main(argv: list[str] | None = None) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        args = parse_args(argv)
    except UsageError as exc:
        say(f"error: {exc}")
        return 2

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

    from lambda_src.worker.dedup import Dedup
    from lambda_src.worker.publish import Publisher

    replayer: Replayer | None = None
    try:
        session = boto3.session.Session(region_name=args.region)
        if not session.region_name:
            raise UsageError("no AWS region: pass --region or set AWS_REGION")
        wanted = {TABLE_OUTPUT: args.table, DLQ_OUTPUT: args.dlq_url}
        if not args.dry_run:
            wanted[TOPIC_OUTPUT] = args.topic_arn
        if any(v is None for v in wanted.values()):
            outputs = stack_outputs(session.client("cloudformation"), args.stack)
            for key, value in wanted.items():
                if value is None:
                    if key not in outputs:
                        raise UsageError(f"stack {args.stack} has no output {key}; is it the worker stack?")
                    wanted[key] = outputs[key]
        dlq_url = wanted[DLQ_OUTPUT]

        def publisher(parking_sqs: Any) -> Publisher:
            sns = session.client("sns")
            topic_arn = wanted[TOPIC_OUTPUT]
            return Publisher(sns, parking_sqs, topic_arn=topic_arn, dlq_url=dlq_url, message=lambda p: p.message)

        replayer = Replayer(
            sqs=session.client("sqs"),
            dlq_url=dlq_url,
            dedup=Dedup(wanted[TABLE_OUTPUT], session.client("dynamodb")),
            publisher=publisher,
            dry_run=args.dry_run,
            max_messages=args.max,
            say=say,
        )
        summary = replayer.run()
    except (UsageError, NoRegionError) as exc:
        say(f"error: {exc}")
        return 2
    except (BotoCoreError, ClientError) as exc:
        if replayer is not None:
            print(json.dumps({**replayer.summary.as_dict(), "error": _one_line(exc)}, ensure_ascii=False))
        say(f"error: {_one_line(exc)}")
        return 1
    except KeyboardInterrupt:  # claims in hand were released, messages left made visible again
        if replayer is not None:
            print(json.dumps({**replayer.summary.as_dict(), "error": "interrupted"}, ensure_ascii=False))
        say("error: interrupted")
        return 130
    print(json.dumps(summary.as_dict(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
