"""One Source per configured source, by its ``type``."""

from __future__ import annotations

from typing import Any

from lambda_src.worker.source_config import GeoRssConfig, JsonFeedConfig, S3JsonlConfig, SourceConfig
from lambda_src.worker.sources.base import Source
from lambda_src.worker.sources.georss import GeoRss
from lambda_src.worker.sources.json_feed import JsonFeed
from lambda_src.worker.sources.s3_jsonl import S3Jsonl


def build_source(config: SourceConfig, *, s3_client: Any = None) -> Source:
    if isinstance(config, JsonFeedConfig):
        return JsonFeed(config)
    if isinstance(config, GeoRssConfig):
        return GeoRss(config)
    if isinstance(config, S3JsonlConfig):
        if s3_client is None:
            raise ValueError(f"source {config.name} (s3_jsonl) needs an s3_client")
        return S3Jsonl(config, s3_client)
    raise ValueError(f"unknown source type {getattr(config, 'type', type(config).__name__)!r}")
