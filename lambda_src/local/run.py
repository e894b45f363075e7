"""``make run``: the loader Lambda end to end on this machine, then the index answers.

Starts moto on 127.0.0.1, uploads the committed datasets to an S3 bucket there, invokes the
real loader handler (Powertools and all) to build both index levels into a local folder
standing in for EFS, and resolves a few known places. No AWS account, no internet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lambda_src.local.context import LocalContext
from lambda_src.local.moto_env import aws_env, moto_server, patched_env

KNOWN_PLACES = [
    ("CN Tower, Toronto", 43.6426, -79.3871),
    ("Parliament Hill, Ottawa", 45.4236, -75.7009),
    ("Rural Saskatchewan", 51.0, -106.0),
    ("Iqaluit", 63.7467, -68.5170),
]
BUCKET = "fsa-alerts-datasets-local"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=Path(".local/index"))
    parser.add_argument("fsa", type=Path)
    parser.add_argument("postal", type=Path)
    args = parser.parse_args(argv)
    for path in (args.fsa, args.postal):
        if not path.is_file():
            print(f"error: dataset {path} not found", file=sys.stderr)
            return 2
    args.index.mkdir(parents=True, exist_ok=True)

    print("starting moto on 127.0.0.1 ...", file=sys.stderr)
    with moto_server() as endpoint, patched_env(aws_env(endpoint)):
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ca-central-1"})
        for path in (args.fsa, args.postal):
            s3.upload_file(str(path), BUCKET, f"datasets/{path.name}")
        loader_env = {
            "INDEX_ROOT": str(args.index),
            "DATASET_BUCKET": BUCKET,
            "FSA_DATASET_KEY": f"datasets/{args.fsa.name}",
            "POSTAL_DATASET_KEY": f"datasets/{args.postal.name}",
            "POWERTOOLS_SERVICE_NAME": "fsa-loader",
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        with patched_env(loader_env):
            from lambda_src.loader.handler import handler

            print("invoking the loader handler (first build: ~10 s) ...", file=sys.stderr)
            started = time.perf_counter()
            summary = handler({}, LocalContext(function_name="fsa-loader"))
            elapsed = time.perf_counter() - started
    print(f"\nloader: {summary['status']} {summary['version']} in {elapsed:.1f} s")
    for level, info in summary["levels"].items():
        print(f"  {level:6} kept {info['rows']:,} of {info['rows_in']:,}; dropped {info['dropped']}")

    from data_builder.index import FsaIndex

    index = FsaIndex.open(args.index)
    print(f"\nFSAs within 2.5 km (+ nearest), {index.default_mode} mode, index {index.version}:")
    for name, lat, lon in KNOWN_PLACES:
        matches = index.resolve(lat, lon)[0]
        shown = ", ".join(f"{m.code} {m.km:.2f} km" for m in matches[:6])
        more = f" (+{len(matches) - 6} more)" if len(matches) > 6 else ""
        print(f"  {name:26} {shown}{more}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
