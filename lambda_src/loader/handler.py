"""Lambda entry point of the data loader (run by a deploy-time trigger)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambda_src.loader.config import LoaderConfig
from lambda_src.loader.logic import load
from lambda_src.shared.metric_names import NAMESPACE, LoaderMetric

logger = Logger()
metrics = Metrics(namespace=NAMESPACE)
tracer = Tracer(patch_modules=("botocore",))  # the loader's only remote calls are to S3


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Build the index; return its summary. Any failure raises, so the deploy fails."""
    config = LoaderConfig.from_env(os.environ)
    result = load(config, progress=logger.info)
    rows = sum(level["rows"] for level in result.levels.values())
    dropped = sum(sum(level["dropped"].values()) for level in result.levels.values())
    metrics.add_metric(name=LoaderMetric.INDEX_ROWS, unit=MetricUnit.Count, value=rows)
    metrics.add_metric(name=LoaderMetric.INDEX_ROWS_DROPPED, unit=MetricUnit.Count, value=dropped)
    metrics.add_metric(name=LoaderMetric.INDEX_BUILD_SECONDS, unit=MetricUnit.Seconds, value=result.seconds)
    summary = result.as_dict()
    logger.info("index ready", extra={"summary": summary})
    return summary
