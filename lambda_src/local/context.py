"""A Lambda context object for invoking handlers in-process."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class LocalContext:
    function_name: str = "local"
    memory_limit_in_mb: int = 1024
    timeout_s: float = 900.0
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:ca-central-1:123456789012:function:local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))
