"""Builds the whole CDK app: settings, stacks, cross-stack wiring, cdk-nag."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.data_loader import DataLoaderStack
from stacks.monitoring import MonitoringStack
from stacks.network_storage import NetworkStorageStack
from stacks.settings import Settings, load_settings
from stacks.worker import WorkerStack

STACK_PREFIX = "FsaAlerts"


def build_app(context: dict[str, Any] | None = None, **app_options: Any) -> tuple[cdk.App, dict[str, cdk.Stack]]:
    """The app and its stacks by short name. Raises ConfigError before building anything."""
    app = cdk.App(context=context, **app_options)
    settings: Settings = load_settings(app.node.try_get_context)
    network = NetworkStorageStack(
        app, f"{STACK_PREFIX}-Network", settings=settings,
        description="FSA Alerts: VPC, endpoints, flow logs and the EFS file system of the FSA index",
    )  # fmt: skip
    loader = DataLoaderStack(
        app, f"{STACK_PREFIX}-Loader", settings=settings, network=network,
        description="FSA Alerts: datasets and the loader Lambda that builds the FSA index on deploy",
    )  # fmt: skip
    worker = WorkerStack(
        app, f"{STACK_PREFIX}-Worker", settings=settings, network=network,
        description="FSA Alerts: the scheduled worker Lambda, its alerts topic, state table and dead-letter queues",
    )  # fmt: skip
    # Deploy the worker after the loader has built the index, so its first run finds one.
    worker.add_stack_dependency(loader, "the worker reads the index the loader builds")
    monitoring = MonitoringStack(
        app, f"{STACK_PREFIX}-Monitoring", settings=settings, network=network, loader=loader, worker=worker,
        description="FSA Alerts: the FsaAlerts dashboard, the operations topic and the alarms",
    )  # fmt: skip
    stacks: dict[str, cdk.Stack] = {"network": network, "loader": loader, "worker": worker, "monitoring": monitoring}
    for stack in stacks.values():
        cdk.Tags.of(stack).add("project", "fsa-alerts")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks())
    return app, stacks
