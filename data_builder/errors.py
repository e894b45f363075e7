"""Errors the CLI turns into one-line messages and exit codes (standard library only)."""


class DatasetError(ValueError):
    """The dataset is missing, unreadable, or has too few valid rows (CLI exit 2)."""


class IndexUnavailable(Exception):
    """The index cannot be used (CLI exit 3)."""


class IndexMissing(IndexUnavailable):
    """There is no index at the given root, or ``CURRENT`` names nothing."""


class IndexCorrupt(IndexUnavailable):
    """A file of the index is missing, truncated, altered, or unsafe to load."""
