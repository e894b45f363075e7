"""Source cursors in the state table, moved only by compare-and-set."""

from __future__ import annotations

import datetime as dt
from typing import Any

from botocore.exceptions import ClientError

CURSOR_PREFIX = "cursor#"


class CursorStore:
    """``id = cursor#<source>`` items holding the cursor (a map of strings) and a version."""

    def __init__(self, table_name: str, dynamodb_client: Any) -> None:
        self._table = table_name
        self._ddb = dynamodb_client

    def get(self, source: str) -> tuple[dict[str, str], int]:
        item = self._ddb.get_item(
            TableName=self._table, Key={"id": {"S": CURSOR_PREFIX + source}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return {}, 0
        values = {k: v["S"] for k, v in item.get("cursor", {}).get("M", {}).items()}
        return values, int(item["version"]["N"])

    def put(self, source: str, cursor: dict[str, str], expected_version: int) -> bool:
        """Write ``cursor`` if nobody moved it since ``expected_version`` was read."""
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": CURSOR_PREFIX + source},
                    "cursor": {"M": {k: {"S": str(v)} for k, v in cursor.items()}},
                    "version": {"N": str(expected_version + 1)},
                    "updated_at": {"S": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
                },
                ConditionExpression="attribute_not_exists(id) OR version = :expected",
                ExpressionAttributeValues={":expected": {"N": str(expected_version)}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True
