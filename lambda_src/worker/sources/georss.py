"""A GeoRSS feed over HTTP(S): RSS 2.0 (also RSS 1.0) or Atom, with locations from
``georss:point`` ("lat lon"), ``georss:where``/``gml:pos``, or W3C ``geo:lat``/``geo:long``.

Parsed only by defusedxml with DTDs forbidden: entity expansion, external entities and
DTDs raise before anything is expanded or fetched. Cursor: ``etag`` / ``last_modified``
for a conditional GET; no checkpoints (the feed is read whole; idempotency skips repeats).
"""

from __future__ import annotations

import html
import re
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from lambda_src.worker import http
from lambda_src.worker.postings import Fetch, Posting
from lambda_src.worker.source_config import GeoRssConfig
from lambda_src.worker.sources.base import SourceError
from lambda_src.worker.sources.fields import (
    MAX_ID_CHARS,
    Collector,
    clean_text,
    coerce_id,
    coerce_number,
    coerce_str,
)

ATOM = "{http://www.w3.org/2005/Atom}"
GEORSS = "{http://www.georss.org/georss}"
GEO = "{http://www.w3.org/2003/01/geo/wgs84_pos#}"
GML = "{http://www.opengis.net/gml}"
RSS1 = "{http://purl.org/rss/1.0/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/elements/1.1/}"

_NOT_XML = ("text/html", "application/xhtml+xml", "application/json")
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


class GeoRss:
    def __init__(self, config: GeoRssConfig) -> None:
        self.config = config
        self.name = config.name

    def fetch(self, cursor: dict[str, str]) -> Fetch:
        headers = {
            "Accept": "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1",
            **http.conditional_headers(cursor),
        }
        response = http.get(self.config.url, limits=self.config, headers=headers, source=self.name)
        if response.status == 304:
            return Fetch([], dict(cursor), not_modified=True)
        kind = http.media_type(response)
        if kind in _NOT_XML:
            raise SourceError(f"{self.name}: {http.display(self.config.url)} returned {kind}, not XML")
        collector = Collector(self.name)
        try:
            root = self._parse(response.body)
            for item in self._items(root):
                collector.add(self._posting(item))
        except RecursionError:
            raise SourceError(f"{self.name}: XML nested too deeply") from None
        return Fetch(collector.postings, http.validators(response), rejected=dict(collector.rejected))

    def _parse(self, body: bytes) -> Element:
        try:
            return defusedxml.ElementTree.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except defusedxml.DefusedXmlException as exc:
            raise SourceError(http.one_line(f"{self.name}: unsafe XML ({exc})")[:500]) from None
        except ParseError as exc:
            raise SourceError(http.one_line(f"{self.name}: invalid XML ({exc})")) from None

    def _items(self, root: Element) -> list[Element]:
        if root.tag == f"{ATOM}feed":
            return root.findall(f"{ATOM}entry")
        if root.tag == "rss":
            return root.findall("channel/item")
        if root.tag == f"{RDF}RDF":
            return root.findall(f"{RSS1}item")
        raise SourceError(http.one_line(f"{self.name}: not an RSS or Atom feed (root element {root.tag[:100]})"))

    def _posting(self, item: Element) -> Posting | str:
        if item.tag == f"{ATOM}entry":
            posting_id = coerce_id(_text(item.find(f"{ATOM}id")))
            url = _atom_link(item)
            title = _atom_text(item.find(f"{ATOM}title"))
            body = _atom_text(item.find(f"{ATOM}summary"))
            if not body:
                body = _atom_text(item.find(f"{ATOM}content"))
            time = _text(item.find(f"{ATOM}updated")) or _text(item.find(f"{ATOM}published"))
        else:
            ns = RSS1 if item.tag == f"{RSS1}item" else ""
            posting_id = coerce_id(_text(item.find(f"{ns}guid"))) or coerce_id(item.get(f"{RDF}about"))
            url = coerce_str(_text(item.find(f"{ns}link")))
            title = _strip_html(_text(item.find(f"{ns}title")))
            body = _strip_html(_text(item.find(f"{ns}description")))
            time = _text(item.find("pubDate")) or _text(item.find(f"{DC}date"))
        posting_id = posting_id or coerce_id(url)
        if posting_id is None:
            return "missing_id"
        if len(posting_id) > MAX_ID_CHARS:
            return "invalid_id"
        latitude, longitude = _location(item)
        return Posting(
            source=self.name,
            id=posting_id,
            text=clean_text("\n".join(part for part in (title, body) if part)),
            url=url,
            time=coerce_str(time),
            latitude=latitude,
            longitude=longitude,
        )


def _text(element: Element | None) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


def _strip_html(text: str) -> str:
    """Tags out (script and style with their content), entities decoded, blanks collapsed."""
    text = _TAG.sub(" ", _SCRIPT.sub(" ", text))
    return " ".join(html.unescape(text).split())


def _atom_text(element: Element | None) -> str:
    """An Atom text construct: ``type="html"`` is escaped HTML, ``xhtml`` is markup, else plain."""
    if element is None:
        return ""
    if element.get("type", "text") == "html":
        return _strip_html(_text(element))
    return " ".join(_text(element).split())


def _atom_link(entry: Element) -> str | None:
    links = entry.findall(f"{ATOM}link")
    preferred = [link for link in links if link.get("rel", "alternate") == "alternate"] or links
    for link in preferred:
        href = coerce_str(link.get("href"))
        if href:
            return href
    return None


def _location(item: Element) -> tuple[float | None, float | None]:
    """Coordinates as given (unparseable -> None); location resolution judges them later."""
    point = item.find(f"{GEORSS}point")
    if point is None:
        point = item.find(f"{GEORSS}where/{GML}Point/{GML}pos")
    if point is not None:
        parts = re.split(r"[\s,]+", _text(point))
        if len(parts) == 2:
            return coerce_number(parts[0]), coerce_number(parts[1])
        return None, None
    lat = item.find(f".//{GEO}lat")
    lon = item.find(f".//{GEO}long")
    if lon is None:
        lon = item.find(f".//{GEO}lon")
    if lat is None and lon is None:
        return None, None
    return coerce_number(_text(lat)), coerce_number(_text(lon))
