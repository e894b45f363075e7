"""Worker: the scheduled Lambda that turns new postings into alerts, its alerts topic, its
state table and its dead-letter queues."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambda_src.shared.metric_names import NAMESPACE
from lambda_src.subscribe import TOPIC_OUTPUT
from lambda_src.worker.source_config import S3JsonlConfig
from stacks.constructs.efs_mount import MOUNT_PATH, efs_mount
from stacks.constructs.nag import acknowledge
from stacks.constructs.python_function import PythonFunction
from stacks.network_storage import NetworkStorageStack
from stacks.settings import Settings

#: The longest SQS keeps a message: failed runs and parked postings wait 14 days for an operator.
RETENTION = Duration.days(14)
#: Seconds the worker keeps back from its timeout to finish the batch in hand and save cursors.
MARGIN_SECONDS = 30
#: Lambda keeps an asynchronous event (e.g. one throttled behind a run still going, as
#: reserved concurrency is 1) for 60 s to 6 h; the worker lets it wait two schedule periods.
MAX_EVENT_AGE_BOUNDS = (Duration.minutes(1), Duration.hours(6))


def max_event_age(schedule_minutes: int) -> Duration:
    low, high = (bound.to_seconds() for bound in MAX_EVENT_AGE_BOUNDS)
    return Duration.seconds(int(min(max(2 * schedule_minutes * 60, low), high)))


class WorkerStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, network: NetworkStorageStack, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        # ------------------------------------------------------------ alerts topic
        self.topic_key = kms.Key(
            self,
            "AlertsKey",
            description="FSA Alerts: encrypts the alerts topic (and may encrypt subscriber queues)",
            enable_key_rotation=True,
            removal_policy=settings.removal,
        )
        # Publishing: SNS encrypts each message with this key using the publisher's own rights
        # (the worker's IAM grant below; the account-root statement CDK adds delegates to IAM).
        # Delivering: SNS decrypts and hands Lambda, HTTPS and e-mail subscribers plaintext. When
        # it delivers into an SQS queue encrypted with a customer managed key, SNS itself calls
        # kms:GenerateDataKey* / kms:Decrypt on *that queue's* key as sns.amazonaws.com, so
        # subscriber queues encrypted with this key work because of the statement below (a
        # queue with its own key needs the same statement in that key's policy; aws/sqs can't).
        self.topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowSnsToUseTheKey",
                principals=[iam.ServicePrincipal("sns.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        self.topic = sns.Topic(
            self, "Alerts", display_name="FSA Alerts", master_key=self.topic_key, enforce_ssl=True
        )  # fmt: skip

        # ------------------------------------------------------------ state table
        # Powertools idempotency records (partition key "id", TTL "expiration") and the
        # source cursors (id "cursor#<source>", no expiration) share the table.
        self.table = dynamodb.Table(
            self,
            "State",
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute="expiration",
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=settings.removal,
        )

        # ------------------------------------------------------------ dead-letter queues
        self.postings_dlq = _dead_letter_queue(
            self, "PostingsDlq", settings, "the worker parks postings it could not publish here"
        )
        self.failed_runs = _dead_letter_queue(
            self, "FailedRuns", settings, "the on-failure destination of the worker's asynchronous invocations"
        )

        # ------------------------------------------------------------ the worker
        self.worker = PythonFunction(
            self,
            "Worker",
            name="worker",
            handler="lambda_src.worker.handler.handler",
            description="Turns new postings from the configured feeds into FSA alerts on the alerts topic",
            architecture=settings.lambda_architecture,
            # Default 512 MB: 2x the measured peak (make bench, docs/benchmarks.md): the real
            # handler over 1,000 postings with both index levels loaded peaks at 247 MB RSS.
            # CPU grows with memory, so more buys a faster cold start, not correctness.
            memory_mb=settings.worker_memory_mb,
            # Default 300 s. Measured: 1,000 postings end to end in 26 s (38/s, 83 % of it the
            # two idempotency writes per posting) and a 3.8 s cold start; a run stops taking
            # new postings MARGIN_SECONDS before the end, so the rest wait for the next run.
            timeout=Duration.seconds(settings.worker_timeout_seconds),
            log_retention=settings.log_retention,
            size_budget_mb=settings.lambda_size_budget_mb,
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_groups=[network.worker_security_group],
            filesystem=efs_mount(network.file_system, network.access_point, read_only=True),
            environment={
                "TOPIC_ARN": self.topic.topic_arn,
                "STATE_TABLE": self.table.table_name,
                "DLQ_URL": self.postings_dlq.queue_url,
                "INDEX_ROOT": MOUNT_PATH,
                "RADIUS_KM": f"{settings.radius_km:g}",
                "MATCH_MODE": settings.match_mode,
                "SOURCES": settings.sources_json,
                "GEOCODER_PLACE_INDEX": settings.geocoder_place_index,
                "MARGIN_SECONDS": str(MARGIN_SECONDS),
                "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
            },
            # One run at a time: cursors move by compare-and-set, but overlapping runs would
            # only race for the same postings. A run that fires while one is going waits in
            # Lambda's asynchronous queue (up to max_event_age), then goes to FailedRuns.
            reserved_concurrent_executions=1,
            retry_attempts=1,
            max_event_age=max_event_age(settings.schedule_minutes),
            on_failure=destinations.SqsDestination(self.failed_runs),
        )
        function = self.worker.function
        self.schedule = events.Rule(
            self,
            "Schedule",
            description=f"Runs the FSA Alerts worker every {settings.schedule_minutes} min",
            schedule=events.Schedule.rate(Duration.minutes(settings.schedule_minutes)),
            targets=[targets.LambdaFunction(function)],
        )

        # ------------------------------------------------------------ least privilege
        for statement in worker_statements(self, settings):
            function.add_to_role_policy(statement)

        # ------------------------------------------------------------ for operators
        CfnOutput(self, TOPIC_OUTPUT, value=self.topic.topic_arn, description="Alerts topic: subscribe here")
        CfnOutput(self, "StateTableName", value=self.table.table_name, description="Cursors and idempotency records")
        CfnOutput(self, "PostingsDlqUrl", value=self.postings_dlq.queue_url, description="Postings not published")
        CfnOutput(self, "FailedRunsQueueUrl", value=self.failed_runs.queue_url, description="Failed worker runs")


def s3_sources(settings: Settings) -> tuple[dict[str, list[str]], list[str]]:
    """For the configured s3_jsonl sources: bucket -> the ``s3:prefix`` patterns it may be listed
    with (empty: the whole bucket, as a source reads all of it), and the object key patterns
    (``bucket/prefix*``) it may read."""
    prefixes: dict[str, set[str]] = {}
    objects: set[str] = set()
    for source in settings.sources.root:
        if isinstance(source, S3JsonlConfig):
            prefixes.setdefault(source.bucket, set()).add(source.prefix)
            objects.add(f"{source.bucket}/{source.prefix}*")
    listing = {bucket: [] if "" in found else sorted(p + "*" for p in found) for bucket, found in prefixes.items()}
    return dict(sorted(listing.items())), sorted(objects)


def worker_statements(stack: WorkerStack, settings: Settings) -> list[iam.PolicyStatement]:
    """Everything the worker may do beyond logs, ENIs, EFS and its failure destination,
    each on exactly the resource it needs."""
    statements = [
        iam.PolicyStatement(sid="PublishAlerts", actions=["sns:Publish"], resources=[stack.topic.topic_arn]),
        # SNS calls KMS with the publisher's credentials to encrypt what the worker publishes.
        iam.PolicyStatement(
            sid="EncryptAlerts",
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            resources=[stack.topic_key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"sns.{stack.region}.amazonaws.com"}},
        ),
        iam.PolicyStatement(
            sid="StateTable",
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            resources=[stack.table.table_arn],
        ),
        iam.PolicyStatement(sid="ParkPostings", actions=["sqs:SendMessage"], resources=[stack.postings_dlq.queue_arn]),
    ]
    buckets, objects = s3_sources(settings)
    for i, (bucket, prefixes) in enumerate(buckets.items()):
        statements.append(
            iam.PolicyStatement(
                sid=f"ListSourceBucket{i}",
                actions=["s3:ListBucket"],
                resources=[f"arn:{stack.partition}:s3:::{bucket}"],
                conditions={"StringLike": {"s3:prefix": prefixes}} if prefixes else None,
            )
        )
    if objects:
        statements.append(
            iam.PolicyStatement(
                sid="ReadSourceObjects",
                actions=["s3:GetObject"],
                resources=[f"arn:{stack.partition}:s3:::{key}" for key in objects],
            )
        )
    for key in objects:
        acknowledge(
            stack.worker.role,
            f"IAM5[Resource::arn:<AWS::Partition>:s3:::{key}]",
            "objects under an s3_jsonl source's configured bucket/prefix: new objects arrive there "
            "under names nobody knows in advance",
        )
    if settings.geocoder_place_index:
        statements.append(
            iam.PolicyStatement(
                sid="Geocode",
                actions=["geo:SearchPlaceIndexForText"],
                resources=[
                    stack.format_arn(service="geo", resource="place-index", resource_name=settings.geocoder_place_index)
                ],
            )
        )
    return statements


def _dead_letter_queue(scope: Construct, construct_id: str, settings: Settings, what: str) -> sqs.Queue:
    """Encrypted, SSL-only, 14 days: where things wait for an operator."""
    queue = sqs.Queue(
        scope, construct_id, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
        retention_period=RETENTION, removal_policy=settings.removal,
    )  # fmt: skip
    acknowledge(queue, "SQS3", f"This queue is itself a dead-letter queue: {what}")
    return queue
