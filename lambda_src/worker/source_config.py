"""The schema of the ``sources`` setting: validated at synth (stacks/settings.py) and again
when the worker starts. pydantic only, so the CDK app can import it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

SourceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
FieldPath = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMap(_Strict):
    """Where each posting field is in a feed item: a key, or a dotted path into nested objects."""

    id: FieldPath = "id"
    text: FieldPath | None = "text"
    url: FieldPath | None = "url"
    time: FieldPath | None = "time"
    latitude: FieldPath | None = "latitude"
    longitude: FieldPath | None = "longitude"
    postal_code: FieldPath | None = "postal_code"
    address: FieldPath | None = "address"
    #: SNS message attribute name -> field path; strings and numbers only.
    attributes: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")], FieldPath] = {}

    @field_validator("attributes")
    @classmethod
    def _not_fsa(cls, value: dict[str, str]) -> dict[str, str]:
        if "fsa" in value:
            raise ValueError("'fsa' is the routing attribute and cannot be mapped from a feed")
        return value


class HttpLimits(_Strict):
    connect_timeout_s: Annotated[float, Field(gt=0, le=30)] = 3.05
    read_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_bytes: Annotated[int, Field(ge=1024, le=50_000_000)] = 5_000_000
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    backoff_s: Annotated[float, Field(ge=0, le=10)] = 0.5


class JsonFeedConfig(HttpLimits):
    type: Literal["json_feed"]
    name: SourceName
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    #: Key of the list in the response object; None when the response is the list itself.
    items_key: str | None = None
    fields: FieldMap = FieldMap()
    #: Query parameter the feed takes for "items after this id" (a since-id cursor).
    since_param: str | None = None


class GeoRssConfig(HttpLimits):
    type: Literal["georss"]
    name: SourceName
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]


class S3JsonlConfig(_Strict):
    type: Literal["s3_jsonl"]
    name: SourceName
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: str = ""
    fields: FieldMap = FieldMap()
    max_objects: Annotated[int, Field(ge=1, le=1000)] = 100
    max_bytes: Annotated[int, Field(ge=1024, le=50_000_000)] = 5_000_000


SourceConfig = Annotated[JsonFeedConfig | GeoRssConfig | S3JsonlConfig, Field(discriminator="type")]


class SourcesConfig(RootModel[list[SourceConfig]]):
    @model_validator(mode="after")
    def _unique_names(self) -> SourcesConfig:
        names = [s.name for s in self.root]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {', '.join(duplicates)} repeated")
        return self
