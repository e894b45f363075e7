"""The worker's AWS resources created on a moto server, as the worker stack defines them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import boto3

from lambda_src.local.moto_env import REGION


@dataclass
class WorkerResources:
    topic_arn: str
    table: str
    dlq_url: str
    #: subscriber name -> queue URL, each subscribed with a filter policy on ``fsa``.
    queues: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {"TOPIC_ARN": self.topic_arn, "STATE_TABLE": self.table, "DLQ_URL": self.dlq_url}


def create_worker_resources(subscribers: dict[str, list[str] | None], prefix: str = "fsa-alerts") -> WorkerResources:
    """Topic, state table (id + TTL), DLQ, and one SQS queue per subscriber with its FSA
    filter (None: no filter, every alert)."""
    sns, sqs, ddb = boto3.client("sns"), boto3.client("sqs"), boto3.client("dynamodb")
    topic_arn = sns.create_topic(Name=f"{prefix}-alerts")["TopicArn"]
    table = f"{prefix}-state"
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"})
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-postings-dlq")["QueueUrl"]
    resources = WorkerResources(topic_arn, table, dlq_url)
    for name, fsas in subscribers.items():
        url = sqs.create_queue(QueueName=f"{prefix}-sub-{name}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"RawMessageDelivery": "true"}
        if fsas is not None:
            attributes["FilterPolicy"] = json.dumps({"fsa": fsas})
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        resources.queues[name] = url
    return resources


def drain(queue_url: str, region: str = REGION) -> list[dict[str, Any]]:
    """Every message in the queue (deleted as read), bodies parsed as JSON."""
    sqs = boto3.client("sqs", region_name=region)
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return out
        for message in got:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
