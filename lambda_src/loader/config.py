"""The loader's configuration, read from its environment and validated before any work."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A missing or bad environment variable; the message names it."""


@dataclass(frozen=True)
class LoaderConfig:
    """Where the datasets come from and where the index goes.

    Datasets are read from S3 (``DATASET_BUCKET`` with ``FSA_DATASET_KEY`` and optionally
    ``POSTAL_DATASET_KEY``) or, for local runs, from files (``FSA_DATASET_PATH``,
    ``POSTAL_DATASET_PATH``). With a postal dataset both index levels are built.
    """

    index_root: Path
    fsa_source: str
    postal_source: str | None
    bucket: str | None
    max_drop_fraction: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LoaderConfig:
        root = _required(env, "INDEX_ROOT")
        bucket = env.get("DATASET_BUCKET", "").strip() or None
        if bucket:
            fsa = _required(env, "FSA_DATASET_KEY")
            postal = env.get("POSTAL_DATASET_KEY", "").strip() or None
        else:
            if not env.get("FSA_DATASET_PATH", "").strip():
                raise ConfigError("set DATASET_BUCKET and FSA_DATASET_KEY (S3) or FSA_DATASET_PATH (local file)")
            fsa = env["FSA_DATASET_PATH"].strip()
            postal = env.get("POSTAL_DATASET_PATH", "").strip() or None
        raw_fraction = env.get("MAX_DROP_FRACTION", "0.01")
        try:
            fraction = float(raw_fraction)
        except ValueError:
            fraction = math.nan
        if not 0 <= fraction <= 1:
            raise ConfigError(f"MAX_DROP_FRACTION must be a number from 0 to 1, got {raw_fraction!r}")
        return cls(Path(root), fsa, postal, bucket, fraction)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is required")
    return value
