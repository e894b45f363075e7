"""The FSA index, opened once per execution environment and re-checked every few minutes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

from data_builder import layout
from data_builder.index import FsaIndex

RECHECK_SECONDS = 300


class IndexCache:
    def __init__(self, root: Path, *, recheck_s: float = RECHECK_SECONDS, clock: Callable[[], float] = time.monotonic):
        self._root, self._recheck, self._clock = root, recheck_s, clock
        self._index: FsaIndex | None = None
        self._checked = 0.0

    def get(self) -> FsaIndex:
        """The live index; raises IndexMissing/IndexCorrupt when there is none to use."""
        now = self._clock()
        if self._index is None:
            self._index, self._checked = FsaIndex.open(self._root), now
        elif now - self._checked >= self._recheck:
            self._checked = now
            if layout.read_current(self._root) != self._index.version:
                self._index = FsaIndex.open(self._root)
        return self._index


def index_age_hours(index: FsaIndex, now: dt.datetime | None = None) -> float:
    created = dt.datetime.fromisoformat(index.manifest["created_at"])
    return ((now or dt.datetime.now(dt.UTC)) - created).total_seconds() / 3600
