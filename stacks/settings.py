"""Operator settings: the schema of the cdk.json context, validated before any stack is built.

cdk.json holds every key with its default; this module holds what each key may be. A bad
value stops synth with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from lambda_src.worker.source_config import SourcesConfig

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"

# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip


class ConfigError(ValueError):
    """A context value that is missing or not allowed; the message is one line."""


class Settings(BaseModel):
    """Every operator setting. Field names are the cdk.json context keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    nat_gateways: Annotated[int, Field(ge=0, le=2, description="NAT gateways; 0: isolated subnets + endpoints")]
    lambda_architecture: Literal["arm64", "x86_64"]
    loader_memory_mb: Annotated[int, Field(ge=128, le=10240)]
    loader_timeout_minutes: Annotated[int, Field(ge=1, le=15)]
    worker_memory_mb: Annotated[int, Field(ge=128, le=10240)]
    worker_timeout_seconds: Annotated[int, Field(ge=10, le=900)]
    schedule_minutes: Annotated[int, Field(ge=1, le=1440)]
    radius_km: Annotated[float, Field(gt=0, le=50)]
    match_mode: Literal["coverage", "centroid"]
    removal_policy: Literal["retain", "destroy"]
    log_retention_days: int
    alarm_email: str
    lambda_size_budget_mb: Annotated[int, Field(ge=1, le=250)]
    #: Amazon Location place index the worker geocodes addresses with; "" = no geocoding.
    geocoder_place_index: str
    #: The feeds the worker reads; the schema is lambda_src/worker/source_config.py.
    sources: SourcesConfig
    #: Alarm thresholds (stacks/monitoring.py). source-failing: SourceErrors in this many schedule periods in a row.
    alarm_source_failing_periods: Annotated[int, Field(ge=1, le=100)]
    #: unresolved-share: PostingsUnresolved / PostingsFetched over an hour above this.
    alarm_unresolved_share: Annotated[float, Field(gt=0, lt=1)]
    #: index-stale: the index the worker reads is older than this many days.
    alarm_index_max_age_days: Annotated[int, Field(ge=1, le=365)]
    #: worker-duration: the worker's maximum Duration above this fraction of its timeout.
    alarm_duration_fraction: Annotated[float, Field(gt=0, le=1)]

    @property
    def log_retention(self) -> logs.RetentionDays:
        # RetentionDays lists its members in the order of LOG_RETENTION_DAYS (then INFINITE).
        return list(logs.RetentionDays)[LOG_RETENTION_DAYS.index(self.log_retention_days)]

    @property
    def removal(self) -> RemovalPolicy:
        return RemovalPolicy.DESTROY if self.removal_policy == "destroy" else RemovalPolicy.RETAIN

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"must be one of {', '.join(map(str, LOG_RETENTION_DAYS))}")
        return value

    @field_validator("alarm_email")
    @classmethod
    def _email(cls, value: str) -> str:
        value = value.strip()
        if value and ("@" not in value or " " in value or value.startswith("@") or value.endswith("@")):
            raise ValueError("must be an e-mail address, or empty for none")
        return value

    @field_validator("geocoder_place_index")
    @classmethod
    def _place_index(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"[-._\w]{1,100}", value, flags=re.ASCII):
            raise ValueError("must be an Amazon Location place index name (1-100 of A-Za-z0-9-._), or empty for none")
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _sources_json(cls, value: Any) -> Any:
        # `cdk synth -c sources='[...]'` passes a string.
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("sources")
    @classmethod
    def _sources_fit_the_environment(cls, value: SourcesConfig) -> SourcesConfig:
        size = len(dump_sources(value).encode())
        if size > SOURCES_ENV_MAX_BYTES:
            raise ValueError(
                f"{len(value.root)} sources are {size} bytes as the worker's SOURCES variable, over "
                f"{SOURCES_ENV_MAX_BYTES} (Lambda allows 4 KB for all its environment variables)"
            )
        return value

    @field_validator("alarm_source_failing_periods")
    @classmethod
    def _alarm_window(cls, value: int, info: ValidationInfo) -> int:
        schedule = info.data.get("schedule_minutes")
        if schedule is not None:
            seconds = value * schedule * 60
            limit = ALARM_WINDOW_MAX_SECONDS if schedule >= 60 else ALARM_WINDOW_SHORT_PERIOD_MAX_SECONDS
            if seconds > limit:
                raise ValueError(
                    f"{value} periods of schedule_minutes={schedule} are {seconds // 3600} h; a CloudWatch alarm "
                    f"evaluates at most {limit // 3600} h with that period"
                )
        return value

    @property
    def sources_json(self) -> str:
        """The validated sources as the worker reads them from its SOURCES variable."""
        return dump_sources(self.sources)


#: CloudWatch: period x evaluation periods may be at most 7 days, and 1 day for periods under an hour.
ALARM_WINDOW_MAX_SECONDS = 7 * 86400
ALARM_WINDOW_SHORT_PERIOD_MAX_SECONDS = 86400

#: What SOURCES may take of the 4 KB Lambda allows for all environment variables together;
#: the worker's other variables (ARNs, URL, names) need well under 600 bytes.
SOURCES_ENV_MAX_BYTES = 3500


def dump_sources(sources: SourcesConfig) -> str:
    return json.dumps(sources.model_dump(mode="json"), separators=(",", ":"))


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The defaults: the ``context`` of cdk.json."""
    return json.loads(path.read_text(encoding="utf-8")).get("context", {})


def load_settings(get_context: Any, defaults: dict[str, Any] | None = None) -> Settings:
    """Read every key through ``get_context`` (e.g. ``app.node.try_get_context``), falling back
    to cdk.json, and validate. Raises ConfigError with one line for the first bad key."""
    defaults = cdk_json_context() if defaults is None else defaults
    values: dict[str, Any] = {}
    for key in Settings.model_fields:
        value = get_context(key)
        values[key] = defaults.get(key) if value is None else value
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ConfigError(f"context key {missing[0]!r} is not set (cdk.json lists every key with its default)")
    try:
        return Settings.model_validate(values)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"context key 'sources' is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = _key_path(error["loc"], values)
        key = ".".join(str(p) for p in loc) or "?"
        if len(loc) > 1:  # inside a key (e.g. sources.0.url): the offending part itself
            value = error.get("input")
        else:
            value = values.get(str(loc[0]), error.get("input")) if loc else error.get("input")
        message = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"context key {key!r} = {value!r} is not allowed: {message}") from None


def _key_path(loc: tuple[Any, ...], values: dict[str, Any]) -> tuple[Any, ...]:
    """``('sources', 0, 'json_feed', 'url')`` -> ``('sources', 0, 'url')``: pydantic puts the
    discriminator tag of a source (its ``type``) into the location; the key path has none."""
    if len(loc) > 2 and loc[0] == "sources" and isinstance(loc[1], int):
        raw = values.get("sources")
        raw = json.loads(raw) if isinstance(raw, str) else raw
        try:
            item = raw[loc[1]]
        except (TypeError, IndexError, KeyError):
            return loc
        if isinstance(item, dict) and item.get("type") == loc[2]:
            return loc[:2] + loc[3:]
    return loc
