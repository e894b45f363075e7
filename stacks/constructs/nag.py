"""cdk-nag acknowledgments: each names its rule, the construct it applies to, and why."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Suppress AwsSolutions ``rule`` (e.g. ``IAM5[Resource::*]``) on ``construct`` and below."""
    rule_id = f"AwsSolutions::AwsSolutions-{rule}"
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule_id, reason=reason))
