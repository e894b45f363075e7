"""One worker run over every source: plain logic, every AWS boundary passed in.

Per source, isolated: fetch since the cursor, locate each posting, resolve its FSAs in one
batch per chunk, claim it (idempotency), publish, and move the cursor only past postings
that are done: published, parked, unresolved, or already sent. Every posting fetched is
counted in exactly one of those or in ``deferred`` (left for the next run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from data_builder.index import FsaIndex, Mode
from lambda_src.worker.alerts import Alert
from lambda_src.worker.cursors import CursorStore
from lambda_src.worker.dedup import Dedup
from lambda_src.worker.locate import Locator, Unresolved
from lambda_src.worker.postings import Posting
from lambda_src.worker.publish import BATCH_SIZE, Publisher
from lambda_src.worker.sources.base import Source


class ParkedInstead(Exception):
    """Why a claim was released: the alert went to the dead-letter queue, not to SNS."""


@dataclass
class SourceReport:
    source: str
    fetched: int = 0
    resolved: int = 0
    published: int = 0
    parked: int = 0
    skipped: int = 0
    deferred: int = 0
    failed_attempts: int = 0
    unresolved: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    not_modified: bool = False
    stopped_early: bool = False
    cursor_moved: bool = False
    error: str | None = None

    @property
    def accounted(self) -> int:
        """published + parked + unresolved + skipped + deferred: equals ``fetched``."""
        return self.published + self.parked + sum(self.unresolved.values()) + self.skipped + self.deferred


@dataclass
class RunReport:
    sources: list[SourceReport]
    index_version: str

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.sources)

    def unresolved(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for s in self.sources:
            counts.update(s.unresolved)
        return dict(counts)

    def summary(self) -> dict[str, Any]:
        keys = ("fetched", "resolved", "published", "parked", "skipped", "deferred", "failed_attempts")
        return {
            **{k: self.total(k) for k in keys},
            "unresolved": self.unresolved(),
            "source_errors": {s.source: s.error for s in self.sources if s.error},
            "index_version": self.index_version,
            "sources": [asdict(s) for s in self.sources],
        }


class Worker:
    def __init__(
        self,
        *,
        index: FsaIndex,
        locator: Locator,
        publisher: Publisher,
        dedup: Dedup,
        cursors: CursorStore,
        radius_km: float,
        mode: Mode,
        remaining_ms: Callable[[], int],
        margin_ms: int,
        log: Callable[..., None] = lambda *a, **k: None,
    ) -> None:
        self.index, self.locator, self.publisher = index, locator, publisher
        self.dedup, self.cursors = dedup, cursors
        self.radius_km, self.mode = radius_km, mode
        self.remaining_ms, self.margin_ms = remaining_ms, margin_ms
        self.log = log

    def run(self, sources: list[Source]) -> RunReport:
        reports = []
        for source in sources:
            report = SourceReport(source.name)
            try:
                self._run_source(source, report)
            except Exception as exc:  # isolation: one source never stops the others
                report.error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
                self.log("source failed", source=source.name, error=report.error)
            reports.append(report)
        return RunReport(reports, self.index.version)

    def _run_source(self, source: Source, report: SourceReport) -> None:
        cursor, version = self.cursors.get(source.name)
        fetch = source.fetch(cursor)
        postings = fetch.postings
        report.fetched, report.rejected, report.not_modified = len(postings), dict(fetch.rejected), fetch.not_modified
        done = [False] * len(postings)
        unresolved: Counter[str] = Counter()
        start = 0
        while start < len(postings):
            if self.remaining_ms() < self.margin_ms:
                report.stopped_early = True
                break
            chunk = range(start, min(start + BATCH_SIZE, len(postings)))
            self._process_chunk(postings, chunk, done, report, unresolved)
            start = chunk.stop
        report.deferred += len(postings) - start  # never attempted: the run ran out of time
        report.unresolved = dict(unresolved)
        self._advance_cursor(source.name, cursor, version, fetch, postings, done, report)

    def _process_chunk(
        self, postings: list[Posting], chunk: range, done: list[bool], report: SourceReport, unresolved: Counter[str]
    ) -> None:
        located = []
        for i in chunk:
            where = self.locator.locate(postings[i])
            if isinstance(where, Unresolved):
                unresolved[where.reason] += 1
                done[i] = True
                posting = postings[i]
                self.log("posting unresolved", source=posting.source, posting_id=posting.id, reason=where.reason)
            else:
                located.append((i, where))
        if not located:
            return
        report.resolved += len(located)
        matches = self.index.resolve(
            [loc.lat for _, loc in located], [loc.lon for _, loc in located], self.radius_km, self.mode
        )
        claimed: list[tuple[int, Alert]] = []
        for (i, loc), fsas in zip(located, matches):
            posting = postings[i]
            claim = self.dedup.claim(posting.source, posting.id, self.remaining_ms())
            if claim == "already_sent":
                report.skipped += 1
                done[i] = True
            elif claim == "in_progress":
                report.deferred += 1  # an overlapping run holds it; not done, so the cursor stops here
            else:
                claimed.append((i, Alert(posting, loc, fsas)))
        deliveries = self.publisher.publish([alert for _, alert in claimed])
        for (i, alert), delivery in zip(claimed, deliveries):
            report.failed_attempts += delivery.failed_attempts
            if delivery.outcome == "published":
                self.dedup.complete(*alert.key, {"message_id": delivery.message_id})
                report.published += 1
                done[i] = True
            else:
                self.dedup.release(*alert.key, ParkedInstead(delivery.reason or ""))
                if delivery.outcome == "parked":
                    report.parked += 1
                    done[i] = True
                else:
                    report.deferred += 1
                self.log("alert not published", source=alert.posting.source, posting_id=alert.posting.id,
                         outcome=delivery.outcome, reason=delivery.reason)  # fmt: skip

    def _advance_cursor(
        self,
        name: str,
        cursor: dict[str, str],
        version: int,
        fetch: Any,
        postings: list[Posting],
        done: list[bool],
        report: SourceReport,
    ) -> None:
        prefix = next((i for i, d in enumerate(done) if not d), len(done))
        if prefix == len(postings) and not report.stopped_early:
            new = dict(fetch.cursor_when_done)
        else:
            checkpoints = [p.checkpoint for p in postings[:prefix] if p.checkpoint is not None]
            if not (fetch.checkpoint_key and checkpoints):
                return
            new = {**cursor, fetch.checkpoint_key: checkpoints[-1]}
        if new == cursor:
            return
        if not self.cursors.put(name, new, version):
            raise RuntimeError(f"cursor of {name} was moved by another run; left as that run set it")
        report.cursor_moved = True
