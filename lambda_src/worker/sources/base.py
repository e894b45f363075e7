"""The source interface and its error."""

from __future__ import annotations

from typing import Protocol

from lambda_src.worker.postings import Fetch


class SourceError(Exception):
    """A fetch failed (network, HTTP status, size, format). The message is one line."""


class Source(Protocol):
    name: str

    def fetch(self, cursor: dict[str, str]) -> Fetch:
        """Everything new since ``cursor`` (an empty dict the first time)."""
        ...
