"""HTTP GET for feed sources: one connection pool, hard limits, bounded retries.

Every failure is a ``SourceError`` whose message is one line naming the source. Retried
(``limits.retries`` times, exponential backoff from ``limits.backoff_s``): connection
errors, timeouts, an incomplete body, 408, 429 and 5xx (a ``Retry-After`` is honoured up to
``RETRY_AFTER_CAP_S``). Not retried: other 4xx, a body over ``limits.max_bytes``, TLS
errors, bad redirects. 304 is a normal response. Redirects are followed by hand: at most
``MAX_REDIRECTS``, http(s) only.

Each socket read waits at most ``read_timeout_s``; the whole body of one attempt at most
``BODY_TIME_FACTOR`` times that, so a server trickling bytes cannot hold the run.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import (
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
    TimeoutError,
)

from lambda_src.worker.source_config import HttpLimits
from lambda_src.worker.sources.base import SourceError

USER_AGENT = "fsa-alerts-worker/1"
MAX_REDIRECTS = 3
RETRY_AFTER_CAP_S = 5.0
BODY_TIME_FACTOR = 3
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SECRET_PARAM = re.compile(r"key|token|secret|pass|sig|auth|credential", re.IGNORECASE)

# One pool for the life of the Lambda container: connections are reused across runs.
# Retries and redirects are handled here, not by urllib3.
_POOL = urllib3.PoolManager(num_pools=20, maxsize=2, retries=False)


@dataclass(frozen=True)
class Response:
    status: int
    #: Case-insensitive (urllib3's HTTPHeaderDict).
    headers: Mapping[str, str]
    body: bytes


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def get(url: str, *, limits: HttpLimits, headers: dict[str, str] | None = None, source: str) -> Response:
    """GET ``url`` within ``limits``; the response of a 2xx or 304, else ``SourceError``."""
    attempts = limits.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _follow(url, limits, headers or {}, source)
        except _Retryable as exc:
            if attempt == attempts:
                tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                raise SourceError(one_line(f"{source}: {exc} ({tries})")) from None
            delay = limits.backoff_s * 2 ** (attempt - 1)
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, RETRY_AFTER_CAP_S))
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _follow(url: str, limits: HttpLimits, headers: dict[str, str], source: str) -> Response:
    for _ in range(MAX_REDIRECTS + 1):
        response = _once(url, limits, headers, source)
        if response.status not in _REDIRECTS:
            return response
        location = response.headers.get("Location")
        if not location:
            raise SourceError(one_line(f"{source}: HTTP {response.status} without a Location from {display(url)}"))
        target = urljoin(url, location.strip())
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            raise SourceError(one_line(f"{source}: refused redirect from {display(url)} to a non-http(s) URL"))
        url = target
    raise SourceError(one_line(f"{source}: more than {MAX_REDIRECTS} redirects, last to {display(url)}"))


def _once(url: str, limits: HttpLimits, headers: dict[str, str], source: str) -> Response:
    """One request, no retry: a Response (2xx, 304 or a redirect) or an exception."""
    shown = display(url)
    timeout = urllib3.Timeout(connect=limits.connect_timeout_s, read=limits.read_timeout_s)
    request_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
    request_headers.update({k: v for k, v in headers.items() if v and not _has_control(v)})
    started = time.monotonic()
    try:
        resp = _POOL.request(
            "GET", url, headers=request_headers, timeout=timeout, preload_content=False, redirect=False, retries=False
        )
    except LocationValueError as exc:  # a URL urllib3 cannot use
        raise SourceError(one_line(f"{source}: bad URL {shown}: {exc}")) from None
    except SSLError as exc:
        raise SourceError(one_line(f"{source}: TLS error for {shown}: {_reason(exc)}")) from None
    except NewConnectionError as exc:  # refused, unreachable, DNS (a subclass of ConnectTimeoutError)
        raise _Retryable(f"cannot connect to {shown}: {_reason(exc)}") from None
    except ReadTimeoutError:
        raise _Retryable(f"timed out waiting for {shown} (read timeout {limits.read_timeout_s:g} s)") from None
    except TimeoutError:
        raise _Retryable(f"timed out connecting to {shown} (connect timeout {limits.connect_timeout_s:g} s)") from None
    except HTTPError as exc:  # e.g. the server closed a kept-alive connection
        raise _Retryable(f"request to {shown} failed: {_reason(exc)}") from None
    complete = False  # the body read to its end: the connection can serve the next request
    try:
        status = resp.status
        if status in (408, 429) or status >= 500:
            raise _Retryable(f"HTTP {status} from {shown}", retry_after=_retry_after(resp.headers.get("Retry-After")))
        if status == 304:
            complete = True  # never has a body
            return Response(status, resp.headers, b"")
        if status in _REDIRECTS:
            return Response(status, resp.headers, b"")
        if not 200 <= status < 300:
            raise SourceError(one_line(f"{source}: HTTP {status} from {shown}"))
        length = resp.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > limits.max_bytes:
            limit = limits.max_bytes
            raise SourceError(one_line(f"{source}: {shown} is {int(length)} bytes, over the limit of {limit}"))
        body = _read_body(resp, limits, shown, source, deadline=started + BODY_TIME_FACTOR * limits.read_timeout_s)
        complete = True
        return Response(status, resp.headers, body)
    finally:
        if not complete:
            resp.close()  # closes the connection too: an unread body must not meet the next request
        resp.release_conn()


def _read_body(resp: urllib3.BaseHTTPResponse, limits: HttpLimits, shown: str, source: str, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            # read1: at most one socket read per call, so the deadline is checked often.
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limits.max_bytes:  # counted after decompression: no gzip bomb either
                raise SourceError(one_line(f"{source}: {shown} sent more than the limit of {limits.max_bytes} bytes"))
            if time.monotonic() > deadline:
                raise _Retryable(f"{shown} took over {BODY_TIME_FACTOR * limits.read_timeout_s:g} s to send its body")
            chunks.append(chunk)
    except ReadTimeoutError:
        raise _Retryable(f"timed out reading {shown} (read timeout {limits.read_timeout_s:g} s)") from None
    except (ProtocolError, HTTPError) as exc:
        raise _Retryable(f"broken response from {shown}: {_reason(exc)}") from None
    return b"".join(chunks)


def conditional_headers(cursor: Mapping[str, str]) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from the cursor's ``etag`` / ``last_modified``."""
    headers = {}
    if cursor.get("etag"):
        headers["If-None-Match"] = cursor["etag"]
    if cursor.get("last_modified"):
        headers["If-Modified-Since"] = cursor["last_modified"]
    return headers


def validators(response: Response) -> dict[str, str]:
    """The response's ``etag`` / ``last_modified`` for the next conditional GET (absent ones left out)."""
    found = {"etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
    return {k: v.strip() for k, v in found.items() if v and v.strip()}


def media_type(response: Response) -> str:
    """The response's media type, lower case, without parameters ("" when absent)."""
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


def _has_control(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def one_line(text: str) -> str:
    """Collapse any whitespace run (newlines included) to one space."""
    return " ".join(text.split())


def display(url: str) -> str:
    """``url`` fit for a log line: no user:password, secret-looking query values redacted."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        query = urlencode(
            [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
            safe="*",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparseable URL>"
