"""Subscribe an e-mail address, an SQS queue or an HTTPS endpoint to the alerts topic for some FSAs.

    python -m lambda_src.subscribe ops@example.com --fsa M5V,M5J
    python -m lambda_src.subscribe arn:aws:sqs:ca-central-1:123456789012:alerts --fsa K1P --raw
    make subscribe ARGS="https://hooks.example.com/fsa --fsa M5V --dry-run"

The subscription gets the filter policy {"fsa": [...]}: the worker publishes every alert with
the message attribute ``fsa`` (String.Array of the FSAs near the posting), so the endpoint
receives only alerts for the FSAs it asked for. The topic ARN is --topic-arn, else the
``AlertsTopicArn`` output of the FsaAlerts-Worker stack (CloudFormation DescribeStacks).
Exit codes: 0 ok, 1 AWS error, 2 bad input. Errors are one line.

An SQS queue must let the topic send to it (queue policy: sns.amazonaws.com, sqs:SendMessage,
aws:SourceArn = the topic), and when it is encrypted with a customer managed KMS key, that key
must let sns.amazonaws.com use kms:GenerateDataKey* and kms:Decrypt.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from data_builder.codes import is_fsa

#: The worker stack and its output that holds the alerts topic ARN (stacks/worker.py uses these).
STACK_NAME = "FsaAlerts-Worker"
TOPIC_OUTPUT = "AlertsTopicArn"
#: SNS allows at most 150 values across a filter policy.
MAX_FSAS = 150

_SQS_ARN = re.compile(r"^arn:aws[\w-]*:sqs:[a-z0-9-]+:\d{12}:[\w-]{1,80}(\.fifo)?$")
_TOPIC_ARN = re.compile(r"^arn:aws[\w-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class UsageError(ValueError):
    """Bad input: exit code 2."""


def parse_fsas(values: list[str]) -> list[str]:
    """``["m5v, M5J", "m5v"]`` -> ``["M5V", "M5J"]``: split on commas and spaces, uppercase,
    dedupe keeping the order; raises UsageError naming the first that is not an FSA."""
    fsas: list[str] = []
    for value in values:
        for part in re.split(r"[,\s]+", value.strip()):
            if not part:
                continue
            code = part.upper()
            if not is_fsa(code):
                raise UsageError(f"{part!r} is not an FSA (letter, digit, letter, e.g. M5V; no D, F, I, O, Q, U)")
            if code not in fsas:
                fsas.append(code)
    if not fsas:
        raise UsageError("give at least one FSA with --fsa")
    if len(fsas) > MAX_FSAS:
        raise UsageError(f"{len(fsas)} FSAs: an SNS filter policy takes at most {MAX_FSAS} values")
    return fsas


def protocol_of(endpoint: str) -> str:
    """The SNS protocol of ``endpoint``: ``sqs`` (queue ARN), ``https`` (URL) or ``email``."""
    if endpoint.startswith("arn:"):
        if _SQS_ARN.fullmatch(endpoint):
            return "sqs"
        raise UsageError(f"{endpoint!r} is not an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)")
    if endpoint.lower().startswith("http://"):
        raise UsageError(f"{endpoint!r}: use an https:// URL (plain HTTP would send alerts unencrypted)")
    if endpoint.lower().startswith("https://"):
        if re.search(r"\s", endpoint) or len(endpoint) <= len("https://"):
            raise UsageError(f"{endpoint!r} is not a URL")
        return "https"
    if _EMAIL.fullmatch(endpoint):
        return "email"
    raise UsageError(f"{endpoint!r} is neither an e-mail address, an SQS queue ARN nor an https:// URL")


def subscribe_request(topic_arn: str, endpoint: str, fsas: list[str], *, raw: bool = False) -> dict[str, Any]:
    """The keyword arguments of SNS Subscribe."""
    protocol = protocol_of(endpoint)
    attributes = {"FilterPolicy": json.dumps({"fsa": fsas}), "FilterPolicyScope": "MessageAttributes"}
    if raw:
        if protocol == "email":
            raise UsageError("--raw applies to SQS and HTTPS endpoints only")
        attributes["RawMessageDelivery"] = "true"
    return {
        "TopicArn": topic_arn,
        "Protocol": protocol,
        "Endpoint": endpoint,
        "Attributes": attributes,
        "ReturnSubscriptionArn": True,
    }


def topic_from_stack(cloudformation: Any, stack: str = STACK_NAME) -> str:
    """The alerts topic ARN from the worker stack's outputs."""
    stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    for output in stacks[0].get("Outputs", []) if stacks else []:
        if output["OutputKey"] == TOPIC_OUTPUT:
            return output["OutputValue"]
    raise LookupError(f"stack {stack} has no output {TOPIC_OUTPUT}; is it deployed? (or pass --topic-arn)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lambda_src.subscribe",
        description="Subscribe an endpoint to the FSA Alerts topic, filtered to some FSAs.",
    )
    parser.add_argument("endpoint", help="an e-mail address, an SQS queue ARN or an https:// URL")
    parser.add_argument(
        "--fsa", action="append", required=True, metavar="FSA[,FSA...]",
        help="FSAs to receive alerts for (repeatable, comma-separated; any case)",
    )  # fmt: skip
    parser.add_argument("--topic-arn", help=f"the alerts topic (default: the {TOPIC_OUTPUT} output of {STACK_NAME})")
    parser.add_argument("--stack", default=STACK_NAME, help="the worker stack to read the topic ARN from")
    parser.add_argument("--region", help="AWS region (default: the AWS CLI/SDK configuration)")
    parser.add_argument("--raw", action="store_true", help="raw message delivery (SQS and HTTPS only)")
    parser.add_argument("--dry-run", action="store_true", help="print the Subscribe request; call nothing")
    args = parser.parse_args(argv)

    try:
        fsas = parse_fsas(args.fsa)
        if args.topic_arn is not None and not _TOPIC_ARN.fullmatch(args.topic_arn):
            raise UsageError(f"--topic-arn {args.topic_arn!r} is not an SNS topic ARN")
        topic_arn = args.topic_arn or f"<{TOPIC_OUTPUT} output of {args.stack}>"
        request = subscribe_request(topic_arn, args.endpoint, fsas, raw=args.raw)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return 0

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = boto3.session.Session(region_name=args.region)
        if args.topic_arn is None:
            request["TopicArn"] = topic_from_stack(session.client("cloudformation"), args.stack)
        response = session.client("sns").subscribe(**request)
    except (BotoCoreError, ClientError, LookupError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    arn = response.get("SubscriptionArn", "")
    pending = request["Protocol"] in ("email", "https")
    note = " (pending: the endpoint must confirm the subscription)" if pending else ""
    print(f"subscribed {request['Protocol']} {args.endpoint} to {', '.join(fsas)}: {arn}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
