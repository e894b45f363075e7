"""Feed sources against real servers: HTTP on loopback (tests/worker_fixtures.py) and S3 on moto.

Every failure must be a SourceError whose message is one line starting with the source name.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import boto3
import pytest

from lambda_src.local.moto_env import REGION, aws_env, moto_server, patched_env
from lambda_src.worker import http
from lambda_src.worker.postings import Posting
from lambda_src.worker.source_config import FieldMap, GeoRssConfig, HttpLimits, JsonFeedConfig, S3JsonlConfig
from lambda_src.worker.sources.base import SourceError
from lambda_src.worker.sources.fields import pick
from lambda_src.worker.sources.georss import GeoRss
from lambda_src.worker.sources.json_feed import JsonFeed
from lambda_src.worker.sources.registry import build_source
from lambda_src.worker.sources.s3_jsonl import S3Jsonl
from tests.worker_fixtures import (
    NRCAN_ATOM,
    RSS_GEORSS,
    RSS_W3C_GEO,
    XML_BOMB,
    FeedServer,
    Reply,
    closed_port,
    external_dtd_feed,
    external_entity_feed,
)

#: Fast limits for tests: no backoff, short timeouts.
FAST: dict[str, Any] = {"connect_timeout_s": 0.5, "read_timeout_s": 0.5, "retries": 2, "backoff_s": 0.0}
ATOM_TYPE = "application/atom+xml"
RSS_TYPE = "application/rss+xml"


@pytest.fixture
def server():
    with FeedServer() as srv:
        yield srv


def json_feed(url: str, **overrides: Any) -> JsonFeed:
    return JsonFeed(JsonFeedConfig(type="json_feed", name="clinics", url=url, **{**FAST, **overrides}))


def georss(url: str, **overrides: Any) -> GeoRss:
    return GeoRss(GeoRssConfig(type="georss", name="quakes", url=url, **{**FAST, **overrides}))


def source_error(call: Any, source: str) -> str:
    """Run ``call``; it must raise SourceError with one line naming ``source``. The message."""
    with pytest.raises(SourceError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{source}: "), message
    return message


def items(*objects: Any) -> str:
    return json.dumps(list(objects))


# ------------------------------------------------------------------------------ JSON feed: happy path


def test_json_feed_maps_fields_by_path(server):
    body = {
        "generated": "2026-11-25T10:00:00Z",
        "data": {
            "items": [
                {
                    "id": 1001,
                    "text": "Walk-in clinic",
                    "link": {"href": "https://clinics.example.ca/1001"},
                    "geometry": {"coordinates": [-79.3871, 43.6426]},
                    "time": "2026-11-25T09:00:00-05:00",
                    "postal_code": "M5V 3L9",
                    "category": "vaccine",
                    "capacity": 120,
                    "open": True,
                    "tags": ["a"],
                },
                {"id": "c-1002", "text": "No location", "address": "50 Rideau St, Ottawa ON"},
            ]
        },
    }
    url = server.route("/feed", Reply(body=json.dumps(body)))
    fields = FieldMap(
        url="link.href",
        latitude="geometry.coordinates.1",
        longitude="geometry.coordinates.0",
        attributes={"category": "category", "capacity": "capacity", "open": "open", "tags": "tags", "none": "nope"},
    )
    fetch = json_feed(url, items_key="data.items", fields=fields).fetch({})
    first, second = fetch.postings
    assert first == Posting(
        source="clinics",
        id="1001",
        text="Walk-in clinic",
        url="https://clinics.example.ca/1001",
        time="2026-11-25T09:00:00-05:00",
        latitude=43.6426,
        longitude=-79.3871,
        postal_code="M5V 3L9",
        attributes={"category": "vaccine", "capacity": 120.0},  # booleans and lists dropped
    )
    assert second.id == "c-1002" and second.latitude is None and second.address == "50 Rideau St, Ottawa ON"
    assert fetch.rejected == {} and fetch.checkpoint_key is None and fetch.not_modified is False
    assert fetch.cursor_when_done == {}  # no validators, no since-id
    assert server.hits("/feed")[0].headers["accept"] == "application/json"


def test_a_bare_list_and_lenient_content_types_are_accepted(server):
    for i, kind in enumerate(["application/json; charset=utf-8", "text/plain", "application/octet-stream", None]):
        url = server.route(f"/f{i}", Reply(body=items({"id": "x"}), content_type=kind))
        assert [p.id for p in json_feed(url).fetch({}).postings] == ["x"]


def test_pick_reads_keys_dotted_paths_and_list_indexes():
    item = {"a.b": 1, "a": {"b": 2, "c": [10, {"d": 20}]}}
    assert pick(item, "a.b") == 1  # a key with a dot wins
    assert pick(item, "a.c.1.d") == 20
    assert pick(item, "a.c.5") is None and pick(item, "a.x.y") is None and pick(item, None) is None


# ------------------------------------------------------------------------------ JSON feed: bad bodies


def test_invalid_json(server):
    url = server.route("/feed", Reply(body='[{"id": "1", "text": "cut off'))
    message = source_error(lambda: json_feed(url).fetch({}), "clinics")
    assert "invalid JSON" in message


def test_deeply_nested_json_is_invalid_not_a_crash(server):
    url = server.route("/feed", Reply(body="[" * 200_000 + "]" * 200_000))
    message = source_error(lambda: json_feed(url, max_bytes=1_000_000).fetch({}), "clinics")
    assert "invalid JSON" in message


def test_html_error_page_with_200(server):
    page = "<!DOCTYPE html>\n<html><body><h1>Maintenance</h1>\n<p>Back soon</p></body></html>"
    url = server.route("/feed", Reply(body=page, content_type="text/html; charset=utf-8"))
    message = source_error(lambda: json_feed(url).fetch({}), "clinics")
    assert "returned text/html, not JSON" in message


@pytest.mark.parametrize("kind", ["application/xml", "application/rss+xml", "image/png", "text/csv"])
def test_wrong_content_type(server, kind):
    url = server.route("/feed", Reply(body=items({"id": "1"}), content_type=kind))
    message = source_error(lambda: json_feed(url).fetch({}), "clinics")
    assert f"returned {kind}, not JSON" in message


def test_html_body_labelled_json_is_invalid_json(server):
    url = server.route("/feed", Reply(body="<html><body>Error</body></html>"))
    assert "invalid JSON" in source_error(lambda: json_feed(url).fetch({}), "clinics")


def test_object_without_items_key_and_other_shapes(server):
    url = server.route("/obj", Reply(body=json.dumps({"items": [{"id": "1"}]})))
    assert "items_key" in source_error(lambda: json_feed(url).fetch({}), "clinics")  # no items_key configured
    url = server.route("/missing", Reply(body=json.dumps({"results": []})))
    message = source_error(lambda: json_feed(url, items_key="items").fetch({}), "clinics")
    assert "expected a list under 'items', found nothing" in message
    url = server.route("/notlist", Reply(body=json.dumps({"items": {"id": "1"}})))
    message = source_error(lambda: json_feed(url, items_key="items").fetch({}), "clinics")
    assert "expected a list under 'items', found an object" in message
    url = server.route("/scalar", Reply(body='"hello"'))
    assert "expected a JSON list or object, got a string" in source_error(lambda: json_feed(url).fetch({}), "clinics")


def test_bad_items_are_rejected_by_reason(server):
    body = items(
        {"id": "a", "text": "first"},
        "just a string",
        42,
        None,
        ["a", "list"],
        {"text": "no id"},
        {"id": "", "text": "empty id"},
        {"id": "   ", "text": "blank id"},
        {"id": None},
        {"id": True},
        {"id": 1.5},
        {"id": {"nested": 1}},
        {"id": "a", "text": "duplicate of the first"},
        {"id": 7},
        {"id": "7", "text": "same id as the int 7"},
        {"id": "x" * 2000},
        {"id": " b ", "text": "second"},
    )
    url = server.route("/feed", Reply(body=body))
    fetch = json_feed(url).fetch({})
    assert [(p.id, p.text) for p in fetch.postings] == [("a", "first"), ("7", ""), ("b", "second")]
    assert fetch.rejected == {"not_an_object": 4, "missing_id": 7, "duplicate_id": 2, "invalid_id": 1}


def test_coordinates_are_passed_through_or_none_never_an_exception(server):
    body = (
        '[{"id": "nan", "latitude": NaN, "longitude": Infinity},'
        ' {"id": "range", "latitude": 200.5, "longitude": -500},'
        ' {"id": "strings", "latitude": " 43.6 ", "longitude": "-79.38"},'
        ' {"id": "words", "latitude": "forty-three", "longitude": "43,6"},'
        ' {"id": "odd", "latitude": true, "longitude": [1, 2]},'
        ' {"id": "huge", "latitude": 1e400, "longitude": {"x": 1}},'
        ' {"id": "ints", "latitude": 45, "longitude": -75},'
        ' {"id": "null", "latitude": null}]'
    )
    url = server.route("/feed", Reply(body=body))
    got = {p.id: (p.latitude, p.longitude) for p in json_feed(url).fetch({}).postings}
    assert math.isnan(got["nan"][0]) and got["nan"][1] == math.inf
    assert got["range"] == (200.5, -500.0)
    assert got["strings"] == (43.6, -79.38)
    assert got["words"] == (None, None)
    assert got["odd"] == (None, None)
    assert got["huge"] == (math.inf, None)  # JSON 1e400 is already inf when parsed; as given
    assert got["ints"] == (45.0, -75.0) and isinstance(got["ints"][0], float)
    assert got["null"] == (None, None)


def test_long_text_is_kept_whole(server):
    text = "Clinic update. " * 7000  # 105,000 characters
    url = server.route("/feed", Reply(body=items({"id": "long", "text": text})))
    (posting,) = json_feed(url).fetch({}).postings
    assert posting.text == text and len(posting.text) == 105_000


def test_control_characters_removed_other_scripts_kept(server):
    text = "ᐃᓄᒃᑎᑐᑦ ᖃᐅᔨᒪᔭᐅᔪᖅ\r\n中文通知\t🚑 👩\u200d⚕️ é\x00\x07\x1b[31mred\x7f\x85\u2028Ελληνικά العربية"
    raw = json.dumps([{"id": "\x01 ᐅ-1", "text": text, "address": "\x00", "category": "\x1b"}])
    raw = raw.replace("\\u2028", "\\u2028\\ud800")  # and a lone surrogate, as JSON escapes allow
    fields = FieldMap(attributes={"category": "category"})
    (posting,) = json_feed(server.route("/feed", Reply(body=raw)), fields=fields).fetch({}).postings
    assert posting.id == "ᐅ-1"
    assert posting.text == "ᐃᓄᒃᑎᑐᑦ ᖃᐅᔨᒪᔭᐅᔪᖅ\n中文通知\t🚑 👩\u200d⚕️ é[31mred\u2028Ελληνικά العربية"
    assert posting.address is None and posting.attributes == {}
    posting.text.encode("utf-8")  # publishable: no lone surrogates left


# ------------------------------------------------------------------------------ conditional GET, since-id


def test_not_modified_with_etag_and_last_modified(server):
    validators = {"ETag": '"v1"', "Last-Modified": "Tue, 24 Nov 2026 18:00:00 GMT"}

    def reply(seen):
        if seen.headers.get("if-none-match") == '"v1"':
            return Reply(304, headers=validators)
        return Reply(body=items({"id": "1"}), headers=validators)

    url = server.route("/feed", reply)
    source = json_feed(url)
    first = source.fetch({})
    assert [p.id for p in first.postings] == ["1"]
    assert first.cursor_when_done == {"etag": '"v1"', "last_modified": "Tue, 24 Nov 2026 18:00:00 GMT"}

    cursor = {**first.cursor_when_done, "other": "kept"}
    second = source.fetch(cursor)
    assert second.not_modified and second.postings == [] and second.cursor_when_done == cursor
    sent = server.hits("/feed")[1].headers
    assert sent["if-none-match"] == '"v1"' and sent["if-modified-since"] == "Tue, 24 Nov 2026 18:00:00 GMT"
    assert "if-none-match" not in server.hits("/feed")[0].headers


def test_a_new_response_replaces_old_validators(server):
    url = server.route("/feed", Reply(body=items({"id": "1"}), headers={"ETag": '"v2"'}))
    fetch = json_feed(url).fetch({"etag": '"v1"', "last_modified": "Mon, 23 Nov 2026 00:00:00 GMT"})
    assert fetch.cursor_when_done == {"etag": '"v2"'}  # the old Last-Modified no longer describes the feed


def test_since_id_is_sent_and_checkpointed(server):
    url = server.route(
        "/feed",
        Reply(body=items({"id": "41"}, {"id": "42"}, {"id": "43"}), headers={"ETag": '"e"'}),
        Reply(body="[]"),
    )
    source = json_feed(url + "?format=json&since=stale", since_param="since")

    first = source.fetch({})
    assert server.hits("/feed")[0].query == {"format": "json", "since": "stale"}  # as configured
    assert [p.checkpoint for p in first.postings] == ["41", "42", "43"]
    assert first.checkpoint_key == "since_id"
    assert first.cursor_when_done == {"etag": '"e"', "since_id": "43"}

    second = source.fetch({"since_id": "43", "etag": '"e"'})
    assert server.hits("/feed")[1].query == {"format": "json", "since": "43"}
    assert second.postings == [] and second.cursor_when_done == {"since_id": "43"}  # kept with no postings


def test_since_id_is_url_encoded(server):
    url = server.route("/feed", Reply(body="[]"))
    json_feed(url, since_param="after").fetch({"since_id": "a b&c=d"})
    assert server.hits("/feed")[0].query == {"after": "a b&c=d"}


def test_no_content_keeps_the_cursor(server):
    url = server.route("/feed", Reply(204, content_type=None))
    fetch = json_feed(url, since_param="since").fetch({"since_id": "9"})
    assert fetch.postings == [] and fetch.cursor_when_done == {"since_id": "9"}


# ------------------------------------------------------------------------------ HTTP: status, retries


def test_500_then_success_is_retried(server):
    url = server.route("/feed", Reply(500, "oops", content_type="text/plain"), Reply(body=items({"id": "1"})))
    assert [p.id for p in json_feed(url).fetch({}).postings] == ["1"]
    assert len(server.hits("/feed")) == 2


def test_persistent_503_fails_after_the_retries(server):
    url = server.route("/feed", Reply(503, "busy", content_type="text/plain"))
    message = source_error(lambda: json_feed(url, retries=2).fetch({}), "clinics")
    assert len(server.hits("/feed")) == 3
    assert "HTTP 503" in message and "3 attempts" in message and url in message


def test_404_fails_without_retry(server):
    url = server.url("/nowhere")
    message = source_error(lambda: json_feed(url, retries=3).fetch({}), "clinics")
    assert len(server.hits("/nowhere")) == 1
    assert message == f"clinics: HTTP 404 from {url}"


def test_429_honours_retry_after_capped(server, monkeypatch):
    monkeypatch.setattr(http, "RETRY_AFTER_CAP_S", 0.3)
    url = server.route("/feed", Reply(429, headers={"Retry-After": "3600"}), Reply(body="[]"))
    started = time.monotonic()
    json_feed(url).fetch({})
    assert 0.3 <= time.monotonic() - started < 2  # waited, but not an hour
    assert len(server.hits("/feed")) == 2


def test_retry_after_values():
    assert http._retry_after("2") == 2.0
    assert http._retry_after("soon") is None and http._retry_after(None) is None
    assert http._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_backoff_is_exponential(server):
    url = server.route("/feed", Reply(502), Reply(502), Reply(body="[]"))
    started = time.monotonic()
    json_feed(url, backoff_s=0.1).fetch({})
    assert 0.3 <= time.monotonic() - started < 1.5  # 0.1 + 0.2


def test_connection_refused(server):
    url = f"http://127.0.0.1:{closed_port()}/feed"
    message = source_error(lambda: json_feed(url, retries=1).fetch({}), "clinics")
    assert "cannot connect" in message and "2 attempts" in message


def test_slow_server_past_read_timeout(server):
    url = server.route("/feed", Reply(body="[]", delay=1.0))
    started = time.monotonic()
    message = source_error(lambda: json_feed(url, read_timeout_s=0.2, retries=1).fetch({}), "clinics")
    assert time.monotonic() - started < 0.9
    assert "timed out" in message and "2 attempts" in message
    assert len(server.hits("/feed")) == 2


def test_trickling_body_is_cut_off(server):
    # Each piece arrives within the read timeout; the whole body would take 4 s.
    body = items(*({"id": str(i)} for i in range(400)))
    url = server.route("/feed", Reply(body=body, piece=200, trickle=0.1))
    started = time.monotonic()
    message = source_error(lambda: json_feed(url, read_timeout_s=0.2, retries=0).fetch({}), "clinics")
    assert time.monotonic() - started < 1.5
    assert "to send its body" in message and "1 attempt" in message


def test_server_hanging_up_mid_body_is_retried(server):
    body = items({"id": "1"})
    # Content-Length says more than is sent, then the connection closes: an incomplete read.
    broken = Reply(body=body, headers={"Content-Length": str(len(body) + 50)}, close_delimited=True)
    url = server.route("/feed", broken, Reply(body=body))
    assert [p.id for p in json_feed(url).fetch({}).postings] == ["1"]
    assert len(server.hits("/feed")) == 2


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(body="[" + " " * 5000 + "]"), "is 5002 bytes, over the limit of 4096"),  # Content-Length up front
        (Reply(body="[" + " " * 5000 + "]", chunked=True, piece=512), "sent more than the limit of 4096 bytes"),
        (Reply(body="[" + " " * 5000 + "]", close_delimited=True), "sent more than the limit of 4096 bytes"),
        (Reply(body="[" + " " * 3_000_000 + "]", gzip=True), "sent more than the limit of 4096 bytes"),  # gzip bomb
    ],
    ids=["content-length", "chunked", "close-delimited", "gzip"],
)
def test_response_over_max_bytes(server, reply, expected):
    url = server.route("/feed", reply)
    message = source_error(lambda: json_feed(url, max_bytes=4096).fetch({}), "clinics")
    assert expected in message
    assert len(server.hits("/feed")) == 1  # not retried


def test_gzip_within_limits_is_decoded(server):
    url = server.route("/feed", Reply(body=items({"id": "z", "text": "é" * 100}), gzip=True))
    assert json_feed(url).fetch({}).postings[0].text == "é" * 100
    assert "gzip" in server.hits("/feed")[0].headers["accept-encoding"]


def test_redirects_followed_up_to_three(server):
    url = server.route("/a", Reply(301, headers={"Location": "/b"}))
    server.route("/b", Reply(302, headers={"Location": server.url("/c")}))
    server.route("/c", Reply(body=items({"id": "moved"})))
    assert [p.id for p in json_feed(url).fetch({}).postings] == ["moved"]

    loop = server.route("/loop", Reply(307, headers={"Location": "/loop"}))
    assert "more than 3 redirects" in source_error(lambda: json_feed(loop).fetch({}), "clinics")
    assert len(server.hits("/loop")) == 4


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.ca/feed.json", "gopher://x/"])
def test_redirect_to_other_schemes_is_refused(server, target):
    url = server.route("/feed", Reply(302, headers={"Location": target}))
    message = source_error(lambda: json_feed(url).fetch({}), "clinics")
    assert "non-http(s)" in message and "root:" not in message


def test_redirect_without_location(server):
    url = server.route("/feed", Reply(302))
    assert "without a Location" in source_error(lambda: json_feed(url).fetch({}), "clinics")


def test_http_get_directly(server):
    url = server.route("/x", Reply(body=b"\x00\x01binary", content_type="application/octet-stream"))
    response = http.get(url, limits=HttpLimits(**FAST), headers={"X-Test": "1"}, source="direct")
    assert response.status == 200 and response.body == b"\x00\x01binary"
    assert response.headers["content-type"] == "application/octet-stream"  # case-insensitive
    assert server.hits("/x")[0].headers["x-test"] == "1"


def test_messages_hide_credentials():
    shown = http.display("https://user:pw@feeds.example.ca/a?api_key=s3cret&since=5&token=t")
    assert shown == "https://feeds.example.ca/a?api_key=***&since=5&token=***"


# ------------------------------------------------------------------------------ GeoRSS


def test_atom_with_georss_points(server):
    headers = {"ETag": 'W/"q1"', "Last-Modified": "Wed, 25 Nov 2026 09:30:12 GMT"}
    url = server.route("/quakes.atom", Reply(body=NRCAN_ATOM, content_type=ATOM_TYPE, headers=headers))
    fetch = georss(url).fetch({})
    assert fetch.rejected == {} and fetch.checkpoint_key is None
    assert fetch.cursor_when_done == {"etag": 'W/"q1"', "last_modified": "Wed, 25 Nov 2026 09:30:12 GMT"}
    ottawa, offshore, kuujjuaq = fetch.postings
    assert ottawa.source == "quakes"
    assert ottawa.id == "https://earthquakescanada.example.ca/recent/2026/20261125.0912001/index-en.php"
    assert ottawa.url == ottawa.id  # the rel="alternate" link, not the related one
    assert (ottawa.latitude, ottawa.longitude) == (45.4236, -75.7009)
    assert ottawa.time == "2026-11-25T09:20:44Z"
    assert ottawa.text == (
        "2026-11-25 09:12:03 UTC | 2.9 mN | 12 km NW of Ottawa, ON\n"
        "Magnitude: 2.9 mN Depth: 18 km Felt in Ottawa & Gatineau (QC). No damage reported."
    )
    assert (offshore.latitude, offshore.longitude) == (50.9, -130.1)
    assert (kuujjuaq.latitude, kuujjuaq.longitude) == (57.9, -68.2)
    assert "ᑰᔾᔪᐊᖅ" in kuujjuaq.text and "Faiblement ressenti à Kuujjuaq." in kuujjuaq.text
    assert all(p.checkpoint is None for p in fetch.postings)


def test_rss_with_georss_points(server):
    url = server.route("/rss", Reply(body=RSS_GEORSS, content_type=RSS_TYPE))
    fetch = georss(url).fetch({})
    assert [p.id for p in fetch.postings] == ["advisory-901", "https://advisories.example.ca/a/902", "advisory-904"]
    assert fetch.rejected == {"missing_id": 1}
    iqaluit, lifted, bad = fetch.postings
    assert (iqaluit.latitude, iqaluit.longitude) == (63.7467, -68.517)
    assert iqaluit.text == "Boil-water advisory: Iqaluit & area\nBoil water before drinking."
    assert iqaluit.url == "https://advisories.example.ca/a/901" and iqaluit.time == "Tue, 24 Nov 2026 18:00:00 -0500"
    assert (lifted.latitude, lifted.longitude) == (None, None)
    assert (bad.latitude, bad.longitude) == (None, None) and bad.text == "Bad point"


def test_rss_with_w3c_geo(server):
    url = server.route("/rss", Reply(body=RSS_W3C_GEO, content_type="text/xml"))
    got = {p.id: (p.latitude, p.longitude) for p in georss(url).fetch({}).postings}
    assert got == {
        "closure-17": (47.9936, -84.7737),
        "closure-18": (49.2827, -123.1207),
        "closure-19": (None, None),
    }


def test_rss_1_and_gml_points(server):
    feed = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
         xmlns:georss="http://www.georss.org/georss" xmlns:gml="http://www.opengis.net/gml"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://x.example.ca/"><title>x</title></channel>
  <item rdf:about="https://x.example.ca/1">
    <title>Flood watch</title><link>https://x.example.ca/1</link><dc:date>2026-11-25T10:00:00Z</dc:date>
    <georss:where><gml:Point><gml:pos>46.8139 -71.2080</gml:pos></gml:Point></georss:where>
  </item>
</rdf:RDF>"""
    url = server.route("/rdf", Reply(body=feed, content_type="application/rdf+xml"))
    (posting,) = georss(url).fetch({}).postings
    assert posting.id == "https://x.example.ca/1" and posting.time == "2026-11-25T10:00:00Z"
    assert (posting.latitude, posting.longitude) == (46.8139, -71.208)


