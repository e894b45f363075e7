"""Helpers for the worker's source tests: a real HTTP server on loopback that plays scripted
replies (slow, chunked, trickling, oversized...) and records every request, and sample feeds.

Not a conftest: test files import what they need (``from tests.worker_fixtures import ...``).
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes | str = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds before the status line is sent (a server that is slow to answer).
    delay: float = 0.0
    #: Transfer-Encoding: chunked, no Content-Length.
    chunked: bool = False
    #: No Content-Length and not chunked: the body ends when the connection closes.
    close_delimited: bool = False
    #: Body sent in pieces of ``piece`` bytes with ``trickle`` seconds between them.
    piece: int = 16 * 1024
    trickle: float = 0.0
    #: gzip the body (Content-Encoding: gzip).
    gzip: bool = False


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    #: Request headers, names in lower case.
    headers: dict[str, str]


Script = Reply | Callable[[Seen], Reply]


class FeedServer:
    """``route(path, *replies)``: the n-th request to ``path`` gets the n-th reply (the last
    one repeats); a reply may be a function of the request. Unknown paths get 404."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Script]] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # clients that hang up are expected
        self._httpd.feed = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, *replies: Script) -> str:
        self.routes[path] = list(replies)
        return self.url(path)

    def hits(self, path: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.requests if seen.path == path]

    def _next(self, seen: Seen) -> Reply:
        with self._lock:
            count = sum(1 for s in self.requests if s.path == seen.path)
            self.requests.append(seen)
        replies = self.routes.get(seen.path)
        if not replies:
            return Reply(404, "not found", content_type="text/plain")
        reply = replies[min(count, len(replies) - 1)]
        return reply(seen) if callable(reply) else reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        seen = Seen(parts.path, dict(parse_qsl(parts.query)), {k.lower(): v for k, v in self.headers.items()})
        reply = self.server.feed._next(seen)  # type: ignore[attr-defined]
        try:
            self._send(reply)
        except OSError:  # the client gave up (timeout, size limit): expected in these tests
            self.close_connection = True

    def _send(self, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        if reply.gzip:
            body = gzip.compress(body)
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        if reply.gzip:
            self.send_header("Content-Encoding", "gzip")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status in (204, 304):  # no body, by definition
            self.end_headers()
            return
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif reply.close_delimited:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for start in range(0, len(body), reply.piece):
            piece = body[start : start + reply.piece]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if reply.chunked else piece)
            self.wfile.flush()
            if reply.trickle:
                time.sleep(reply.trickle)
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------ sample feeds

#: Modelled on the Natural Resources Canada "Earthquakes Canada" Atom feed (GeoRSS Simple
#: points, escaped-HTML summaries, bilingual place names); written for these tests.
NRCAN_ATOM = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:georss="http://www.georss.org/georss" xml:lang="en">
  <title>Earthquakes Canada - Last 7 days</title>
  <subtitle>Earthquakes in or near Canada, magnitude 1 and up</subtitle>
  <link rel="self" type="application/atom+xml" href="https://earthquakescanada.example.ca/feeds/week-en.atom"/>
  <link rel="alternate" type="text/html" href="https://earthquakescanada.example.ca/recent/index-en.php"/>
  <id>https://earthquakescanada.example.ca/feeds/week-en.atom</id>
  <updated>2026-11-25T09:30:12Z</updated>
  <author><name>Natural Resources Canada - Earthquakes Canada</name></author>
  <entry>
    <title>2026-11-25 09:12:03 UTC | 2.9 mN | 12 km NW of Ottawa, ON</title>
    <id>https://earthquakescanada.example.ca/recent/2026/20261125.0912001/index-en.php</id>
    <link rel="alternate" type="text/html"
          href="https://earthquakescanada.example.ca/recent/2026/20261125.0912001/index-en.php"/>
    <link rel="related" type="text/html" href="https://earthquakescanada.example.ca/felt/20261125.0912001"/>
    <updated>2026-11-25T09:20:44Z</updated>
    <published>2026-11-25T09:15:00Z</published>
    <category term="felt"/>
    <summary type="html">&lt;p&gt;&lt;b&gt;Magnitude:&lt;/b&gt; 2.9 mN&lt;br/&gt;
