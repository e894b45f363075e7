"""Publish alerts to SNS in batches of ten; retry failed entries, then park them in the DLQ."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from lambda_src.worker.alerts import Alert

BATCH_SIZE = 10  # PublishBatch's limit on entries
#: PublishBatch's limit on the whole request: over it SNS refuses every entry at once.
BATCH_BYTES = 256 * 1024
#: Room for a parked alert's message in the DLQ body (SQS takes 256 KiB in all).
PARKED_MESSAGE_LIMIT = 200_000
Outcome = Literal["published", "parked", "failed"]
#: An alert's SNS message and message attributes, as sent.
Prepared = tuple[str, dict[str, dict[str, str]]]


@dataclass
class Delivery:
    outcome: Outcome
    message_id: str | None = None
    reason: str | None = None
    #: Failed attempts before the final outcome (each counts as AlertsFailed).
    failed_attempts: int = 0


class Publisher:
    def __init__(
        self,
        sns: Any,
        sqs: Any,
        *,
        topic_arn: str,
        dlq_url: str,
        message: Callable[[Alert], str],
        attempts: int = 3,
        backoff_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sns, self._sqs = sns, sqs
        self._topic, self._dlq = topic_arn, dlq_url
        self._message = message
        self._attempts, self._backoff, self._sleep = attempts, backoff_s, sleep

    def publish(self, alerts: list[Alert]) -> list[Delivery]:
        """One Delivery per alert, in order. ``failed`` only when even parking failed."""
        deliveries = [Delivery("failed") for _ in alerts]
        # Each message and its attributes are built once, whatever the retries and parking.
        prepared = [(self._message(a), a.attributes()) for a in alerts]
        for chunk in batches([entry_size(message, attrs) for message, attrs in prepared]):
            self._publish_chunk(alerts, prepared, list(chunk), deliveries)
        return deliveries

    def _publish_chunk(
        self, alerts: list[Alert], prepared: list[Prepared], pending: list[int], deliveries: list[Delivery]
    ) -> None:
        reasons: dict[int, str] = {}
        for attempt in range(self._attempts):
            if not pending:
                return
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            retry: list[int] = []
            for i, reason, permanent in self._try_batch(prepared, pending, deliveries):
                deliveries[i].failed_attempts += 1
                reasons[i] = reason
                if not permanent:
                    retry.append(i)
                else:
                    self._park(alerts[i], prepared[i], reason, deliveries[i])
            pending = retry
        for i in pending:
            self._park(alerts[i], prepared[i], reasons[i], deliveries[i])

    def _try_batch(self, prepared: list[Prepared], pending: list[int], deliveries: list[Delivery]):
        """PublishBatch once; yield (index, reason, permanent) for each entry that failed."""
        entries = [{"Id": f"e{i}", "Message": prepared[i][0], "MessageAttributes": prepared[i][1]} for i in pending]
        try:
            response = self._sns.publish_batch(TopicArn=self._topic, PublishBatchRequestEntries=entries)
        except (ClientError, BotoCoreError) as exc:
            for i in pending:
                yield i, f"PublishBatch failed: {_one_line(exc)}", False
            return
        for ok in response.get("Successful", []):
            deliveries[int(ok["Id"][1:])] = Delivery(
                "published", ok.get("MessageId"), failed_attempts=deliveries[int(ok["Id"][1:])].failed_attempts
            )
        for failed in response.get("Failed", []):
            reason = f"{failed.get('Code', 'Error')}: {failed.get('Message', '')}".strip()
            yield int(failed["Id"][1:]), reason, bool(failed.get("SenderFault"))

    def _park(self, alert: Alert, prepared: Prepared, reason: str, delivery: Delivery) -> None:
        message, attributes = prepared
        body = {
            "reason": reason,
            "source": alert.posting.source,
            "posting_id": alert.posting.id,
            # A message SNS refused for its size must still fit in SQS, or the posting could
            # never be parked and would block its source's cursor for good.
            "message": message[:PARKED_MESSAGE_LIMIT],
            "message_truncated": len(message) > PARKED_MESSAGE_LIMIT,
            "attributes": attributes,
        }
        try:
            self._sqs.send_message(QueueUrl=self._dlq, MessageBody=json.dumps(body, ensure_ascii=False))
        except (ClientError, BotoCoreError) as exc:
            delivery.outcome, delivery.reason = "failed", f"{reason}; parking failed too: {_one_line(exc)}"
            return
        delivery.outcome, delivery.reason = "parked", reason


def entry_size(message: str, attributes: dict[str, dict[str, str]]) -> int:
    """Bytes SNS counts for one entry: the message and its attributes' names, types and values."""
    attrs = sum(len(k.encode()) + len(v["DataType"].encode()) + len(v["StringValue"].encode())
                for k, v in attributes.items())  # fmt: skip
    return len(message.encode()) + attrs


def batches(sizes: list[int]) -> list[range]:
    """Consecutive index ranges of at most BATCH_SIZE entries and BATCH_BYTES in all; an entry
    over BATCH_BYTES goes alone (SNS refuses it, and only it is parked)."""
    out: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start == BATCH_SIZE or total + size > BATCH_BYTES):
            out.append(range(start, i))
            start, total = i, 0
        total += size
    if sizes:
        out.append(range(start, len(sizes)))
    return out


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
