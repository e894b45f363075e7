"""The worker's configuration, read from its environment and validated before any work."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambda_src.worker.source_config import SourceConfig, SourcesConfig


class ConfigError(ValueError):
    """A missing or bad environment variable; the message is one line naming it."""


class WorkerConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic_arn: Annotated[str, Field(min_length=1)]
    state_table: Annotated[str, Field(min_length=1)]
    dlq_url: Annotated[str, Field(min_length=1)]
    index_root: Path
    radius_km: Annotated[float, Field(gt=0, le=50)] = 2.5
    match_mode: Literal["coverage", "centroid"] = "coverage"
    sources: list[SourceConfig] = []
    geocoder_place_index: str = ""
    margin_seconds: Annotated[float, Field(ge=0, le=600)] = 30.0
    #: How long an idempotency record keeps a posting from being published again.
    dedup_days: Annotated[int, Field(ge=1, le=365)] = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerConfig:
        names = {
            "topic_arn": "TOPIC_ARN", "state_table": "STATE_TABLE", "dlq_url": "DLQ_URL",
            "index_root": "INDEX_ROOT", "radius_km": "RADIUS_KM", "match_mode": "MATCH_MODE",
            "sources": "SOURCES", "geocoder_place_index": "GEOCODER_PLACE_INDEX",
            "margin_seconds": "MARGIN_SECONDS", "dedup_days": "DEDUP_DAYS",
        }  # fmt: skip
        values: dict[str, object] = {}
        for field, var in names.items():
            raw = env.get(var, "").strip()
            if raw:
                values[field] = raw
        missing = [names[f] for f in ("topic_arn", "state_table", "dlq_url", "index_root") if f not in values]
        if missing:
            raise ConfigError(f"environment variable {missing[0]} is required")
        if "sources" in values:
            try:
                values["sources"] = SourcesConfig.model_validate(json.loads(str(values["sources"]))).root
            except json.JSONDecodeError as exc:
                raise ConfigError(f"SOURCES is not valid JSON: {exc}") from None
            except ValidationError as exc:
                raise ConfigError(f"SOURCES: {_first(exc)}") from None
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            var = names.get(str(error["loc"][0]), str(error["loc"][0])) if error["loc"] else "?"
            raise ConfigError(f"{var}={values.get(str(error['loc'][0]))!r}: {error['msg']}") from None


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
