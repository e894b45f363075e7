"""A Python 3.12 Lambda with its own dependency layer, packaged without Docker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import AssetHashType, BundlingOptions, DockerImage, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constructs import lambda_bundle as bundle
from stacks.constructs.nag import acknowledge

# What a Lambda in a VPC needs to manage its network interfaces; these EC2 APIs take no
# resource-level permissions, so the resource must be "*".
VPC_ENI_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
# Never pulled: local bundling always succeeds or raises first.
_NO_DOCKER = DockerImage.from_registry("local-bundling-only")


class PythonFunction(Construct):
    """``lambda_src/<name>/`` as a function (with ``lambda_src/shared`` and ``data_builder``)
    plus a layer built from ``lambda_src/<name>/requirements.txt``.

    When the stack is bundled, both are measured and synth fails when function + layer
    exceed ``size_budget_mb`` unzipped.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        handler: str,
        architecture: str,
        memory_mb: int,
        timeout: Duration,
        log_retention: logs.RetentionDays,
        size_budget_mb: float,
        description: str,
        environment: Mapping[str, str] | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        filesystem: lambda_.FileSystem | None = None,
        requirements: Path | None = None,
        **function_options: object,
    ) -> None:
        super().__init__(scope, construct_id)
        requirements = requirements or bundle.REPO / "lambda_src" / name / "requirements.txt"
        sources = [
            bundle.REPO / "lambda_src" / "__init__.py",
            bundle.REPO / "lambda_src" / name,
            bundle.REPO / "lambda_src" / "shared",
            bundle.REPO / "data_builder",
        ]
        self.size: bundle.SizeReport | None = None
        layer_dir: Path | None = None
        if Stack.of(self).bundling_required:
            layer_dir = bundle.build_layer(requirements, architecture)
            self.size = bundle.SizeReport(
                name=name,
                code_bytes=sum(f.stat().st_size for f in bundle.source_files(sources)),
                layer_bytes=bundle.tree_bytes(layer_dir),
                budget_mb=size_budget_mb,
            )
            print(f"  {self.size.line()}")
            self.size.check()

        def copy_layer(out: Path) -> None:
            assert layer_dir is not None
            bundle.copy_tree(layer_dir, out)

        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(
                str(requirements.parent),
                asset_hash=bundle.layer_key(requirements, architecture),
                asset_hash_type=AssetHashType.CUSTOM,
                bundling=BundlingOptions(image=_NO_DOCKER, local=bundle.CopyDirectory(copy_layer)),
            ),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURES[architecture]],
            description=f"{name} dependencies: {requirements.relative_to(bundle.REPO)}",
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        # Our own role instead of the AWS managed execution policies: logs only to this
        # function's log group, ENI management only when in a VPC.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"FSA Alerts {name} Lambda",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        if vpc is not None:
            self.role.add_to_policy(iam.PolicyStatement(actions=VPC_ENI_ACTIONS, resources=["*"]))
        self.function = lambda_.Function(
            self,
            "Function",
            role=self.role,
            runtime=RUNTIME,
            architecture=ARCHITECTURES[architecture],
            handler=handler,
            code=lambda_.Code.from_asset(
                str(bundle.REPO / "lambda_src" / name),
                asset_hash=bundle.source_key(sources),
                asset_hash_type=AssetHashType.CUSTOM,
                bundling=BundlingOptions(
                    image=_NO_DOCKER, local=bundle.CopyDirectory(lambda out: bundle.copy_sources(sources, out))
                ),
            ),
            layers=[self.layer],
            memory_size=memory_mb,
            timeout=timeout,
            description=description,
            environment={"POWERTOOLS_SERVICE_NAME": f"fsa-{name}", **(environment or {})},
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=security_groups,
            allow_public_subnet=False,
            filesystem=filesystem,
            **function_options,
        )
        acknowledge(
            self.role,
            "IAM5[Resource::*]",
            "EC2 network-interface actions for a VPC Lambda and X-Ray PutTraceSegments/PutTelemetryRecords "
            "support no resource-level permissions",
        )
        acknowledge(
            self.function,
            "L1",
            "The service targets the Python 3.12 Lambda runtime (its layers are built for cp312); "
            "moving runtimes is a deliberate upgrade, not an automatic one",
        )
