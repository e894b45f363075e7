"""Every CloudWatch metric this service emits: the handlers and the monitoring stack use these.

Standard library only, so the CDK app can import it without Lambda dependencies.
"""

from enum import StrEnum

NAMESPACE = "FsaAlerts"


class LoaderMetric(StrEnum):
    INDEX_ROWS = "IndexRows"
    INDEX_ROWS_DROPPED = "IndexRowsDropped"
    INDEX_BUILD_SECONDS = "IndexBuildSeconds"