def test_duplicate_entries_rejected(server):
    feed = NRCAN_ATOM.replace("20261124.2201040", "20261125.0912001")
    url = server.route("/quakes", Reply(body=feed, content_type=ATOM_TYPE))
    fetch = georss(url).fetch({})
    assert len(fetch.postings) == 2 and fetch.rejected == {"duplicate_id": 1}


def test_georss_not_modified(server):
    def reply(seen):
        if seen.headers.get("if-modified-since") == "Wed, 25 Nov 2026 09:30:12 GMT":
            return Reply(304)
        return Reply(
            body=NRCAN_ATOM, content_type=ATOM_TYPE, headers={"Last-Modified": "Wed, 25 Nov 2026 09:30:12 GMT"}
        )

    url = server.route("/quakes", reply)
    first = georss(url).fetch({})
    second = georss(url).fetch(first.cursor_when_done)
    assert len(first.postings) == 3
    assert second.not_modified and second.postings == [] and second.cursor_when_done == first.cursor_when_done


def test_xml_bomb_is_refused(server):
    url = server.route("/rss", Reply(body=XML_BOMB, content_type=RSS_TYPE))
    started = time.monotonic()
    message = source_error(lambda: georss(url).fetch({}), "quakes")
    assert message.startswith("quakes: unsafe XML (") and time.monotonic() - started < 2


