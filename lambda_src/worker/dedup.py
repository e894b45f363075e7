"""Publish each posting at most once: Powertools idempotency records keyed by source + id.

The worker publishes in batches of ten, so it drives the Powertools persistence layer
directly instead of through ``@idempotent_function`` (which wraps one call per record):
claim (INPROGRESS, expiring with the Lambda's remaining time) -> publish -> complete, or
release when the posting was parked instead of sent.
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

Claim = Literal["claimed", "already_sent", "in_progress"]
KEY_PREFIX = "posting"
_COMPLETED = "COMPLETED"


class Dedup:
    def __init__(self, table_name: str, dynamodb_client: Any, *, keep_days: int = 30) -> None:
        # Each Dedup gets its own persistence layer: a shared one keeps its first configuration.
        self._layer = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=dynamodb_client)
        self._layer.configure(
            IdempotencyConfig(expires_after_seconds=keep_days * 86_400, use_local_cache=False),
            key_prefix=KEY_PREFIX,
        )

    def claim(self, source: str, posting_id: str, remaining_ms: int) -> Claim:
        """Take the posting for this run, or say why not."""
        data = _data(source, posting_id)
        try:
            self._layer.save_inprogress(data=data, remaining_time_in_millis=remaining_ms)
        except IdempotencyItemAlreadyExistsError as exc:
            record = exc.old_data_record or self._get(data)
            if record is None:  # deleted in between: the other run released it
                return self.claim(source, posting_id, remaining_ms)
            return "already_sent" if record.status == _COMPLETED else "in_progress"
        return "claimed"

    def complete(self, source: str, posting_id: str, result: dict[str, Any]) -> None:
        self._layer.save_success(data=_data(source, posting_id), result=result)

    def release(self, source: str, posting_id: str, reason: Exception) -> None:
        """Forget the claim: the posting was parked (or not sent), so a replay may send it."""
        self._layer.delete_record(data=_data(source, posting_id), exception=reason)

    def _get(self, data: dict[str, str]) -> DataRecord | None:
        try:
            return self._layer.get_record(data=data)
        except IdempotencyItemNotFoundError:
            return None


def _data(source: str, posting_id: str) -> dict[str, str]:
    return {"source": source, "id": posting_id}
