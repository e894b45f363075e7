"""Monitoring: the ``FsaAlerts`` dashboard, the operations topic and the alarms that notify it.

Two libraries, each where it fits:

- cdk-monitoring-constructs (``MonitoringFacade``) owns the dashboard and draws the segments of
  the AWS services it knows: the worker and loader Lambdas, the alerts topic and the two
  queues, with their alarms (errors, throttles, duration, queue depth, failed deliveries).
  Its alarm factory also creates the alarms on the service's own metrics and the composite
  alarm, so every alarm gets the same actions and the same ``Runbook: ...`` description.
- plain ``aws_cloudwatch`` for what the library has no segment for: the row headers, the
  service's metrics (namespace FsaAlerts, lambda_src/shared/metric_names.py) and EFS.

Every alarm notifies the operations topic on ALARM and on OK, and names its section of
docs/runbook.md in its description.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from cdk_monitoring_constructs import (
    AlarmFactory,
    AlarmFactoryDefaults,
    AlarmWithAnnotation,
    CompositeAlarmOperator,
    DefaultDashboardFactory,
    ErrorCountThreshold,
    LambdaFunctionMonitoring,
    LatencyThreshold,
    MaxMessageCountThreshold,
    MetricFactoryDefaults,
    MonitoringFacade,
    NotificationsFailedThreshold,
    SingleWidgetDashboardSegment,
    SnsAlarmActionStrategy,
    SnsTopicMonitoring,
    SqsQueueMonitoring,
    SqsQueueMonitoringProps,
)
from constructs import Construct

from lambda_src.shared.metric_names import NAMESPACE, SOURCE_DIMENSION, LoaderMetric, WorkerMetric
from stacks.data_loader import DataLoaderStack
from stacks.network_storage import NetworkStorageStack
from stacks.settings import Settings
from stacks.worker import WorkerStack

DASHBOARD_NAME = "FsaAlerts"
ALARM_PREFIX = "FsaAlerts"
RUNBOOK = "docs/runbook.md"
#: The dimension Powertools puts on every metric: POWERTOOLS_SERVICE_NAME, which PythonFunction
#: sets to fsa-<name> (tests/test_monitoring.py checks both against the templates).
SERVICE_DIMENSION = "service"
#: How far back the dashboard looks by default.
DASHBOARD_RANGE = Duration.hours(24)


def service_name(function_name: str) -> str:
    return f"fsa-{function_name}"


def runbook(anchor: str) -> str:
    return f"{RUNBOOK}#{anchor}"


def alarm_name(anchor: str, *qualifiers: str) -> str:
    return "-".join([ALARM_PREFIX, anchor, *qualifiers])


@dataclass(frozen=True)
class Alarm:
    """An alarm and the runbook section its description names."""

    name: str
    anchor: str
    created: AlarmWithAnnotation

    @property
    def alarm(self) -> cw.AlarmBase:
        return self.created.alarm


class MonitoringStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        network: NetworkStorageStack,
        loader: DataLoaderStack,
        worker: WorkerStack,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        #: Each run of the worker falls into one period: the schedule's.
        self.period = Duration.minutes(settings.schedule_minutes)
        #: unresolved-share looks at an hour, or one schedule period when that is longer, so
        #: that one small run does not decide it.
        self.share_period = Duration.minutes(max(settings.schedule_minutes, 60))
        self.worker_service = service_name("worker")
        self.loader_service = service_name("loader")
        self.alarms: list[Alarm] = []
        self._anchors: dict[str, str] = {}  # alarm name -> runbook anchor, for facade segments

        # ------------------------------------------------------------ operations topic
        self.ops_key = kms.Key(
            self,
            "OperationsKey",
            description="FSA Alerts: encrypts the operations topic (alarm notifications)",
            enable_key_rotation=True,
            removal_policy=settings.removal,
        )
        # CloudWatch publishes alarm notifications into the encrypted topic, so it must be able
        # to make data keys with this key (the AWS managed aws/sns key cannot allow that).
        self.ops_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToUseTheKey",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        self.ops_topic = sns.Topic(
            self,
            "Operations",
            display_name="FSA Alerts operations",
            master_key=self.ops_key,
            enforce_ssl=True,
        )
        # The topic policy enforce_ssl creates replaces SNS's default one: admit this account's
        # alarms explicitly.
        self.ops_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.ops_topic.topic_arn],
                conditions={"ArnLike": {"aws:SourceArn": self.format_arn(service="cloudwatch", resource="alarm:*")}},
            )
        )
        if settings.alarm_email:
            self.ops_topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))

        # ------------------------------------------------------------ facade and alarm factory
        self.facade = MonitoringFacade(
            self,
            "Monitoring",
            alarm_factory_defaults=AlarmFactoryDefaults(
                alarm_name_prefix=ALARM_PREFIX,
                actions_enabled=True,
                action=SnsAlarmActionStrategy(on_alarm_topic=self.ops_topic, on_ok_topic=self.ops_topic),
                datapoints_to_alarm=1,
                evaluation_periods=1,
            ),
            metric_factory_defaults=MetricFactoryDefaults(period=self.period),
            dashboard_factory=DefaultDashboardFactory(
                self,
                "Dashboards",
                dashboard_name_prefix=DASHBOARD_NAME,
                create_dashboard=True,
                create_summary_dashboard=False,
                create_alarm_dashboard=False,
                detail_dashboard_range=DASHBOARD_RANGE,
            ),
        )
        self.alarm_factory: AlarmFactory = self.facade.create_alarm_factory(ALARM_PREFIX)

        # ------------------------------------------------------------ alarms, then the rows
        worker_fn = worker.worker.function
        timeout_s = settings.worker_timeout_seconds
        self.duration_limit_ms = int(timeout_s * 1000 * settings.alarm_duration_fraction)

        worker_segment = LambdaFunctionMonitoring(
            self.facade,
            lambda_function=worker_fn,
            human_readable_name="Worker",
            alarm_friendly_name="worker",
            is_iterator=False,
            add_fault_count_alarm={
                "Critical": ErrorCountThreshold(
                    max_error_count=0,
                    **self._names("worker-errors", "The worker Lambda failed (Errors >= 1 in a period)"),
                )
            },
            add_throttles_count_alarm={
                "Warning": ErrorCountThreshold(
                    max_error_count=0,
                    **self._names("worker-throttles", "The worker Lambda was throttled (Throttles >= 1 in a period)"),
                )
            },
            add_max_latency_alarm={
                "Warning": LatencyThreshold(
                    max_latency=Duration.millis(self.duration_limit_ms),
                    **self._names(
                        "worker-duration",
                        f"A worker run took over {settings.alarm_duration_fraction:.0%} of its "
                        f"{timeout_s} s timeout (Duration maximum > {self.duration_limit_ms} ms)",
                    ),
                )
            },
        )
        self._collect(worker_segment)
        loader_segment = LambdaFunctionMonitoring(
            self.facade,
            lambda_function=loader.loader.function,
            human_readable_name="Loader",
            alarm_friendly_name="loader",
            is_iterator=False,
            add_fault_count_alarm={
                "Critical": ErrorCountThreshold(
                    max_error_count=0,
                    **self._names("loader-failure", "The loader Lambda failed to build the index (Errors >= 1)"),
                )
            },
        )
        self._collect(loader_segment)
        topic_segment = SnsTopicMonitoring(
            self.facade,
            topic=worker.topic,
            human_readable_name="Alerts topic",
            alarm_friendly_name="alerts-topic",
            add_message_notifications_failed_alarm={
                "Critical": NotificationsFailedThreshold(
                    max_notifications_failed_count=0,
                    **self._names(
                        "sns-delivery-failures",
                        "SNS failed to deliver alerts to a subscriber (NumberOfNotificationsFailed >= 1)",
                    ),
                )
            },
        )
        self._collect(topic_segment)
        queue_segments = [
            self._queue(worker.postings_dlq, "Postings DLQ", "postings", "alerts the worker could not publish"),
            self._queue(
                worker.failed_runs,
                "Failed runs",
                "failed-runs",
                "worker invocations that failed after Lambda's retry or expired waiting",
            ),
        ]

        self.heartbeat = self._alarm(
            "heartbeat-missing",
            self._worker_metric(WorkerMetric.RUN_COMPLETED, "Sum"),
            description=(
                f"The worker completed no run in two schedule periods (RunCompleted sum < 1 over "
                f"2 x {settings.schedule_minutes} min; no data counts as missing runs)"
            ),
            threshold=1,
            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            missing=cw.TreatMissingData.BREACHING,
            periods=2,
        )
        self.source_alarms = [
            self._alarm(
                "source-failing",
                self._source_errors(name),
                qualifier=name,
                description=(
                    f"Source {name!r} failed in {settings.alarm_source_failing_periods} schedule periods in a row "
                    f"(SourceErrors >= 1 in each)"
                ),
                threshold=1,
                comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                periods=settings.alarm_source_failing_periods,
            )
            for name in (source.name for source in settings.sources.root)
        ]
        self.unresolved_share = self._unresolved_share()
        share_alarm = self._alarm(
            "unresolved-share",
            self.unresolved_share,
            description=(
                f"More than {settings.alarm_unresolved_share:.0%} of the postings fetched in "
                f"{_minutes(self.share_period)} could not be placed (PostingsUnresolved / PostingsFetched, "
                f"when PostingsFetched > 0)"
            ),
            threshold=settings.alarm_unresolved_share,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        stale_hours = settings.alarm_index_max_age_days * 24
        stale_alarm = self._alarm(
            "index-stale",
            self._worker_metric(WorkerMetric.INDEX_AGE_HOURS, "Maximum"),
            description=(
                f"The FSA index the worker reads is older than {settings.alarm_index_max_age_days} days "
                f"(IndexAgeHours > {stale_hours})"
            ),
            threshold=stale_hours,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )

        children = ["heartbeat-missing", "worker-errors", "dlq-not-empty", "index-stale", "loader-failure"]
        composite = self.alarm_factory.add_composite_alarm(
            [a.created for a in self.alarms if a.anchor in children],
            disambiguator="Critical",
            alarm_name_override=alarm_name("service-unhealthy"),
            alarm_description="FSA Alerts is not delivering: any of " + ", ".join(children) + " is in ALARM",
            runbook_link=runbook("service-unhealthy"),
            composite_operator=CompositeAlarmOperator.OR,
        )
        self.composite = composite

        # ------------------------------------------------------------ the dashboard, row by row
        self._row(
            "Service health",
            "Is the worker running on schedule and finishing in time? It runs every "
            f"{settings.schedule_minutes} min and emits RunCompleted = 1 at the end of each run (the heartbeat).",
            ["heartbeat-missing", "worker-errors", "worker-throttles", "worker-duration", "service-unhealthy"],
        )
        self._add(
            cw.Row(
                self._graph(
                    "Heartbeat: runs completed",
                    [
                        self._worker_metric(WorkerMetric.RUN_COMPLETED, "Sum", "RunCompleted"),
                        worker_fn.metric_invocations(period=self.period, statistic="Sum", label="Invocations"),
                    ],
                    annotations=[self.heartbeat.created.annotation],
                ),
                self._graph(
                    f"Run time against the {timeout_s} s timeout (s)",
                    [
                        self._worker_metric(WorkerMetric.RUN_SECONDS, "Maximum", "RunSeconds (max)"),
                        cw.MathExpression(
                            expression="duration / 1000",
                            using_metrics={
                                "duration": worker_fn.metric_duration(period=self.period, statistic="Maximum")
                            },
                            label="Lambda Duration (max)",
                            period=self.period,
                        ),
                    ],
                    annotations=[
                        cw.HorizontalAnnotation(value=timeout_s, label="timeout", color=cw.Color.RED),
                        cw.HorizontalAnnotation(
                            value=self.duration_limit_ms / 1000, label="worker-duration alarm", color=cw.Color.ORANGE
                        ),
                    ],
                ),
                cw.AlarmStatusWidget(
                    title="Alarms",
                    alarms=[composite, *(a.alarm for a in self.alarms)],
                    width=8,
                    height=6,
                ),
            )
        )
        self.facade.add_segment(worker_segment)

        self._row(
            "Pipeline funnel",
            "What each run did with what it fetched: every fetched posting is resolved and published, "
            "left unresolved, already sent (skipped) or deferred to the next run; alerts SNS refused are "
            "retried (failed) and then parked in the postings DLQ.",
            ["unresolved-share"],
        )
        self._add(
            cw.Row(
                self._graph(
                    "Postings",
                    [
                        self._worker_metric(m, "Sum", m.value)
                        for m in (
                            WorkerMetric.POSTINGS_FETCHED,
                            WorkerMetric.POSTINGS_RESOLVED,
                            WorkerMetric.POSTINGS_UNRESOLVED,
                            WorkerMetric.POSTINGS_SKIPPED,
                            WorkerMetric.POSTINGS_DEFERRED,
                        )
                    ],
                ),
                self._graph(
                    "Alerts",
                    [
                        self._worker_metric(m, "Sum", m.value)
                        for m in (WorkerMetric.ALERTS_PUBLISHED, WorkerMetric.ALERTS_FAILED, WorkerMetric.ALERTS_PARKED)
                    ],
                ),
                self._graph(
                    f"Unresolved share ({_minutes(self.share_period)})",
                    [self.unresolved_share],
                    annotations=[share_alarm.created.annotation],
                ),
            )
        )

        self._row(
            "Sources",
            "Each configured source reports SourceErrors = 1 for a run in which it failed (HTTP error, bad "
            "body, unreadable object) and 0 otherwise; a failing source does not stop the others. IndexErrors "
            "counts runs that found no usable index and stopped before fetching.",
            ["source-failing"],
        )
        sources_width = 12 if self.source_alarms else 18
        source_widgets: list[cw.IWidget] = [
            self._graph(
                "SourceErrors by source",
                [
                    cw.MathExpression(
                        expression=(
                            f"SEARCH('{{{NAMESPACE},{SERVICE_DIMENSION},{SOURCE_DIMENSION}}} "
                            f'MetricName="{WorkerMetric.SOURCE_ERRORS.value}" '
                            f'{SERVICE_DIMENSION}="{self.worker_service}"\', '
                            f"'Sum', {int(self.period.to_seconds())})"
                        ),
                        label="",
                        period=self.period,
                    )
                ],
                width=sources_width,
            ),
            self._graph("IndexErrors", [self._worker_metric(WorkerMetric.INDEX_ERRORS, "Sum", "IndexErrors")], width=6),
        ]
        if self.source_alarms:
            source_widgets.append(
                cw.AlarmStatusWidget(
                    title="Source alarms", alarms=[a.alarm for a in self.source_alarms], width=6, height=6
                )
            )
        self._add(cw.Row(*source_widgets))

        self._row(
            "Delivery",
            "Alerts leave through the alerts topic. NumberOfNotificationsFailed counts deliveries SNS gave up "
            "on; the postings DLQ holds alerts the worker could not publish, the failed-runs queue holds runs "
            "that failed after Lambda's retry. Both queues should stay empty.",
            ["sns-delivery-failures", "dlq-not-empty"],
        )
        self.facade.add_segment(topic_segment)
        for segment in queue_segments:
            self.facade.add_segment(segment)

        self._row(
            "Index",
            "The FSA index on EFS: the loader builds it on deploy when the datasets or its code change "
            "(IndexRows, IndexRowsDropped, IndexBuildSeconds); the worker reports its age each run.",
            ["index-stale", "loader-failure"],
        )
        fs_id = network.file_system.file_system_id
        self._add(
            cw.Row(
                self._graph(
                    "Index age (hours)",
                    [self._worker_metric(WorkerMetric.INDEX_AGE_HOURS, "Maximum", "IndexAgeHours")],
                    annotations=[stale_alarm.created.annotation],
                ),
                self._graph(
                    "Index rows: kept (left), dropped (right)",
                    [self._loader_metric(LoaderMetric.INDEX_ROWS, "Maximum")],
                    right=[self._loader_metric(LoaderMetric.INDEX_ROWS_DROPPED, "Maximum")],
                ),
                self._graph("Index build (s)", [self._loader_metric(LoaderMetric.INDEX_BUILD_SECONDS, "Maximum")]),
                self._graph("EFS client connections", [self._efs(fs_id, "ClientConnections", "Sum")]),
                self._graph(
                    "EFS throughput (bytes)",
                    [self._efs(fs_id, "TotalIOBytes", "Sum"), self._efs(fs_id, "MeteredIOBytes", "Sum")],
                ),
                self._graph("EFS storage (bytes)", [self._efs(fs_id, "StorageBytes", "Average", StorageClass="Total")]),
            )
        )
        self.facade.add_segment(loader_segment)

        # ------------------------------------------------------------ for operators
        CfnOutput(self, "OperationsTopicArn", value=self.ops_topic.topic_arn, description="Alarm notifications")
        CfnOutput(
            self,
            "DashboardUrl",
            value=f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
            f"#dashboards/dashboard/{DASHBOARD_NAME}",
            description="The FsaAlerts CloudWatch dashboard",
        )

    # ---------------------------------------------------------------- alarms

    def _names(self, anchor: str, description: str, *qualifiers: str) -> dict[str, str]:
        """Name, description and runbook link of an alarm a facade segment creates."""
        name = alarm_name(anchor, *qualifiers)
        self._anchors[name] = anchor
        return {"alarm_name_override": name, "alarm_description_override": description, "runbook_link": runbook(anchor)}

    def _collect(self, segment: LambdaFunctionMonitoring | SnsTopicMonitoring | SqsQueueMonitoring) -> None:
        """Record the alarms a facade segment created."""
        for created in segment.created_alarms():
            self.alarms.append(Alarm(created.alarm_name, self._anchors[created.alarm_name], created))

    def _queue(self, queue: sqs.IQueue, title: str, qualifier: str, what: str) -> SqsQueueMonitoring:
        segment = SqsQueueMonitoring(
            self.facade,
            SqsQueueMonitoringProps(
                queue=queue,
                human_readable_name=title,
                alarm_friendly_name=qualifier,
                add_queue_max_size_alarm={
                    "Critical": MaxMessageCountThreshold(
                        max_message_count=0,
                        **self._names(
                            "dlq-not-empty", f"{title} holds {what} (ApproximateNumberOfMessagesVisible > 0)", qualifier
                        ),
                    )
                },
            ),
        )
        self._collect(segment)
        return segment

    def _alarm(
        self,
        anchor: str,
        metric: cw.IMetric,
        *,
        description: str,
        threshold: float,
        comparison: cw.ComparisonOperator,
        qualifier: str | None = None,
        missing: cw.TreatMissingData = cw.TreatMissingData.NOT_BREACHING,
        periods: int = 1,
    ) -> Alarm:
        """An alarm on one of the service's own metrics through the facade's alarm factory."""
        name = alarm_name(anchor, *([qualifier] if qualifier else []))
        created = self.alarm_factory.add_alarm(
            metric,
            alarm_name_suffix=anchor,
            alarm_name_override=name,
            alarm_description=description,
            runbook_link=runbook(anchor),
            threshold=threshold,
            comparison_operator=comparison,
            treat_missing_data=missing,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
        )
        alarm = Alarm(name, anchor, created)
        self.alarms.append(alarm)
        return alarm

    # ---------------------------------------------------------------- metrics

    def _worker_metric(self, name: WorkerMetric, statistic: str, label: str | None = None) -> cw.Metric:
        return self._service_metric(name, self.worker_service, statistic, label)

    def _loader_metric(self, name: LoaderMetric, statistic: str) -> cw.Metric:
        return self._service_metric(name, self.loader_service, statistic, name.value)

    def _service_metric(self, name: StrEnum, service: str, statistic: str, label: str | None) -> cw.Metric:
        """One of our metrics as Powertools emits it: dimension ``service`` = the function's."""
        return cw.Metric(
            namespace=NAMESPACE,
            metric_name=name.value,
            dimensions_map={SERVICE_DIMENSION: service},
            statistic=statistic,
            period=self.period,
            label=label,
        )

    def _source_errors(self, source: str) -> cw.Metric:
        return cw.Metric(
            namespace=NAMESPACE,
            metric_name=WorkerMetric.SOURCE_ERRORS.value,
            dimensions_map={SOURCE_DIMENSION: source, SERVICE_DIMENSION: self.worker_service},
            statistic="Sum",
            period=self.period,
            label=f"SourceErrors {source}",
        )

    def _unresolved_share(self) -> cw.MathExpression:
        def count(name: WorkerMetric) -> cw.Metric:
            return self._worker_metric(name, "Sum").with_(period=self.share_period)

        return cw.MathExpression(
            expression="IF(fetched > 0, unresolved / fetched, 0)",
            using_metrics={
                "fetched": count(WorkerMetric.POSTINGS_FETCHED),
                "unresolved": count(WorkerMetric.POSTINGS_UNRESOLVED),
            },
            label="unresolved / fetched",
            period=self.share_period,
        )

    def _efs(self, file_system_id: str, name: str, statistic: str, **dimensions: str) -> cw.Metric:
        return cw.Metric(
            namespace="AWS/EFS",
            metric_name=name,
            dimensions_map={"FileSystemId": file_system_id, **dimensions},
            statistic=statistic,
            period=self.period,
            label=name,
        )

    # ---------------------------------------------------------------- dashboard

    def _add(self, widget: cw.IWidget) -> None:
        self.facade.add_segment(SingleWidgetDashboardSegment(widget))

    def _row(self, title: str, meaning: str, anchors: list[str]) -> None:
        """The text widget that starts a row: what it shows and where the runbook says what to do."""
        links = " · ".join(f"[{anchor}]({runbook(anchor)})" for anchor in anchors)
        self._add(cw.TextWidget(markdown=f"## {title}\n{meaning}\n\nRunbook ({RUNBOOK}): {links}", width=24, height=3))

    def _graph(
        self,
        title: str,
        left: list[cw.IMetric],
        *,
        right: list[cw.IMetric] | None = None,
        annotations: list[cw.HorizontalAnnotation] | None = None,
        width: int = 8,
    ) -> cw.GraphWidget:
        return cw.GraphWidget(
            title=title,
            left=left,
            right=right or [],
            left_annotations=annotations or [],
            left_y_axis=cw.YAxisProps(min=0, show_units=False),
            right_y_axis=cw.YAxisProps(min=0, show_units=False) if right else None,
            width=width,
            height=6,
        )


def _minutes(period: Duration) -> str:
    minutes = int(period.to_minutes())
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
