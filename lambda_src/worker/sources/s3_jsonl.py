"""JSON Lines objects in S3: one JSON object per line, objects taken in key order.

Cursor: ``start_after``, the last key read. Each object's last posting carries the
object's key as its checkpoint, so a run stopped part way resumes at an object boundary
(postings already sent from that object are skipped by idempotency).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambda_src.worker.http import one_line
from lambda_src.worker.postings import Fetch
from lambda_src.worker.source_config import S3JsonlConfig
from lambda_src.worker.sources.base import SourceError
from lambda_src.worker.sources.fields import Collector

START_AFTER = "start_after"


class S3Jsonl:
    def __init__(self, config: S3JsonlConfig, s3_client: Any) -> None:
        self.config = config
        self.name = config.name
        self._s3 = s3_client

    def fetch(self, cursor: dict[str, str]) -> Fetch:
        objects = self._list(cursor.get(START_AFTER))
        # Refuse before reading anything, so one oversize object costs no reads.
        for obj in objects:
            if obj["Size"] > self.config.max_bytes:
                raise self._too_big(obj["Key"], obj["Size"])
        collector = Collector(self.name)
        for obj in objects:
            key = obj["Key"]
            before = len(collector.postings)
            for line in self._read(key).split(b"\n"):
                line = line.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except (ValueError, RecursionError):  # bad JSON, bad UTF-8, nested too deeply
                    collector.reject("invalid_json")
                    continue
                collector.add_item(item, self.config.fields)
            if len(collector.postings) > before:
                collector.postings[-1] = replace(collector.postings[-1], checkpoint=key)
        done = {START_AFTER: objects[-1]["Key"]} if objects else dict(cursor)
        return Fetch(collector.postings, done, checkpoint_key=START_AFTER, rejected=dict(collector.rejected))

    def _list(self, start_after: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Prefix": self.config.prefix,
            "MaxKeys": self.config.max_objects,
        }
        if start_after:
            params["StartAfter"] = start_after
        try:
            listed = self._s3.list_objects_v2(**params).get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            where = f"s3://{self.config.bucket}/{self.config.prefix}"
            raise SourceError(one_line(f"{self.name}: cannot list {where}: {exc}")) from None
        # S3 lists in key order already; sorted() keeps it so with any S3-compatible store.
        return sorted(listed, key=lambda obj: obj["Key"].encode())[: self.config.max_objects]

    def _read(self, key: str) -> bytes:
        try:
            response = self._s3.get_object(Bucket=self.config.bucket, Key=key)
            body = response["Body"]
            try:
                data = body.read(self.config.max_bytes + 1)
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(one_line(f"{self.name}: cannot read s3://{self.config.bucket}/{key}: {exc}")) from None
        if len(data) > self.config.max_bytes:  # grew since it was listed
            raise self._too_big(key, response.get("ContentLength", len(data)))
        return data

    def _too_big(self, key: str, size: int) -> SourceError:
        where, limit = f"s3://{self.config.bucket}/{key}", self.config.max_bytes
        return SourceError(one_line(f"{self.name}: {where} is {size} bytes, over the limit of {limit}"))
