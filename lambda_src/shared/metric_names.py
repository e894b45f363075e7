"""Every CloudWatch metric this service emits: the handlers and the monitoring stack use these.

Standard library only, so the CDK app can import it without Lambda dependencies.
"""

from enum import StrEnum

NAMESPACE = "FsaAlerts"
#: Dimension of the per-source metrics (SourceErrors).
SOURCE_DIMENSION = "source"


class LoaderMetric(StrEnum):
    INDEX_ROWS = "IndexRows"
    INDEX_ROWS_DROPPED = "IndexRowsDropped"
    INDEX_BUILD_SECONDS = "IndexBuildSeconds"


class WorkerMetric(StrEnum):
    POSTINGS_FETCHED = "PostingsFetched"
    POSTINGS_RESOLVED = "PostingsResolved"
    POSTINGS_UNRESOLVED = "PostingsUnresolved"
    #: Already published by an earlier run (idempotency record found).
    POSTINGS_SKIPPED = "PostingsSkipped"
    #: Left for the next run: claimed by an overlapping run, or the run ran out of time.
    POSTINGS_DEFERRED = "PostingsDeferred"
    ALERTS_PUBLISHED = "AlertsPublished"
    #: PublishBatch entries that failed an attempt (retried, then parked).
    ALERTS_FAILED = "AlertsFailed"
    ALERTS_PARKED = "AlertsParked"
    SOURCE_ERRORS = "SourceErrors"
    INDEX_ERRORS = "IndexErrors"
    INDEX_AGE_HOURS = "IndexAgeHours"
    RUN_SECONDS = "RunSeconds"
    #: Heartbeat: 1 per run that finished (whatever its sources did).
    RUN_COMPLETED = "RunCompleted"