@pytest.mark.parametrize("system_id", ["file:///etc/passwd", "/etc/hostname"])
def test_external_entity_file_is_refused(server, system_id):
    url = server.route("/rss", Reply(body=external_entity_feed(system_id), content_type=RSS_TYPE))
    message = source_error(lambda: georss(url).fetch({}), "quakes")
    assert "unsafe XML" in message and "root:" not in message


def test_external_entity_and_dtd_urls_are_never_fetched(server):
    server.route("/secret", Reply(body="<x>leak</x>", content_type="text/xml"))
    for path, feed in [
        ("/xxe", external_entity_feed(server.url("/secret"))),
        ("/dtd", external_dtd_feed(server.url("/secret"))),
    ]:
        url = server.route(path, Reply(body=feed, content_type=RSS_TYPE))
        assert "unsafe XML" in source_error(lambda url=url: georss(url).fetch({}), "quakes")
    assert server.hits("/secret") == []


def test_georss_bad_bodies(server):
    cases = {
        "/html": (Reply(body="<!DOCTYPE html><html></html>", content_type="text/html"), "returned text/html, not XML"),
        "/broken": (Reply(body="<rss><channel><item>", content_type=RSS_TYPE), "invalid XML"),
        "/notfeed": (Reply(body="<kml><Placemark/></kml>", content_type="text/xml"), "not an RSS or Atom feed"),
        "/json": (Reply(body="[]"), "returned application/json, not XML"),
        "/empty": (Reply(body="", content_type=RSS_TYPE), "invalid XML"),
    }
    for path, (reply, expected) in cases.items():
        url = server.route(path, reply)
        assert expected in source_error(lambda url=url: georss(url).fetch({}), "quakes"), path


