"""A JSON feed over HTTP(S): a list of objects, or a list under ``items_key``.

Cursor: ``etag`` / ``last_modified`` for a conditional GET and, when the feed takes a
since-id query parameter (``since_param``), ``since_id``: the id of the last posting, which
is also each posting's checkpoint (the feed is expected to list items oldest first).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lambda_src.worker import http
from lambda_src.worker.postings import Fetch, Posting
from lambda_src.worker.source_config import JsonFeedConfig
from lambda_src.worker.sources.base import SourceError
from lambda_src.worker.sources.fields import Collector, pick

SINCE_ID = "since_id"
#: Media types that are clearly not JSON; anything else (application/json, text/plain,
#: application/octet-stream, none at all...) is parsed and judged by its content.
_NOT_JSON = ("text/html", "application/xhtml+xml", "text/xml", "application/xml", "text/css", "text/csv")
_NOT_JSON_FAMILIES = ("image/", "audio/", "video/", "font/", "multipart/")


class JsonFeed:
    def __init__(self, config: JsonFeedConfig) -> None:
        self.config = config
        self.name = config.name

    def fetch(self, cursor: dict[str, str]) -> Fetch:
        since = self.config.since_param is not None
        checkpoint_key = SINCE_ID if since else None
        headers = {"Accept": "application/json", **http.conditional_headers(cursor)}
        response = http.get(self._url(cursor), limits=self.config, headers=headers, source=self.name)
        if response.status == 304:
            return Fetch([], dict(cursor), checkpoint_key=checkpoint_key, not_modified=True)
        done = http.validators(response)
        if response.status == 204:  # "nothing new", as some since-id APIs say it
            if since and cursor.get(SINCE_ID):
                done[SINCE_ID] = cursor[SINCE_ID]
            return Fetch([], done, checkpoint_key=checkpoint_key)

        collector = Collector(self.name)
        for item in self._items(response):
            collector.add_item(item, self.config.fields)
        postings = collector.postings
        if since:
            postings = [_with_checkpoint(p) for p in postings]
            last = postings[-1].id if postings else cursor.get(SINCE_ID)
            if last:
                done[SINCE_ID] = last
        return Fetch(postings, done, checkpoint_key=checkpoint_key, rejected=dict(collector.rejected))

    def _url(self, cursor: dict[str, str]) -> str:
        param, since_id = self.config.since_param, cursor.get(SINCE_ID)
        if not (param and since_id):
            return self.config.url
        parts = urlsplit(self.config.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
        query.append((param, since_id))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _items(self, response: http.Response) -> list[Any]:
        kind = http.media_type(response)
        if kind in _NOT_JSON or kind.startswith(_NOT_JSON_FAMILIES) or kind.endswith("+xml"):
            raise SourceError(f"{self.name}: {http.display(self.config.url)} returned {kind}, not JSON")
        try:
            data = json.loads(response.body)
        except RecursionError:
            raise SourceError(f"{self.name}: invalid JSON (nested too deeply)") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many int digits
            raise SourceError(http.one_line(f"{self.name}: invalid JSON ({exc})")) from None
        if isinstance(data, list):
            return data
        key = self.config.items_key
        if isinstance(data, dict):
            if key is None:
                raise SourceError(f"{self.name}: expected a JSON list, got an object (is items_key missing?)")
            items = pick(data, key)
            if isinstance(items, list):
                return items
            found = "nothing" if items is None else _json_kind(items)
            raise SourceError(http.one_line(f"{self.name}: expected a list under {key!r}, found {found}"))
        raise SourceError(f"{self.name}: expected a JSON list or object, got {_json_kind(data)}")


def _with_checkpoint(posting: Posting) -> Posting:
    return replace(posting, checkpoint=posting.id)


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
