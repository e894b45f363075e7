"""The loader Lambda: configuration, S3 on a real moto server, idempotent builds, failures."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from data_builder.errors import DatasetError
from data_builder.index import FsaIndex
from lambda_src.loader.config import ConfigError, LoaderConfig
from lambda_src.local.context import LocalContext
from lambda_src.local.moto_env import aws_env, moto_server, patched_env

BUCKET = "datasets"
FSA_CSV = "code,latitude,longitude\nM5V,43.6426,-79.3871\nK1A,45.4236,-75.7009\nS0K,51.0,-106.0\n"
POSTAL_CSV = (
    "code,latitude,longitude\nM5V 3L9,43.642,-79.386\nM5V 2T6,43.6439,-79.3893\n"
    "K1A 0A6,45.4236,-75.7009\nS0K 0A0,51.1,-106.1\n"
)


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server() as endpoint, patched_env(aws_env(endpoint)):
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ca-central-1"})
        s3.put_object(Bucket=BUCKET, Key="v1/fsa.csv", Body=FSA_CSV.encode())
        s3.put_object(Bucket=BUCKET, Key="v1/postal.csv", Body=POSTAL_CSV.encode())
        s3.put_object(Bucket=BUCKET, Key="bad/fsa.csv", Body=b"code,latitude,longitude\nQQQ,1,1\n")
        yield endpoint


def _env(root: Path, **extra: str) -> dict[str, str]:
    return {"INDEX_ROOT": str(root), "DATASET_BUCKET": BUCKET, "FSA_DATASET_KEY": "v1/fsa.csv", **extra}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "INDEX_ROOT is required"),
        ({"INDEX_ROOT": "/x"}, "FSA_DATASET_PATH"),
        ({"INDEX_ROOT": "/x", "DATASET_BUCKET": "b"}, "FSA_DATASET_KEY is required"),
        ({"INDEX_ROOT": "/x", "FSA_DATASET_PATH": "f", "MAX_DROP_FRACTION": "lots"}, "'lots'"),
        ({"INDEX_ROOT": "/x", "FSA_DATASET_PATH": "f", "MAX_DROP_FRACTION": "1.5"}, "from 0 to 1"),
    ],
)
def test_bad_configuration_names_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        LoaderConfig.from_env(env)


def test_handler_builds_both_levels_from_s3_then_changes_nothing(s3_endpoint, tmp_path, capsys):
    from lambda_src.loader.handler import handler

    with patched_env(_env(tmp_path, POSTAL_DATASET_KEY="v1/postal.csv")):
        first = handler({}, LocalContext())
        files_before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
        second = handler({}, LocalContext())
    assert first["status"] == "built"
    assert second == {**first, "status": "unchanged", "seconds": second["seconds"]}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files_before

    index = FsaIndex.open(tmp_path)
    assert index.has_postal and index.version == first["version"]
    assert index.resolve(43.6426, -79.3871)[0][0].code == "M5V"
    assert index.manifest["sources"]["postal"]["name"] == "postal.csv"

    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metrics, "the handler emitted no EMF metrics"
    assert metrics[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "FsaAlerts"
    assert metrics[0]["IndexRows"] == [7.0]  # 3 FSAs + 4 postal codes
    assert metrics[0]["IndexRowsDropped"] == [0.0]


def test_handler_raises_on_bad_dataset_so_the_deploy_fails(s3_endpoint, tmp_path):
    from lambda_src.loader.handler import handler

    with patched_env(_env(tmp_path, FSA_DATASET_KEY="bad/fsa.csv")), pytest.raises(DatasetError, match="no valid"):
        handler({}, LocalContext())
    assert not (tmp_path / "CURRENT").exists()


def test_handler_raises_on_missing_s3_object(s3_endpoint, tmp_path):
    from botocore.exceptions import ClientError

    from lambda_src.loader.handler import handler

    with patched_env(_env(tmp_path, FSA_DATASET_KEY="missing.csv")), pytest.raises(ClientError):
        handler({}, LocalContext())


def test_local_paths_build_fsa_level_only(tmp_path):
    from lambda_src.loader.logic import load

    fsa = tmp_path / "fsa.csv"
    fsa.write_text(FSA_CSV)
    config = LoaderConfig.from_env({"INDEX_ROOT": str(tmp_path / "index"), "FSA_DATASET_PATH": str(fsa)})
    result = load(config, progress=lambda _msg: None)
    assert result.status == "built"
    assert set(result.levels) == {"fsa"}
    assert FsaIndex.open(tmp_path / "index").default_mode == "centroid"
