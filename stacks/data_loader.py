"""Data loader: the datasets as S3 assets and the Lambda that builds the index onto EFS,
run by a deploy-time trigger whenever the datasets or the loader code change."""

from __future__ import annotations

from aws_cdk import Duration, Stack, triggers
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from stacks.constructs.efs_mount import MOUNT_PATH, efs_mount
from stacks.constructs.lambda_bundle import REPO
from stacks.constructs.python_function import PythonFunction
from stacks.network_storage import NetworkStorageStack
from stacks.settings import Settings

FSA_DATASET = REPO / "data" / "fsa_centroids.csv"
POSTAL_DATASET = REPO / "data" / "postal_codes.csv.gz"


class DataLoaderStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, network: NetworkStorageStack, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        fsa = s3_assets.Asset(self, "FsaDataset", path=str(FSA_DATASET))
        postal = s3_assets.Asset(self, "PostalDataset", path=str(POSTAL_DATASET))

        self.loader = PythonFunction(
            self,
            "Loader",
            name="loader",
            handler="lambda_src.loader.handler.handler",
            description="Builds the FSA index onto EFS from the dataset assets",
            architecture=settings.lambda_architecture,
            # Defaults 2048 MB / 5 min. Measured (make bench, docs/benchmarks.md): a full build
            # of both levels from the committed data takes 10.5 s at 495 MB peak RSS on 2 cores;
            # 2048 MB is 4x that (Lambda's CPU grows with memory, and the build is CPU-bound)
            # and the build is 3.5 % of the 5 min timeout (target: at most 25 %).
            memory_mb=settings.loader_memory_mb,
            timeout=Duration.minutes(settings.loader_timeout_minutes),
            log_retention=settings.log_retention,
            size_budget_mb=settings.lambda_size_budget_mb,
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_groups=[network.loader_security_group],
            filesystem=efs_mount(network.file_system, network.access_point, read_only=False),
            # Only the deploy trigger invokes it, once per deploy; one at a time caps what a
            # stray or repeated invocation can cost (builds also serialise on the index lock).
            reserved_concurrent_executions=1,
            # The asset keys carry the datasets' hashes: a new dataset is a new function
            # version, and that re-runs the trigger.
            environment={
                "INDEX_ROOT": MOUNT_PATH,
                "DATASET_BUCKET": fsa.s3_bucket_name,
                "FSA_DATASET_KEY": fsa.s3_object_key,
                "POSTAL_DATASET_KEY": postal.s3_object_key,
            },
        )
        function = self.loader.function
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[asset.bucket.arn_for_objects(asset.s3_object_key) for asset in (fsa, postal)],
            )
        )
        self.trigger = triggers.Trigger(
            self,
            "BuildIndex",
            handler=function,
            invocation_type=triggers.InvocationType.REQUEST_RESPONSE,
            timeout=Duration.minutes(settings.loader_timeout_minutes),
            execute_after=[network.file_system, network.access_point],
            execute_on_handler_change=True,
        )
