"""Lambda entry point of the worker (every 15 minutes by schedule)."""

from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from data_builder.errors import IndexUnavailable
from lambda_src.shared.metric_names import NAMESPACE, SOURCE_DIMENSION, WorkerMetric
from lambda_src.worker.config import WorkerConfig
from lambda_src.worker.cursors import CursorStore
from lambda_src.worker.dedup import Dedup
from lambda_src.worker.geocoder import AmazonLocationGeocoder
from lambda_src.worker.index_cache import IndexCache, index_age_hours
from lambda_src.worker.locate import Locator
from lambda_src.worker.publish import Publisher
from lambda_src.worker.run import RunReport, Worker
from lambda_src.worker.sources.registry import build_source

logger = Logger()
metrics = Metrics(namespace=NAMESPACE)
# Only what the worker calls: AWS APIs, and feeds (urllib3 sends through http.client). The
# default patches every library X-Ray knows that is installed, importing each at cold start.
tracer = Tracer(patch_modules=("botocore", "httplib"))


@cache
def _client(service: str) -> Any:
    return boto3.client(service)


@cache
def _index_cache(root: str) -> IndexCache:
    return IndexCache(root=Path(root))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Run every source once; return the run's counts. A bad config or index raises."""
    started = time.monotonic()
    logger.set_correlation_id((event or {}).get("id") or context.aws_request_id)
    config = WorkerConfig.from_env(os.environ)
    try:
        index = _index_cache(str(config.index_root)).get()
    except IndexUnavailable as exc:
        metrics.add_metric(name=WorkerMetric.INDEX_ERRORS, unit=MetricUnit.Count, value=1)
        logger.error("index unavailable: nothing fetched, no cursor moved", extra={"error": str(exc)})
        raise
    metrics.add_metric(name=WorkerMetric.INDEX_AGE_HOURS, unit=MetricUnit.NoUnit, value=index_age_hours(index))

    geocoder = None
    if config.geocoder_place_index:
        geocoder = AmazonLocationGeocoder(config.geocoder_place_index, _client("location"))
    worker = Worker(
        index=index,
        locator=Locator(index, geocoder),
        publisher=Publisher(
            _client("sns"),
            _client("sqs"),
            topic_arn=config.topic_arn,
            dlq_url=config.dlq_url,
            message=lambda alert: alert.message(
                radius_km=config.radius_km, mode=config.match_mode, index_version=index.version
            ),
        ),
        dedup=Dedup(config.state_table, _client("dynamodb"), keep_days=config.dedup_days),
        cursors=CursorStore(config.state_table, _client("dynamodb")),
        radius_km=config.radius_km,
        mode=config.match_mode,
        remaining_ms=context.get_remaining_time_in_millis,
        margin_ms=int(config.margin_seconds * 1000),
        log=lambda message, **fields: logger.warning(message, extra=fields),
    )
    sources = [build_source(s, s3_client=_client("s3")) for s in config.sources]
    report = worker.run(sources)
    _emit(report, seconds=time.monotonic() - started)
    summary = report.summary()
    logger.info("run summary", extra={"summary": summary})
    return summary


def _emit(report: RunReport, *, seconds: float) -> None:
    counts = {
        WorkerMetric.POSTINGS_FETCHED: report.total("fetched"),
        WorkerMetric.POSTINGS_RESOLVED: report.total("resolved"),
        WorkerMetric.POSTINGS_UNRESOLVED: sum(report.unresolved().values()),
        WorkerMetric.POSTINGS_SKIPPED: report.total("skipped"),
        WorkerMetric.POSTINGS_DEFERRED: report.total("deferred"),
        WorkerMetric.ALERTS_PUBLISHED: report.total("published"),
        WorkerMetric.ALERTS_FAILED: report.total("failed_attempts"),
        WorkerMetric.ALERTS_PARKED: report.total("parked"),
    }
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.add_metric(name=WorkerMetric.RUN_SECONDS, unit=MetricUnit.Seconds, value=seconds)
    metrics.add_metric(name=WorkerMetric.RUN_COMPLETED, unit=MetricUnit.Count, value=1)
    for source in report.sources:
        with single_metric(
            name=WorkerMetric.SOURCE_ERRORS,
            unit=MetricUnit.Count,
            value=1 if source.error else 0,
            namespace=NAMESPACE,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name=SOURCE_DIMENSION, value=source.source)
