"""Fetch the datasets and build both index levels: plain logic, no Lambda or Powertools."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from data_builder.build import BuildResult, build
from lambda_src.loader.config import LoaderConfig


def load(config: LoaderConfig, s3_client: Any = None, progress: Callable[[str], None] = print) -> BuildResult:
    """Build the index at ``config.index_root``; the same datasets again change nothing.

    Raises DatasetError (bad data), botocore errors (S3) or OSError (EFS) so that a
    deploy-time trigger fails the deploy instead of passing silently.
    """
    with tempfile.TemporaryDirectory(prefix="fsa-datasets-") as scratch:
        if config.bucket:
            if s3_client is None:
                import boto3

                s3_client = boto3.client("s3")
            fsa = _download(s3_client, config.bucket, config.fsa_source, Path(scratch), progress)
            postal = (
                _download(s3_client, config.bucket, config.postal_source, Path(scratch), progress)
                if config.postal_source
                else None
            )
        else:
            fsa = Path(config.fsa_source)
            postal = Path(config.postal_source) if config.postal_source else None
        return build(
            config.index_root,
            fsa,
            postal,
            level="postal" if postal else "fsa",
            max_drop_fraction=config.max_drop_fraction,
            progress=progress,
        )


def _download(s3_client: Any, bucket: str, key: str, scratch: Path, progress: Callable[[str], None]) -> Path:
    # Keep the key's file name: the dataset's format and the manifest's source name follow it.
    target = scratch / PurePosixPath(key).name
    progress(f"downloading s3://{bucket}/{key}")
    s3_client.download_file(bucket, key, str(target))
    return target
