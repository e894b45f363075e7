"""Mounting the index's EFS access point into a Lambda, with exactly the EFS rights it needs."""

from __future__ import annotations

from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_

#: Where every Lambda sees the index root (the access point's /fsa-index).
MOUNT_PATH = "/mnt/fsa-index"


def efs_mount(file_system: efs.FileSystem, access_point: efs.AccessPoint, *, read_only: bool) -> lambda_.FileSystem:
    """ClientMount (and ClientWrite unless ``read_only``) on this file system through this
    access point only. The security-group rules live with the file system (network stack)."""
    actions = ["elasticfilesystem:ClientMount"] + ([] if read_only else ["elasticfilesystem:ClientWrite"])
    return lambda_.FileSystem(
        arn=access_point.access_point_arn,
        local_mount_path=MOUNT_PATH,
        dependency=[file_system.mount_targets_available],
        policies=[
            iam.PolicyStatement(
                actions=actions,
                resources=[file_system.file_system_arn],
                conditions={"StringEquals": {"elasticfilesystem:AccessPointArn": access_point.access_point_arn}},
            )
        ],
    )
