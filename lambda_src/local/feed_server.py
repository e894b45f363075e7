"""A feed server on 127.0.0.1 for local runs and tests: static files with ETag/Last-Modified,
304 on a conditional GET, and faults on demand (status, delay, body)."""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CONTENT_TYPES = {".json": "application/json", ".xml": "application/atom+xml", ".jsonl": "application/x-ndjson"}


@dataclass
class Route:
    body: bytes
    content_type: str = "application/json"
    status: int = 200
    delay_s: float = 0.0
    last_modified: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


class FeedServer:
    """``with FeedServer() as feeds: feeds.serve("/x.json", b"[]"); feeds.url("/x.json")``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                server.hits[path] = server.hits.get(path, 0) + 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay_s:
                    time.sleep(route.delay_s)
                modified = email.utils.formatdate(route.last_modified, usegmt=True)
                # RFC 9110: If-None-Match, when sent, decides alone; If-Modified-Since otherwise.
                if_none_match = self.headers.get("If-None-Match")
                unchanged = (
                    if_none_match == route.etag if if_none_match else self.headers.get("If-Modified-Since") == modified
                )
                if route.status == 200 and unchanged:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.send_header("ETag", route.etag)
                self.send_header("Last-Modified", modified)
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, *_args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def serve(self, path: str, body: bytes, **options: object) -> str:
        self.routes[path] = Route(body, **options)  # type: ignore[arg-type]
        return self.url(path)

    def serve_file(self, path: str, file: Path) -> str:
        return self.serve(path, file.read_bytes(), content_type=CONTENT_TYPES.get(file.suffix, "text/plain"))
