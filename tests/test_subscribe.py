"""`python -m lambda_src.subscribe` against a real moto server on 127.0.0.1: the subscription and
its filter policy, and an SQS subscriber that receives only the alerts for its FSAs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_src.local.moto_env import aws_env, moto_server, patched_env
from lambda_src.subscribe import STACK_NAME, TOPIC_OUTPUT, main, parse_fsas

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("moto-subscribe")


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, str]]:
    with moto_server() as endpoint:
        env = aws_env(endpoint)
        with patched_env(env):
            yield env


@pytest.fixture
def topic_arn(aws) -> Iterator[str]:
    import boto3

    sns = boto3.client("sns")
    arn = sns.create_topic(Name="alerts")["TopicArn"]
    yield arn
    sns.delete_topic(TopicArn=arn)


def _queue(name: str, topic_arn: str) -> tuple[str, str]:
    """A queue (URL, ARN) whose policy lets the topic send to it, as a real subscriber's would."""
    import boto3

    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return url, arn


def _subscriptions(topic_arn: str) -> list[dict[str, Any]]:
    import boto3

    sns = boto3.client("sns")
    subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    return [
        {**s, "Attributes": sns.get_subscription_attributes(SubscriptionArn=s["SubscriptionArn"])["Attributes"]}
        for s in subs
    ]


def _publish(topic_arn: str, fsas: list[str], body: str) -> None:
    import boto3

    boto3.client("sns").publish(
        TopicArn=topic_arn,
        Message=body,
        MessageAttributes={"fsa": {"DataType": "String.Array", "StringValue": json.dumps(fsas)}},
    )


def _receive_all(queue_url: str) -> list[str]:
    import boto3

    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


# ---------------------------------------------------------------- input checks (no AWS)

_ARN = "arn:aws:sns:ca-central-1:123456789012:alerts"


def test_fsas_are_uppercased_deduplicated_and_split_on_commas():
    assert parse_fsas(["m5v, M5J", "k1p", "M5V"]) == ["M5V", "M5J", "K1P"]


@pytest.mark.parametrize("bad", ["M5", "M5VV", "D1A", "5MV", "M5V 3L9"])
def test_an_invalid_fsa_is_refused_with_one_line_and_exit_2(bad, capsys):
    assert main(["ops@example.com", "--fsa", f"M5J,{bad}", "--topic-arn", _ARN]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "is not an FSA" in err


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("http://hooks.example.com/x", "use an https:// URL"),
        ("arn:aws:sns:ca-central-1:123456789012:other", "not an SQS queue ARN"),
        ("not-an-endpoint", "neither an e-mail address"),
    ],
)
def test_an_unknown_endpoint_is_refused(endpoint, message, capsys):
    assert main([endpoint, "--fsa", "M5V", "--topic-arn", _ARN]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_too_many_fsas_for_one_filter_policy_are_refused(capsys):
    from data_builder.codes import is_fsa

    codes = [f"{a}{d}{b}" for a in "ABCEGH" for d in "0123456789" for b in "ABCEG"]
    codes = [c for c in codes if is_fsa(c)][:151]
    assert main(["ops@example.com", "--fsa", ",".join(codes), "--topic-arn", _ARN]) == 2
    assert "at most 150" in capsys.readouterr().err


def test_dry_run_prints_the_request_and_calls_nothing(capsys):
    # No --topic-arn: a dry run shows where the ARN will come from instead of looking it up.
    assert main(["arn:aws:sqs:ca-central-1:123456789012:q", "--fsa", "m5v,M5J", "--dry-run", "--raw"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["TopicArn"] == f"<{TOPIC_OUTPUT} output of {STACK_NAME}>"
    assert request["Protocol"] == "sqs"
    assert json.loads(request["Attributes"]["FilterPolicy"]) == {"fsa": ["M5V", "M5J"]}
    assert request["Attributes"]["RawMessageDelivery"] == "true"


# ---------------------------------------------------------------- against moto


def test_sqs_subscriber_gets_only_the_alerts_for_its_fsas(topic_arn, capsys):
    url, queue_arn = _queue("toronto-alerts", topic_arn)
    assert main([queue_arn, "--fsa", "m5v,M5J", "--fsa", "M5V", "--topic-arn", topic_arn, "--raw"]) == 0
    assert f"subscribed sqs {queue_arn} to M5V, M5J: arn:" in capsys.readouterr().out

    (sub,) = _subscriptions(topic_arn)
    assert (sub["Protocol"], sub["Endpoint"]) == ("sqs", queue_arn)
    assert json.loads(sub["Attributes"]["FilterPolicy"]) == {"fsa": ["M5V", "M5J"]}
    assert sub["Attributes"]["RawMessageDelivery"] == "true"

    _publish(topic_arn, ["M5V", "M5A"], "posting near M5V")
    _publish(topic_arn, ["K1P"], "posting in Ottawa")
    _publish(topic_arn, ["M4M", "M5J"], "posting near M5J")
    _publish(topic_arn, ["M5"], "no such FSA")
    assert sorted(_receive_all(url)) == ["posting near M5J", "posting near M5V"]


def test_email_and_https_subscriptions_get_the_filter_policy(topic_arn, capsys):
    assert main(["ops@example.com", "--fsa", "K1P", "--topic-arn", topic_arn]) == 0
    assert "(pending" in capsys.readouterr().out
    assert main(["https://hooks.example.com/fsa", "--fsa", "X0A, x0b", "--topic-arn", topic_arn]) == 0
    subs = {s["Protocol"]: s for s in _subscriptions(topic_arn)}
    assert set(subs) == {"email", "https"}
    assert json.loads(subs["email"]["Attributes"]["FilterPolicy"]) == {"fsa": ["K1P"]}
    assert json.loads(subs["https"]["Attributes"]["FilterPolicy"]) == {"fsa": ["X0A", "X0B"]}


def test_the_topic_arn_comes_from_the_worker_stack_output(topic_arn, capsys):
    import boto3

    cloudformation = boto3.client("cloudformation")
    template = {
        "Resources": {"Alerts": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "stack-alerts"}}},
        "Outputs": {TOPIC_OUTPUT: {"Value": {"Ref": "Alerts"}}},
    }
    cloudformation.create_stack(StackName=STACK_NAME, TemplateBody=json.dumps(template))
    try:
        stack_topic = boto3.client("sns").create_topic(Name="stack-alerts")["TopicArn"]  # idempotent: the same
        assert main(["ops@example.com", "--fsa", "M5V"]) == 0
        assert f"to M5V: {stack_topic}:" in capsys.readouterr().out
        assert [s["Endpoint"] for s in _subscriptions(stack_topic)] == ["ops@example.com"]
        assert _subscriptions(topic_arn) == []
    finally:
        cloudformation.delete_stack(StackName=STACK_NAME)


def test_a_missing_stack_is_one_line_and_exit_1(aws, capsys):
    assert main(["ops@example.com", "--fsa", "M5V", "--stack", "NoSuchStack"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "NoSuchStack" in err


def test_runs_as_a_module(aws):
    done = subprocess.run(
        [sys.executable, "-m", "lambda_src.subscribe", "ops@example.com", "--fsa", "M5V", "--dry-run"],
        cwd=REPO, capture_output=True, text=True, check=False, env={**aws, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["Endpoint"] == "ops@example.com"