def test_georss_http_errors(server):
    url = server.route("/gone", Reply(410, "gone", content_type="text/plain"))
    assert "HTTP 410" in source_error(lambda: georss(url).fetch({}), "quakes")


# ------------------------------------------------------------------------------ S3 JSON Lines


@pytest.fixture(scope="module")
def s3():
    with moto_server() as endpoint, patched_env(aws_env(endpoint)):
        yield boto3.client("s3", region_name=REGION)


def make_bucket(s3, name: str, objects: dict[str, bytes | str]) -> None:
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    for key, body in objects.items():
        s3.put_object(Bucket=name, Key=key, Body=body.encode() if isinstance(body, str) else body)


def s3_source(s3, bucket: str, **overrides: Any) -> S3Jsonl:
    config = S3JsonlConfig(type="s3_jsonl", name="drops", bucket=bucket, **{"prefix": "in/", **overrides})
    return S3Jsonl(config, s3)


def lines(*objects: Any) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def test_s3_jsonl_across_objects_with_resume(s3):
    make_bucket(
        s3,
        "drops-resume",
        {
            "in/2026-11-25T09.jsonl": lines({"id": "a1"}, {"id": "a2"}, {"id": "a3"}),
            "in/2026-11-25T10.jsonl": "\n" + lines({"id": "b1", "text": "ᐃᓄᒃᑎᑐᑦ"}) + "   \n\r\n",
            "in/2026-11-25T11.jsonl": lines({"id": "c1"}, {"id": "c2"}),
            "other/ignored.jsonl": lines({"id": "z"}),
        },
    )
    source = s3_source(s3, "drops-resume", max_objects=2)
    first = source.fetch({})
    assert [(p.id, p.checkpoint) for p in first.postings] == [
        ("a1", None),
        ("a2", None),
        ("a3", "in/2026-11-25T09.jsonl"),
        ("b1", "in/2026-11-25T10.jsonl"),
    ]
    assert first.checkpoint_key == "start_after" and first.rejected == {}
    assert first.cursor_when_done == {"start_after": "in/2026-11-25T10.jsonl"}
    assert first.postings[3].text == "ᐃᓄᒃᑎᑐᑦ"

    second = source.fetch(first.cursor_when_done)
    assert [(p.id, p.checkpoint) for p in second.postings] == [("c1", None), ("c2", "in/2026-11-25T11.jsonl")]
    assert second.cursor_when_done == {"start_after": "in/2026-11-25T11.jsonl"}

    # A run stopped after a3 stores start_after = the first object: it resumes at the second.
    resumed = source.fetch({"start_after": "in/2026-11-25T09.jsonl"})
    assert [p.id for p in resumed.postings] == ["b1", "c1", "c2"]

    third = source.fetch(second.cursor_when_done)
    assert third.postings == [] and third.cursor_when_done == second.cursor_when_done


