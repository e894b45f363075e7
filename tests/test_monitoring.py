"""The monitoring stack through real synthesis: the dashboard's rows, every alarm with its
action and runbook anchor, thresholds from context, and that the metric names the dashboard
and the alarms use are exactly the ones the real handlers emit (EMF), in both directions.

Bundling is skipped (``aws:cdk:bundling-stacks`` = []), as in test_infra.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from lambda_src.local.aws_resources import create_worker_resources
from lambda_src.local.context import LocalContext
from lambda_src.local.feed_server import FeedServer
from lambda_src.local.moto_env import patched_env
from lambda_src.shared.metric_names import NAMESPACE, LoaderMetric, WorkerMetric
from stacks.application import build_app
from stacks.settings import ConfigError, cdk_json_context

# One process runs this module under `make test` (--dist loadgroup): two synths, not four.
pytestmark = pytest.mark.xdist_group("monitoring-synth")

REPO = Path(__file__).resolve().parents[1]
NO_BUNDLING = {"aws:cdk:bundling-stacks": []}
RUNBOOK = "docs/runbook.md"

#: Alarm name -> the runbook anchor its description must name.
ALARMS = {
    "FsaAlerts-heartbeat-missing": "heartbeat-missing",
    "FsaAlerts-worker-errors": "worker-errors",
    "FsaAlerts-worker-throttles": "worker-throttles",
    "FsaAlerts-worker-duration": "worker-duration",
    "FsaAlerts-dlq-not-empty-postings": "dlq-not-empty",
    "FsaAlerts-dlq-not-empty-failed-runs": "dlq-not-empty",
    "FsaAlerts-unresolved-share": "unresolved-share",
    "FsaAlerts-index-stale": "index-stale",
    "FsaAlerts-sns-delivery-failures": "sns-delivery-failures",
    "FsaAlerts-loader-failure": "loader-failure",
}
COMPOSITE = "FsaAlerts-service-unhealthy"
COMPOSITE_CHILDREN = {
    "FsaAlerts-heartbeat-missing",
    "FsaAlerts-worker-errors",
    "FsaAlerts-dlq-not-empty-postings",
    "FsaAlerts-dlq-not-empty-failed-runs",
    "FsaAlerts-index-stale",
    "FsaAlerts-loader-failure",
}
#: The dashboard's rows, top to bottom: the title of the text widget that starts each, and
#: metrics (namespace, name) each must show.
ROWS = {
    "Service health": {
        ("AWS/Lambda", "Invocations"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/Lambda", "Duration"),
        (NAMESPACE, "RunCompleted"),
        (NAMESPACE, "RunSeconds"),
    },
    "Pipeline funnel": {
        (NAMESPACE, m)
        for m in (
            "PostingsFetched",
            "PostingsResolved",
            "PostingsUnresolved",
            "PostingsSkipped",
            "PostingsDeferred",
            "AlertsPublished",
            "AlertsFailed",
            "AlertsParked",
        )
    },
    "Sources": {(NAMESPACE, "SourceErrors"), (NAMESPACE, "IndexErrors")},
    "Delivery": {
        ("AWS/SNS", "NumberOfMessagesPublished"),
        ("AWS/SNS", "NumberOfNotificationsFailed"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    },
    "Index": {
        (NAMESPACE, "IndexAgeHours"),
        ("AWS/Lambda", "Invocations"),
        ("AWS/Lambda", "Errors"),
        (NAMESPACE, "IndexRows"),
        (NAMESPACE, "IndexRowsDropped"),
        (NAMESPACE, "IndexBuildSeconds"),
        ("AWS/EFS", "ClientConnections"),
        ("AWS/EFS", "MeteredIOBytes"),
        ("AWS/EFS", "TotalIOBytes"),
        ("AWS/EFS", "StorageBytes"),
    },
}
#: Non-default thresholds for the custom synth, and what each must become in its alarm.
CUSTOM = {
    "schedule_minutes": 10,
    "worker_timeout_seconds": 120,
    "alarm_source_failing_periods": 4,
    "alarm_unresolved_share": 0.25,
    "alarm_index_max_age_days": 14,
    "alarm_duration_fraction": 0.5,
    "alarm_email": "ops@example.com",
}


# ---------------------------------------------------------------- synthesis


def synth(outdir: Path, **overrides: Any) -> dict[str, Template]:
    app, stacks = build_app(context={**cdk_json_context(), **NO_BUNDLING, **overrides}, outdir=str(outdir))
    app.synth()
    return {name: Template.from_stack(stack) for name, stack in stacks.items()}


@pytest.fixture(scope="module")
def feeds() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture(scope="module")
def sources(feeds: FeedServer) -> list[dict[str, Any]]:
    """Two sources, configured for the synth and read by the emitting worker run: ``city``
    (one posting it can place near the small index, one it cannot) and ``quakes`` (HTTP 500)."""
    items = [
        {"id": "p1", "text": "clinic", "latitude": 45.0, "longitude": -76.0},
        {"id": "p2", "text": "no place at all"},
    ]
    city = feeds.serve("/city.json", json.dumps({"items": items}).encode())
    quakes = feeds.serve("/quakes.json", b"{}", status=500)
    limits = {"retries": 0, "connect_timeout_s": 0.5, "read_timeout_s": 1}
    return [
        {"type": "json_feed", "name": "city", "url": city, "items_key": "items", **limits},
        {"type": "json_feed", "name": "quakes", "url": quakes, **limits},
    ]


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    """cdk.json as it is: no sources, no alarm e-mail, default thresholds."""
    return synth(tmp_path_factory.mktemp("cdk.out.default"))


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory, sources) -> tuple[Path, dict[str, Template]]:
    """Two sources, an alarm e-mail and every threshold moved off its default."""
    out = tmp_path_factory.mktemp("cdk.out.custom")
    return out, synth(out, sources=sources, **CUSTOM)


# ---------------------------------------------------------------- template helpers


def _token(part: Any) -> str:
    """A literal part of an Fn::Join as itself; an intrinsic as a ``${...}`` placeholder."""
    if isinstance(part, str):
        return part
    (kind, value), *_ = part.items()
    if kind == "Ref":
        return "${" + value + "}"
    if kind == "Fn::GetAtt":
        return "${" + ".".join(value) + "}"
    if kind == "Fn::ImportValue":
        return "${Import:" + value + "}"
    raise AssertionError(f"unexpected intrinsic in a joined string: {part}")


def joined(value: Any) -> str:
    if isinstance(value, str):
        return value
    separator, parts = value["Fn::Join"]
    return separator.join(_token(part) for part in parts)


def dashboard(template: Template) -> tuple[dict[str, Any], dict[str, Any]]:
    """The only dashboard's properties and its body, parsed."""
    dashboards = template.find_resources("AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1, dashboards
    props = next(iter(dashboards.values()))["Properties"]
    return props, json.loads(joined(props["DashboardBody"]))


def alarms(template: Template) -> dict[str, tuple[str, dict[str, Any]]]:
    """Alarm name -> (logical id, properties), metric alarms and composite alarms alike."""
    found = {}
    for type_ in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"):
        for logical_id, resource in template.find_resources(type_).items():
            props = resource["Properties"]
            found[props["AlarmName"]] = (logical_id, props)
    return found


def ops_topic_id(template: Template) -> str:
    topics = template.find_resources("AWS::SNS::Topic")
    assert len(topics) == 1, topics
    return next(iter(topics))


def rows(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> its widgets (the title's text widget first), top to bottom."""
    widgets = sorted(body["widgets"], key=lambda w: (w["y"], w["x"]))
    out: dict[str, list[dict[str, Any]]] = {}
    current = None
    for widget in widgets:
        markdown = widget["properties"].get("markdown", "") if widget["type"] == "text" else ""
        if markdown.startswith("## "):
            current = markdown.splitlines()[0].removeprefix("## ")
            out[current] = []
        assert current is not None, f"a widget above the first row title: {widget}"
        out[current].append(widget)
    return out


Ref = tuple[str, str, frozenset[tuple[str, str]]]  # namespace, metric name, dimensions
WILDCARD = "*"
_SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)'")
_TERM = re.compile(r'(\w+)="([^"]*)"')


def _search_refs(expression: str) -> set[Ref]:
    refs = set()
    for found in _SEARCH.finditer(expression):
        namespace, *keys = [part.strip() for part in found["schema"].split(",")]
        terms = dict(_TERM.findall(found["terms"]))
        name = terms.pop("MetricName")
        refs.add((namespace, name, frozenset((key, terms.get(key, WILDCARD)) for key in keys)))
    return refs


def dashboard_refs(body: dict[str, Any]) -> set[Ref]:
    refs: set[Ref] = set()
    for widget in body["widgets"]:
        for entry in widget["properties"].get("metrics", []):
            if isinstance(entry[0], dict):  # a math or search expression
                refs |= _search_refs(entry[0]["expression"])
                continue
            parts = [p for p in entry if not isinstance(p, dict)]
            namespace, name, *dims = parts
            assert "." not in (namespace, name), f"shorthand metric entries are not parsed here: {entry}"
            refs.add((namespace, name, frozenset(zip(dims[::2], dims[1::2], strict=True))))
    return refs


def alarm_refs(template: Template) -> set[Ref]:
    refs: set[Ref] = set()
    for resource in template.find_resources("AWS::CloudWatch::Alarm").values():
        props = resource["Properties"]
        if "MetricName" in props:
            metrics = [{"Namespace": props["Namespace"], "MetricName": props["MetricName"],
                        "Dimensions": props.get("Dimensions", [])}]  # fmt: skip
        else:
            metrics = [q["MetricStat"]["Metric"] for q in props["Metrics"] if "MetricStat" in q]
            for query in props["Metrics"]:
                refs |= _search_refs(query.get("Expression", ""))
        for m in metrics:
            dims = frozenset((d["Name"], _token(d["Value"])) for d in m.get("Dimensions", []))
            refs.add((m["Namespace"], m["MetricName"], dims))
    return refs


def ours(refs: set[Ref]) -> set[Ref]:
    return {r for r in refs if r[0] == NAMESPACE}


def names(refs: set[Ref]) -> set[str]:
    return {name for _ns, name, _dims in refs}


# ---------------------------------------------------------------- the dashboard


def test_dashboard_is_named_fsaalerts_and_has_the_rows_in_order(default):
    props, body = dashboard(default["monitoring"])
    assert props["DashboardName"] == "FsaAlerts"
    found = rows(body)
    assert list(found) == list(ROWS)
    for title, widgets in found.items():
        intro = widgets[0]
        assert intro["type"] == "text" and (intro["x"], intro["width"]) == (0, 24), title
        assert f"]({RUNBOOK}#" in intro["properties"]["markdown"], f"{title}: no runbook link"
        shown = {(ns, name) for ns, name, _dims in dashboard_refs({"widgets": widgets})}
        assert ROWS[title] <= shown, f"{title} misses {ROWS[title] - shown}"


def test_each_row_links_the_runbook_sections_of_its_alarms(default):
    found = rows(dashboard(default["monitoring"])[1])
    linked = {
        title: set(re.findall(rf"\]\({re.escape(RUNBOOK)}#([a-z-]+)\)", widgets[0]["properties"]["markdown"]))
        for title, widgets in found.items()
    }
    assert linked == {
        "Service health": {"heartbeat-missing", "worker-errors", "worker-throttles", "worker-duration",
                           "service-unhealthy"},
        "Pipeline funnel": {"unresolved-share"},
        "Sources": {"source-failing"},
        "Delivery": {"sns-delivery-failures", "dlq-not-empty"},
        "Index": {"index-stale", "loader-failure"},
    }  # fmt: skip


def test_graphs_show_the_alarm_thresholds(default):
    found = rows(dashboard(default["monitoring"])[1])
    graphs = {w["properties"].get("title"): w["properties"] for ws in found.values() for w in ws}
    heartbeat = graphs["Heartbeat: runs completed"]["annotations"]["horizontal"]
    assert [a["value"] for a in heartbeat] == [1]
    runtime = graphs["Run time against the 300 s timeout (s)"]["annotations"]["horizontal"]
    assert sorted(a["value"] for a in runtime) == [240, 300]
    assert [a["value"] for a in graphs["Index age (hours)"]["annotations"]["horizontal"]] == [720]


# ---------------------------------------------------------------- alarms


def test_every_alarm_notifies_the_ops_topic_and_names_its_runbook_section(default):
    monitoring = default["monitoring"]
    topic = {"Ref": ops_topic_id(monitoring)}
    found = alarms(monitoring)
    assert set(found) == {*ALARMS, COMPOSITE}  # no sources configured: no source-failing alarms
    for name, (_id, props) in found.items():
        anchor = ALARMS.get(name, "service-unhealthy")
        assert props["AlarmActions"] == [topic] and props["OKActions"] == [topic], name
        assert props["ActionsEnabled"] is True, name
        assert f"Runbook: {RUNBOOK}#{anchor}" in props["AlarmDescription"], name


def test_heartbeat_treats_missing_data_as_breaching_over_two_schedule_periods(default):
    _id, props = alarms(default["monitoring"])["FsaAlerts-heartbeat-missing"]
    assert props["TreatMissingData"] == "breaching"
    assert (props["MetricName"], props["Statistic"], props["Period"]) == ("RunCompleted", "Sum", 15 * 60)
    assert (props["ComparisonOperator"], props["Threshold"]) == ("LessThanThreshold", 1)
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == 2


def test_default_thresholds_reach_the_alarms(default):
    found = {name: props for name, (_id, props) in alarms(default["monitoring"]).items()}
    assert found["FsaAlerts-worker-duration"]["Threshold"] == 0.8 * 300 * 1000
    assert found["FsaAlerts-index-stale"]["Threshold"] == 30 * 24
    assert found["FsaAlerts-unresolved-share"]["Threshold"] == 0.5
    for name in ("FsaAlerts-worker-errors", "FsaAlerts-worker-throttles", "FsaAlerts-loader-failure",
                 "FsaAlerts-sns-delivery-failures", "FsaAlerts-dlq-not-empty-postings",
                 "FsaAlerts-dlq-not-empty-failed-runs"):  # fmt: skip
        # "> 0" on a count: one error, throttle, failed delivery or queued message is enough.
        assert (found[name]["ComparisonOperator"], found[name]["Threshold"]) == ("GreaterThanThreshold", 0), name
        assert found[name]["EvaluationPeriods"] == found[name]["DatapointsToAlarm"] == 1, name


def test_unresolved_share_is_metric_math_that_needs_fetched_postings(default):
    _id, props = alarms(default["monitoring"])["FsaAlerts-unresolved-share"]
    expression = next(q for q in props["Metrics"] if "Expression" in q)
    assert expression["Expression"] == "IF(fetched > 0, unresolved / fetched, 0)"
    stats = {q["Id"]: q["MetricStat"]["Metric"]["MetricName"] for q in props["Metrics"] if "MetricStat" in q}
    assert stats == {"fetched": "PostingsFetched", "unresolved": "PostingsUnresolved"}


def test_queue_alarms_watch_both_dead_letter_queues(default):
    monitoring = default["monitoring"]
    found = alarms(monitoring)
    watched = set()
    for name in ("FsaAlerts-dlq-not-empty-postings", "FsaAlerts-dlq-not-empty-failed-runs"):
        metric = found[name][1]["Metrics"][0]["MetricStat"]["Metric"]
        assert metric["MetricName"] == "ApproximateNumberOfMessagesVisible"
        watched.add(metric["Dimensions"][0]["Value"]["Fn::ImportValue"])
    assert len(watched) == 2
    assert any("PostingsDlq" in w for w in watched) and any("FailedRuns" in w for w in watched), watched


def test_composite_alarm_is_any_of_its_children(default):
    found = alarms(default["monitoring"])
    ids = {logical_id: name for name, (logical_id, _props) in found.items()}
    _id, props = found[COMPOSITE]
    rule = joined(props["AlarmRule"])
    children = {ids[logical_id] for logical_id in re.findall(r'ALARM\("\$\{(\w+)\.Arn\}"\)', rule)}
    assert children == COMPOSITE_CHILDREN
    assert " OR " in rule and " AND " not in rule
    assert rule.count("ALARM(") == len(COMPOSITE_CHILDREN)


def test_a_source_failing_alarm_per_configured_source(custom, sources):
    _out, templates = custom
    found = alarms(templates["monitoring"])
    per_source = {name: props for name, (_id, props) in found.items() if "source-failing" in name}
    assert set(per_source) == {f"FsaAlerts-source-failing-{s['name']}" for s in sources} and len(per_source) == 2
    for name, props in per_source.items():
        source = name.removeprefix("FsaAlerts-source-failing-")
        metric = props["Metrics"][0]["MetricStat"]
        assert metric["Metric"]["MetricName"] == "SourceErrors"
        assert {d["Name"]: d["Value"] for d in metric["Metric"]["Dimensions"]} == {
            "source": source,
            "service": "fsa-worker",
        }
        assert (metric["Stat"], metric["Period"]) == ("Sum", CUSTOM["schedule_minutes"] * 60)
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
        assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == CUSTOM["alarm_source_failing_periods"]
        assert f"Runbook: {RUNBOOK}#source-failing" in props["AlarmDescription"]
        assert props["AlarmActions"] == [{"Ref": ops_topic_id(templates["monitoring"])}]


def test_thresholds_from_context_reach_the_alarms(custom):
    _out, templates = custom
    found = {name: props for name, (_id, props) in alarms(templates["monitoring"]).items()}
    assert found["FsaAlerts-worker-duration"]["Threshold"] == 0.5 * 120 * 1000
    assert found["FsaAlerts-index-stale"]["Threshold"] == 14 * 24
    assert found["FsaAlerts-unresolved-share"]["Threshold"] == 0.25
    heartbeat = found["FsaAlerts-heartbeat-missing"]
    assert heartbeat["Period"] == 10 * 60 and heartbeat["EvaluationPeriods"] == 2


def test_alarm_email_subscribes_to_the_ops_topic(custom, default):
    _out, templates = custom
    monitoring = templates["monitoring"]
    subscriptions = monitoring.find_resources("AWS::SNS::Subscription")
    assert [s["Properties"] for s in subscriptions.values()] == [
        {"Protocol": "email", "Endpoint": "ops@example.com", "TopicArn": {"Ref": ops_topic_id(monitoring)}}
    ]
    default["monitoring"].resource_count_is("AWS::SNS::Subscription", 0)


def test_ops_topic_is_encrypted_with_a_key_cloudwatch_alarms_may_use(default):
    monitoring = default["monitoring"]
    topic_id = ops_topic_id(monitoring)
    topic = monitoring.to_json()["Resources"][topic_id]["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = monitoring.to_json()["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [s for s in key["KeyPolicy"]["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert len(cloudwatch) == 1 and sorted(cloudwatch[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    (policy,) = monitoring.find_resources("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert deny and all(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in deny)
    publish = [s for s in statements if s["Effect"] == "Allow"]
    assert len(publish) == 1 and publish[0]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish[0]["Action"] == "sns:Publish" and publish[0]["Resource"] == {"Ref": topic_id}
    assert joined(publish[0]["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":alarm:*")


def test_every_runbook_anchor_is_a_section_of_the_runbook(custom):
    _out, templates = custom
    named = {
        m for _name, (_id, props) in alarms(templates["monitoring"]).items()
        for m in re.findall(rf"Runbook: {re.escape(RUNBOOK)}#([a-z-]+)", props["AlarmDescription"])
    }  # fmt: skip
    assert named == {*ALARMS.values(), "source-failing", "service-unhealthy"}
    runbook = REPO / RUNBOOK
    if not runbook.exists():
        pytest.skip(f"{RUNBOOK} is not written yet")
    # GitHub's anchor of a heading: lowercased, punctuation dropped, spaces to hyphens.
    headings = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    assert named <= headings, named - headings


def test_custom_settings_are_cdk_nag_clean(custom):
    out, _templates = custom
    report = json.loads((out / "validation-report.json").read_text())
    assert report["pluginReports"]
    for plugin in report["pluginReports"]:
        assert plugin["conclusion"] == "success", plugin.get("violations")


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("alarm_unresolved_share", 1.5, "'alarm_unresolved_share' = 1.5 is not allowed: Input should be less than 1"),
        ("alarm_unresolved_share", 0, "'alarm_unresolved_share' = 0 is not allowed: Input should be greater than 0"),
        ("alarm_source_failing_periods", 0, "'alarm_source_failing_periods' = 0 is not allowed: Input should be"),
        ("alarm_index_max_age_days", "soon", "'alarm_index_max_age_days' = 'soon' is not allowed: Input should be"),
        ("alarm_duration_fraction", 1.2, "'alarm_duration_fraction' = 1.2 is not allowed: Input should be less"),
        (
            "alarm_source_failing_periods",
            100,
            "'alarm_source_failing_periods' = 100 is not allowed: 100 periods of schedule_minutes=15 are 25 h",
        ),
    ],
)
def test_bad_threshold_is_one_line(key, value, expected):
    with pytest.raises(ConfigError) as raised:
        build_app(context={**NO_BUNDLING, key: value})
    message = str(raised.value)
    assert "\n" not in message and expected in message, message


def test_bad_threshold_stops_synth_with_one_line(tmp_path):
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({**NO_BUNDLING, "alarm_duration_fraction": "most"}),
        "CDK_OUTDIR": str(tmp_path),
    }
    done = subprocess.run([sys.executable, "app.py"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: context key 'alarm_duration_fraction' = 'most' is not allowed"), lines[0]


def test_cli_strings_still_validate():
    _app, stacks = build_app(context={**NO_BUNDLING, "alarm_unresolved_share": "0.3"})
    found = {p["AlarmName"]: p for p in _alarm_props(Template.from_stack(stacks["monitoring"]))}
    assert found["FsaAlerts-unresolved-share"]["Threshold"] == 0.3


def _alarm_props(template: Template) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template.find_resources("AWS::CloudWatch::Alarm").values()]


# ---------------------------------------------------------------- metric names, both directions


def _emf(text: str) -> set[Ref]:
    """(namespace, name, dimensions) of every metric in the EMF lines of ``text``."""
    emitted: set[Ref] = set()
    for line in text.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dims = frozenset((key, blob[key]) for key in dimension_set)
                for metric in directive["Metrics"]:
                    emitted.add((directive["Namespace"], metric["Name"], dims))
    return emitted


def _service(template: Template, handler: str) -> str:
    functions = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}})
    assert len(functions) == 1
    return next(iter(functions.values()))["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]


class _Service:
    """The Powertools service name a handler module's ``metrics`` would have read from its
    environment at import in Lambda; restored afterwards (other tests share the module)."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name = module, name

    def __enter__(self) -> None:
        self.saved = self.module.metrics.service
        self.module.metrics.service = self.name

    def __exit__(self, *exc: object) -> None:
        self.module.metrics.service = self.saved


def run_worker(index_root: Path, sources: list[dict[str, Any]], service: str, capsys) -> tuple[set[Ref], bool]:
    """Invoke the real worker handler once against moto; its EMF metrics, and whether it raised."""
    from lambda_src.worker import handler as worker

    resources = create_worker_resources({"all": None}, prefix=f"m{uuid.uuid4().hex[:8]}")
    env = {
        **resources.env(),
        "INDEX_ROOT": str(index_root),
        "SOURCES": json.dumps(sources),
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "MARGIN_SECONDS": "30",
    }
    capsys.readouterr()
    raised = False
    worker._index_cache.cache_clear()
    with patched_env(env), _Service(worker, service):
        try:
            worker.handler({"id": "monitoring"}, LocalContext(function_name="fsa-worker", timeout_s=600))
        except Exception:
            raised = True
    worker._index_cache.cache_clear()
    return _emf(capsys.readouterr().out), raised


def run_loader(small_sources, root: Path, service: str, capsys) -> set[Ref]:
    from lambda_src.loader import handler as loader

    env = {
        "INDEX_ROOT": str(root),
        "FSA_DATASET_PATH": str(small_sources.fsa),
        "POSTAL_DATASET_PATH": str(small_sources.postal),
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    capsys.readouterr()
    with patched_env(env), _Service(loader, service):
        loader.handler({}, LocalContext(function_name="fsa-loader"))
    return _emf(capsys.readouterr().out)


def test_dashboard_and_alarm_metrics_are_exactly_what_the_handlers_emit(
    custom, sources, aws, small_index, small_sources, tmp_path, capsys
):
    _out, templates = custom
    monitoring = templates["monitoring"]
    worker_service = _service(templates["worker"], "lambda_src.worker.handler.handler")
    loader_service = _service(templates["loader"], "lambda_src.loader.handler.handler")
    assert (worker_service, loader_service) == ("fsa-worker", "fsa-loader")

    # What the code really emits: a worker run (one source placing postings, one failing),
    # a worker run on a missing index (IndexErrors) and a loader build.
    normal, raised = run_worker(small_index, sources, worker_service, capsys)
    assert not raised
    (tmp_path / "no-index").mkdir()
    broken, raised = run_worker(tmp_path / "no-index", sources, worker_service, capsys)
    assert raised
    built = run_loader(small_sources, tmp_path / "loader-index", loader_service, capsys)
    emitted = normal | broken | built
    assert {ns for ns, _name, _dims in emitted} == {NAMESPACE}

    declared = {m.value for m in WorkerMetric} | {m.value for m in LoaderMetric}
    assert len(declared) == 16 and len(set(WorkerMetric)) == 13 and len(set(LoaderMetric)) == 3
    assert names(emitted) == declared
    assert names(broken) == {"IndexErrors"}  # the broken run stops before anything else

    on_dashboard = ours(dashboard_refs(dashboard(monitoring)[1]))
    in_alarms = ours(alarm_refs(monitoring))
    assert names(on_dashboard) == declared  # both directions: nothing emitted is left off
    assert names(in_alarms) <= names(emitted)
    assert names(in_alarms) == {"RunCompleted", "SourceErrors", "PostingsFetched", "PostingsUnresolved",
                                "IndexAgeHours"}  # fmt: skip

    # And with the dimensions the handlers really put on them (Powertools adds "service"
    # to every metric, SourceErrors also has "source"), or CloudWatch sees another metric.
    for namespace, name, dims in on_dashboard | in_alarms:
        candidates = [d for ns, n, d in emitted if (ns, n) == (namespace, name)]
        assert any(_matches(dict(dims), dict(d)) for d in candidates), (name, dict(dims), [dict(d) for d in candidates])
    per_source = {dict(d)["source"] for _ns, n, d in in_alarms if n == "SourceErrors"}
    assert per_source == {s["name"] for s in sources}


def _matches(referenced: dict[str, str], emitted: dict[str, str]) -> bool:
    return referenced.keys() == emitted.keys() and all(
        value in (WILDCARD, emitted[key]) for key, value in referenced.items()
    )