&lt;b&gt;Depth:&lt;/b&gt; 18 km&lt;/p&gt;
&lt;p&gt;Felt in Ottawa &amp;amp; Gatineau (QC). No damage reported.&lt;/p&gt;</summary>
    <georss:point>45.4236 -75.7009</georss:point>
  </entry>
  <entry>
    <title>2026-11-24 22:01:40 UTC | 4.1 Mw | 180 km W of Port Hardy, BC</title>
    <id>https://earthquakescanada.example.ca/recent/2026/20261124.2201040/index-en.php</id>
    <link href="https://earthquakescanada.example.ca/recent/2026/20261124.2201040/index-en.php"/>
    <updated>2026-11-24T22:09:10Z</updated>
    <summary type="html">&lt;p&gt;Offshore event, not felt.&lt;/p&gt;</summary>
    <georss:point>50.9000 -130.1000</georss:point>
  </entry>
  <entry>
    <title>2026-11-24 15:30:00 UTC | 3.3 ML | 25 km SE de Kuujjuaq, QC · ᑰᔾᔪᐊᖅ</title>
    <id>https://earthquakescanada.example.ca/recent/2026/20261124.1530000/index-en.php</id>
    <link href="https://earthquakescanada.example.ca/recent/2026/20261124.1530000/index-en.php"/>
    <updated>2026-11-24T15:41:00Z</updated>
    <summary type="html">&lt;p&gt;Faiblement ressenti à Kuujjuaq.&lt;/p&gt;</summary>
    <georss:point>57.9  -68.2</georss:point>
  </entry>
</feed>
"""

RSS_GEORSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:georss="http://www.georss.org/georss">
  <channel>
    <title>Boil-water advisories</title>
    <link>https://advisories.example.ca/</link>
    <description>Advisories by location</description>
    <item>
      <title>Boil-water advisory: Iqaluit &amp; area</title>
      <link>https://advisories.example.ca/a/901</link>
      <guid isPermaLink="false">advisory-901</guid>
      <pubDate>Tue, 24 Nov 2026 18:00:00 -0500</pubDate>
      <description><![CDATA[<p>Boil water <b>before</b> drinking.</p><script>track()</script>]]></description>
      <georss:point>63.7467 -68.5170</georss:point>
    </item>
    <item>
      <title>Advisory lifted: Yellowknife</title>
      <link>https://advisories.example.ca/a/902</link>
      <description>No location given.</description>
    </item>
    <item>
      <title>An item with nothing to identify it</title>
      <description>No guid, no link.</description>
      <georss:point>62.45 -114.37</georss:point>
    </item>
    <item>
      <title>Bad point</title>
      <guid>advisory-904</guid>
      <georss:point>north somewhere</georss:point>
    </item>
  </channel>
</rss>
"""

RSS_W3C_GEO = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:geo="http://www.w3.org/2003/01/geo/wgs84_pos#">
  <channel>
    <title>Road closures</title>
    <item>
      <title>Highway 17 closed at Wawa</title>
      <guid>closure-17</guid>
      <link>https://roads.example.ca/closure-17</link>
      <geo:lat>47.9936</geo:lat>
      <geo:long>-84.7737</geo:long>
    </item>
    <item>
      <title>Nested W3C point</title>
      <guid>closure-18</guid>
      <geo:Point><geo:lat> 49.2827 </geo:lat><geo:long>-123.1207</geo:long></geo:Point>
    </item>
    <item>
      <title>Only a latitude</title>
      <guid>closure-19</guid>
      <geo:lat>not a number</geo:lat>
    </item>
  </channel>
</rss>
"""

XML_BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><item><title>&lol9;</title><guid>bomb</guid></item></channel></rss>
"""


def external_entity_feed(system_id: str) -> str:
    """An RSS feed whose title is an external entity (XXE) pointing at ``system_id``."""
    return f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "{system_id}">]>
<rss version="2.0"><channel><item><title>&xxe;</title><guid>xxe</guid></item></channel></rss>
"""


def external_dtd_feed(dtd_url: str) -> str:
    """An RSS feed that names an external DTD (a parser that fetched it would call home)."""
    return f"""<?xml version="1.0"?>
<!DOCTYPE rss SYSTEM "{dtd_url}">
<rss version="2.0"><channel><item><title>t</title><guid>g</guid></item></channel></rss>
"""