def test_s3_invalid_lines_are_rejected(s3):
    body = (
        lines({"id": "ok1", "latitude": "45.5", "longitude": "oops"}).encode()
        + b"{not json}\n"
        + b'{"id": "cut\n'
        + b"[1, 2]\n"
        + b'"a string"\n'
        + lines({"text": "no id"}, {"id": "ok1"}).encode()
        + b'{"id": "\xff\xfe not utf-8"}\n'
        + lines({"id": "ok2"}).encode()
    )
    make_bucket(s3, "drops-invalid", {"in/a.jsonl": body, "in/b.jsonl": "{broken\n"})
    fetch = s3_source(s3, "drops-invalid").fetch({})
    assert [(p.id, p.latitude, p.longitude, p.checkpoint) for p in fetch.postings] == [
        ("ok1", 45.5, None, None),
        ("ok2", None, None, "in/a.jsonl"),
    ]
    assert fetch.rejected == {"invalid_json": 4, "not_an_object": 2, "missing_id": 1, "duplicate_id": 1}
    # b.jsonl gave nothing, but the cursor still moves past it.
    assert fetch.cursor_when_done == {"start_after": "in/b.jsonl"}


def test_s3_oversize_object_is_refused(s3):
    make_bucket(s3, "drops-big", {"in/1.jsonl": lines({"id": "1"}), "in/2.jsonl": "x" * 5000})
    source = s3_source(s3, "drops-big", max_bytes=2048)
    message = source_error(lambda: source.fetch({}), "drops")
    assert "s3://drops-big/in/2.jsonl is 5000 bytes, over the limit of 2048" in message
    assert source.fetch({"start_after": "in/2.jsonl"}).postings == []  # once past it, reads go on


def test_s3_missing_bucket(s3):
    message = source_error(lambda: s3_source(s3, "no-such-bucket-here").fetch({}), "drops")
    assert "cannot list s3://no-such-bucket-here/in/" in message


# ------------------------------------------------------------------------------ registry


def test_registry_builds_each_type(s3):
    feed = build_source(JsonFeedConfig(type="json_feed", name="a", url="https://x.example.ca/f.json"))
    rss = build_source(GeoRssConfig(type="georss", name="b", url="https://x.example.ca/f.xml"))
    drops = build_source(S3JsonlConfig(type="s3_jsonl", name="c", bucket="bucket-c"), s3_client=s3)
    assert (type(feed), type(rss), type(drops)) == (JsonFeed, GeoRss, S3Jsonl)
    assert [feed.name, rss.name, drops.name] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="s3_client"):
        build_source(S3JsonlConfig(type="s3_jsonl", name="c", bucket="bucket-c"))
