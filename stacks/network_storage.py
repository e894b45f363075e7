"""Network + storage: the VPC the Lambdas run in and the EFS file system that holds the index."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.settings import Settings

INDEX_PATH = "/fsa-index"
#: The POSIX identity every Lambda uses on EFS (the access point enforces it).
POSIX_UID = POSIX_GID = "1001"
NFS_PORT = 2049


class NetworkStorageStack(Stack):
    """VPC over 2 AZs, endpoints, flow logs, security groups, EFS and its access point."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retention = settings.log_retention

        isolated = settings.nat_gateways == 0
        private_type = ec2.SubnetType.PRIVATE_ISOLATED if isolated else ec2.SubnetType.PRIVATE_WITH_EGRESS
        subnets = [ec2.SubnetConfiguration(name="private", subnet_type=private_type, cidr_mask=22)]
        if not isolated:
            subnets.insert(0, ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24))
        flow_log_group = logs.LogGroup(self, "FlowLogs", retention=retention, removal_policy=RemovalPolicy.DESTROY)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,
            nat_gateways=settings.nat_gateways,
            subnet_configuration=subnets,
            create_internet_gateway=not isolated,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        self.private_subnets = ec2.SubnetSelection(subnet_type=private_type)

        self.loader_security_group = ec2.SecurityGroup(
            self, "LoaderSg", vpc=self.vpc, description="FSA Alerts data-loader Lambda", allow_all_outbound=True
        )
        self.worker_security_group = ec2.SecurityGroup(
            self, "WorkerSg", vpc=self.vpc, description="FSA Alerts worker Lambda", allow_all_outbound=True
        )
        efs_security_group = ec2.SecurityGroup(
            self, "EfsSg", vpc=self.vpc, description="FSA index file system: NFS from the Lambdas only",
            allow_all_outbound=False,
        )  # fmt: skip
        for client in (self.loader_security_group, self.worker_security_group):
            efs_security_group.add_ingress_rule(client, ec2.Port.tcp(NFS_PORT), "NFS from an FSA Alerts Lambda")

        if isolated:
            endpoint_sg = ec2.SecurityGroup(
                self, "EndpointSg", vpc=self.vpc, description="Interface endpoints: HTTPS from the Lambdas",
                allow_all_outbound=False,
            )  # fmt: skip
            for client in (self.loader_security_group, self.worker_security_group):
                endpoint_sg.add_ingress_rule(client, ec2.Port.tcp(443), "HTTPS from an FSA Alerts Lambda")
            for name, service in (
                ("Sns", ec2.InterfaceVpcEndpointAwsService.SNS),
                ("Sqs", ec2.InterfaceVpcEndpointAwsService.SQS),
                ("Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS),
                ("Monitoring", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING),
            ):
                self.vpc.add_interface_endpoint(
                    name, service=service, subnets=self.private_subnets, security_groups=[endpoint_sg], open=False
                )

        self.file_system = efs.FileSystem(
            self,
            "IndexFs",
            vpc=self.vpc,
            vpc_subnets=self.private_subnets,
            security_group=efs_security_group,
            encrypted=True,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            # The index is rebuilt from the dataset by the loader; nothing on EFS needs a backup.
            enable_automatic_backups=False,
            removal_policy=settings.removal,
            file_system_policy=iam.PolicyDocument(
                statements=[
                    iam.PolicyStatement(
                        sid="DenyWithoutTls",
                        effect=iam.Effect.DENY,
                        principals=[iam.AnyPrincipal()],
                        actions=["*"],
                        conditions={"Bool": {"aws:SecureTransport": "false"}},
                    )
                ]
            ),
        )
        self.access_point = self.file_system.add_access_point(
            "IndexAp",
            path=INDEX_PATH,
            posix_user=efs.PosixUser(uid=POSIX_UID, gid=POSIX_GID),
            create_acl=efs.Acl(owner_uid=POSIX_UID, owner_gid=POSIX_GID, permissions="750"),
        )
