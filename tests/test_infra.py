"""The CDK app through real synthesis: assertions, snapshots, cdk-nag, cfn-lint, bad settings.

Bundling is skipped here (``aws:cdk:bundling-stacks`` = []) so the suite stays fast and
offline; the custom asset hashes keep the templates identical to a bundled synth.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from syrupy.extensions.json import JSONSnapshotExtension

from lambda_src.subscribe import STACK_NAME, TOPIC_OUTPUT
from stacks.application import build_app
from stacks.settings import ConfigError, cdk_json_context

REPO = Path(__file__).resolve().parents[1]
NO_BUNDLING = {"aws:cdk:bundling-stacks": []}


def synth(tmp: Path, **overrides: Any) -> dict[str, Template]:
    app, stacks = build_app(context={**cdk_json_context(), **NO_BUNDLING, **overrides}, outdir=str(tmp))
    app.synth()
    return {name: Template.from_stack(stack) for name, stack in stacks.items()}


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="module")
def templates(outdir: Path) -> dict[str, Template]:
    return synth(outdir)


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


# ---------------------------------------------------------------- network + storage


def test_efs_is_encrypted_elastic_and_denies_non_tls(templates):
    net = templates["network"]
    net.has_resource_properties(
        "AWS::EFS::FileSystem",
        {
            "Encrypted": True,
            "ThroughputMode": "elastic",
            "FileSystemPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "*",
                                "Principal": {"AWS": "*"},
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )
    net.has_resource("AWS::EFS::FileSystem", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})


def test_access_point_is_rooted_at_fsa_index_as_uid_1001(templates):
    templates["network"].has_resource_properties(
        "AWS::EFS::AccessPoint",
        {
            "PosixUser": {"Uid": "1001", "Gid": "1001"},
            "RootDirectory": {
                "Path": "/fsa-index",
                "CreationInfo": {"OwnerUid": "1001", "OwnerGid": "1001", "Permissions": "750"},
            },
        },
    )


def test_vpc_has_two_azs_one_nat_endpoints_and_flow_logs(templates):
    net = templates["network"]
    net.resource_count_is("AWS::EC2::NatGateway", 1)
    net.resource_count_is("AWS::EC2::Subnet", 4)  # public + private in each of 2 AZs
    net.resource_count_is("AWS::EC2::FlowLog", 1)
    endpoints = net.find_resources("AWS::EC2::VPCEndpoint")
    assert {v["Properties"].get("VpcEndpointType", "Gateway") for v in endpoints.values()} == {"Gateway"}
    services = json.dumps([v["Properties"]["ServiceName"] for v in endpoints.values()])
    assert ".s3" in services and ".dynamodb" in services
    net.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


def test_nfs_reaches_efs_only_from_the_lambda_security_groups(templates):
    ingress = templates["network"].find_resources("AWS::EC2::SecurityGroupIngress")
    nfs = [r["Properties"] for r in ingress.values() if r["Properties"]["FromPort"] == 2049]
    assert len(nfs) == 2
    assert all("SourceSecurityGroupId" in r and "CidrIp" not in r for r in nfs)


def test_zero_nat_gateways_gives_isolated_subnets_and_interface_endpoints(tmp_path):
    net = synth(tmp_path, nat_gateways=0)["network"]
    net.resource_count_is("AWS::EC2::NatGateway", 0)
    net.resource_count_is("AWS::EC2::InternetGateway", 0)
    interface = [
        v["Properties"]["ServiceName"]
        for v in net.find_resources("AWS::EC2::VPCEndpoint").values()
        if v["Properties"].get("VpcEndpointType") == "Interface"
    ]
    assert len(interface) == 4
    names = json.dumps(interface)  # service names are Fn::Join of "com.amazonaws.", region, ".sns"
    assert all(f'.{service}"' in names for service in ("logs", "monitoring", "sns", "sqs")), names


# ---------------------------------------------------------------- data loader


def _loader_function(templates: dict[str, Template]) -> dict[str, Any]:
    functions = templates["loader"].find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "lambda_src.loader.handler.handler"}}
    )
    assert len(functions) == 1
    return next(iter(functions.values()))["Properties"]


def test_loader_runs_python_312_arm64_in_the_vpc_with_efs_mounted(templates):
    props = _loader_function(templates)
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert len(props["VpcConfig"]["SubnetIds"]) == 2
    assert props["FileSystemConfigs"][0]["LocalMountPath"] == "/mnt/fsa-index"
    env = props["Environment"]["Variables"]
    assert env["INDEX_ROOT"] == "/mnt/fsa-index"
    assert {"DATASET_BUCKET", "FSA_DATASET_KEY", "POSTAL_DATASET_KEY"} <= set(env)
    assert len(props["Layers"]) == 1


def test_loader_logs_have_retention(templates):
    props = _loader_function(templates)
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = templates["loader"].to_json()["Resources"][log_group_id]
    assert log_group["Properties"]["RetentionInDays"] == 30


def test_loader_may_write_efs_only_through_the_access_point(templates):
    policies = templates["loader"].find_resources("AWS::IAM::Policy")
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    efs = [s for s in statements if "elasticfilesystem:ClientMount" in json.dumps(s["Action"])]
    assert len(efs) == 1
    assert sorted(efs[0]["Action"]) == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    assert "elasticfilesystem:AccessPointArn" in efs[0]["Condition"]["StringEquals"]
    s3 = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert len(s3) == 1 and len(s3[0]["Resource"]) == 2  # the two dataset objects, nothing else


def test_trigger_runs_the_loader_synchronously_after_the_file_system(templates, outdir):
    trigger = templates["loader"].find_resources("Custom::Trigger")
    assert len(trigger) == 1
    props = next(iter(trigger.values()))["Properties"]
    assert props["InvocationType"] == "RequestResponse"
    assert props["Timeout"] == str(5 * 60 * 1000)
    # It invokes the function's current version, so new code or data re-runs it.
    assert "LoaderFunctionCurrentVersion" in json.dumps(props["HandlerArn"])
    # execute_after on the file system and access point crosses stacks: a stack dependency.
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert "FsaAlerts-Network" in manifest["artifacts"]["FsaAlerts-Loader"]["dependencies"]


def test_architecture_comes_from_context(tmp_path):
    loader = synth(tmp_path, lambda_architecture="x86_64")
    assert _loader_function(loader)["Architectures"] == ["x86_64"]
    loader["loader"].has_resource_properties("AWS::Lambda::LayerVersion", {"CompatibleArchitectures": ["x86_64"]})


# ---------------------------------------------------------------- worker

S3_SOURCES = [
    {"type": "s3_jsonl", "name": "drop", "bucket": "partner-drop", "prefix": "postings/"},
    {"type": "s3_jsonl", "name": "drop-ca", "bucket": "partner-drop", "prefix": "ca/"},
    {"type": "json_feed", "name": "city", "url": "https://example.org/feed.json", "items_key": "items"},
]


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Template]]:
    """One synth with every worker setting moved off its default."""
    out = tmp_path_factory.mktemp("cdk.out.custom")
    return out, synth(out, schedule_minutes=5, sources=S3_SOURCES, geocoder_place_index="fsa-places")


def _resource(template: Template, type_: str, logical_id_prefix: str) -> tuple[str, dict[str, Any]]:
    found = [(k, v) for k, v in template.find_resources(type_).items() if k.startswith(logical_id_prefix)]
    assert len(found) == 1, found
    return found[0]


def _worker_function(template: Template) -> dict[str, Any]:
    functions = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "lambda_src.worker.handler.handler"}}
    )
    assert len(functions) == 1
    return next(iter(functions.values()))["Properties"]


def _worker_statements(template: Template) -> list[dict[str, Any]]:
    role_id = _worker_function(template)["Role"]["Fn::GetAtt"][0]
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    assert len(policies) == 1
    return [{**s, "Action": [s["Action"]] if isinstance(s["Action"], str) else s["Action"]} for s in policies[0]]


def _queue_id(ref: Any) -> str:
    return ref["Ref"] if "Ref" in ref else ref["Fn::GetAtt"][0]


def test_worker_runs_in_the_vpc_with_the_index_mounted_read_only(templates):
    props = _worker_function(templates["worker"])
    assert props["Runtime"] == "python3.12" and props["Architectures"] == ["arm64"]
    assert props["MemorySize"] == 512 and props["Timeout"] == 300
    assert props["ReservedConcurrentExecutions"] == 1
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert len(props["VpcConfig"]["SubnetIds"]) == 2
    assert "WorkerSg" in json.dumps(props["VpcConfig"]["SecurityGroupIds"])
    assert props["FileSystemConfigs"][0]["LocalMountPath"] == "/mnt/fsa-index"
    efs = [s for s in _worker_statements(templates["worker"]) if any("elasticfilesystem" in a for a in s["Action"])]
    assert len(efs) == 1
    assert efs[0]["Action"] == ["elasticfilesystem:ClientMount"]  # never ClientWrite
    assert "elasticfilesystem:AccessPointArn" in efs[0]["Condition"]["StringEquals"]
    assert "ClientWrite" not in json.dumps(templates["worker"].to_json())


def test_worker_environment_follows_the_contract(templates):
    worker = templates["worker"]
    env = _worker_function(worker)["Environment"]["Variables"]
    topic_id, _ = _resource(worker, "AWS::SNS::Topic", "Alerts")
    table_id, _ = _resource(worker, "AWS::DynamoDB::Table", "State")
    dlq_id, _ = _resource(worker, "AWS::SQS::Queue", "PostingsDlq")
    assert env["TOPIC_ARN"] == {"Ref": topic_id}
    assert env["STATE_TABLE"] == {"Ref": table_id}
    assert env["DLQ_URL"] == {"Ref": dlq_id}
    assert env["INDEX_ROOT"] == "/mnt/fsa-index"
    assert (env["RADIUS_KM"], env["MATCH_MODE"], env["MARGIN_SECONDS"]) == ("2.5", "coverage", "30")
    assert (env["SOURCES"], env["GEOCODER_PLACE_INDEX"]) == ("[]", "")
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "FsaAlerts"
    assert env["POWERTOOLS_SERVICE_NAME"] == "fsa-worker"


def test_worker_sources_reach_it_validated_with_their_defaults(custom):
    _out, templates = custom
    env = _worker_function(templates["worker"])["Environment"]["Variables"]
    sources = json.loads(env["SOURCES"])
    assert [s["name"] for s in sources] == ["drop", "drop-ca", "city"]
    assert sources[2]["fields"]["id"] == "id" and sources[2]["read_timeout_s"] == 10.0  # defaults filled in
    assert env["GEOCODER_PLACE_INDEX"] == "fsa-places"


def test_schedule_runs_the_worker_at_the_configured_rate(templates):
    worker = templates["worker"]
    _, rule = _resource(worker, "AWS::Events::Rule", "Schedule")
    assert rule["Properties"]["ScheduleExpression"] == "rate(15 minutes)"
    function_id = _resource(worker, "AWS::Lambda::Function", "WorkerFunction")[0]
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    worker.has_resource_properties(
        "AWS::Lambda::Permission", {"Principal": "events.amazonaws.com", "Action": "lambda:InvokeFunction"}
    )


def test_schedule_minutes_from_context_sets_the_rate_and_the_event_age(custom):
    _out, templates = custom
    worker = templates["worker"]
    _, rule = _resource(worker, "AWS::Events::Rule", "Schedule")
    assert rule["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    worker.has_resource_properties("AWS::Lambda::EventInvokeConfig", {"MaximumEventAgeInSeconds": 600})


def test_failed_runs_are_retried_once_then_go_to_an_encrypted_queue(templates):
    worker = templates["worker"]
    _, config = _resource(worker, "AWS::Lambda::EventInvokeConfig", "WorkerFunction")
    props = config["Properties"]
    assert props["MaximumRetryAttempts"] == 1
    assert props["MaximumEventAgeInSeconds"] == 2 * 15 * 60
    queue_id = _queue_id(props["DestinationConfig"]["OnFailure"]["Destination"])
    queue = worker.to_json()["Resources"][queue_id]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 1209600
    _assert_ssl_only_queue(worker, queue_id)


def test_alerts_topic_is_encrypted_with_a_rotated_key_sns_may_use(templates):
    worker = templates["worker"]
    topic_id, topic = _resource(worker, "AWS::SNS::Topic", "Alerts")
    key_id, key = _resource(worker, "AWS::KMS::Key", "AlertsKey")
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    sns_statements = [
        s for s in key["Properties"]["KeyPolicy"]["Statement"] if s["Principal"] == {"Service": "sns.amazonaws.com"}
    ]
    assert len(sns_statements) == 1
    assert sorted(sns_statements[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    _, policy = _resource(worker, "AWS::SNS::TopicPolicy", "Alerts")
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny and all(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in deny)
    assert {"Ref": topic_id} in [s["Resource"] for s in deny]


def test_state_table_is_on_demand_with_pitr_and_ttl(templates):
    worker = templates["worker"]
    _, table = _resource(worker, "AWS::DynamoDB::Table", "State")
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")


def _assert_ssl_only_queue(template: Template, queue_id: str) -> None:
    policies = [
        p["Properties"]
        for p in template.find_resources("AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    assert len(policies) == 1
    deny = [s for s in policies[0]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert len(deny) == 1
    assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny[0]["Principal"] == {"AWS": "*"} and deny[0]["Action"] == "sqs:*"


def test_postings_dlq_is_encrypted_ssl_only_and_keeps_14_days(templates):
    worker = templates["worker"]
    dlq_id, dlq = _resource(worker, "AWS::SQS::Queue", "PostingsDlq")
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert dlq["Properties"]["MessageRetentionPeriod"] == 1209600
    _assert_ssl_only_queue(worker, dlq_id)


def test_worker_layer_has_no_pandas():
    requirements = REPO / "lambda_src" / "worker" / "requirements.txt"
    names = [
        re.split(r"[\s\[=<>!~;]", line.strip(), maxsplit=1)[0].lower()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert names and "pandas" not in names, names
    assert {"numpy", "scikit-learn"} <= set(names)


def test_worker_layer_is_built_from_its_own_requirements(templates):
    layers = templates["worker"].find_resources("AWS::Lambda::LayerVersion")
    assert [v["Properties"]["Description"] for v in layers.values()] == [
        "worker dependencies: lambda_src/worker/requirements.txt"
    ]
    assert len(_worker_function(templates["worker"])["Layers"]) == 1


def test_worker_role_grants_each_action_on_its_resource_only(templates):
    worker = templates["worker"]
    ids = {
        kind: _resource(worker, type_, prefix)[0]
        for kind, type_, prefix in [
            ("topic", "AWS::SNS::Topic", "Alerts"),
            ("key", "AWS::KMS::Key", "AlertsKey"),
            ("table", "AWS::DynamoDB::Table", "State"),
            ("dlq", "AWS::SQS::Queue", "PostingsDlq"),
        ]
    }
    statements = _worker_statements(worker)
    by_action: dict[str, list[Any]] = {}
    for statement in statements:
        for action in statement["Action"]:
            by_action.setdefault(action, []).append(statement["Resource"])
    assert by_action["sns:Publish"] == [{"Ref": ids["topic"]}]
    assert by_action["kms:GenerateDataKey"] == by_action["kms:Decrypt"] == [{"Fn::GetAtt": [ids["key"], "Arn"]}]
    for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
        assert by_action[f"dynamodb:{action}"] == [{"Fn::GetAtt": [ids["table"], "Arn"]}]
    assert {"Fn::GetAtt": [ids["dlq"], "Arn"]} in by_action["sqs:SendMessage"]
    assert len(by_action["sqs:SendMessage"]) == 2  # the postings DLQ and the failed-runs destination
    assert not [a for a in by_action if a.endswith("*") or a.startswith(("s3:", "geo:"))]
    # "*" only where AWS offers no resource-level permission (ENIs, X-Ray; see PythonFunction).
    wildcard = sorted(a for a, resources in by_action.items() if "*" in resources)
    assert all(a.startswith(("ec2:", "xray:")) for a in wildcard), wildcard


def test_s3_sources_and_the_geocoder_are_granted_on_their_resources_only(custom):
    _out, templates = custom
    statements = _worker_statements(templates["worker"])
    text = {s["Sid"]: json.dumps(s) for s in statements if "Sid" in s}
    listing = [s for s in statements if s["Action"] == ["s3:ListBucket"]]
    assert len(listing) == 1
    assert listing[0]["Condition"] == {"StringLike": {"s3:prefix": ["ca/*", "postings/*"]}}
    assert ':s3:::partner-drop"' in json.dumps(listing[0]["Resource"])
    objects = [s for s in statements if s["Action"] == ["s3:GetObject"]]
    assert len(objects) == 1
    assert [r["Fn::Join"][1][-1] for r in objects[0]["Resource"]] == [
        ":s3:::partner-drop/ca/*",
        ":s3:::partner-drop/postings/*",
    ]
    geo = [s for s in statements if s["Action"] == ["geo:SearchPlaceIndexForText"]]
    assert len(geo) == 1 and ":place-index/fsa-places" in text[geo[0]["Sid"]]


def test_custom_settings_are_cdk_nag_clean(custom):
    out, _templates = custom
    report = json.loads((out / "validation-report.json").read_text())
    for plugin in report["pluginReports"]:
        assert plugin["conclusion"] == "success", plugin.get("violations")


def test_worker_stack_outputs_what_operators_need(templates, outdir):
    worker = templates["worker"]
    outputs = worker.to_json()["Outputs"]
    topic_id, _ = _resource(worker, "AWS::SNS::Topic", "Alerts")
    assert outputs[TOPIC_OUTPUT]["Value"] == {"Ref": topic_id}
    assert outputs["StateTableName"]["Value"]["Ref"].startswith("State")
    assert outputs["PostingsDlqUrl"]["Value"]["Ref"].startswith("PostingsDlq")
    # `python -m lambda_src.subscribe` finds the topic through this stack name and output.
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["artifacts"][STACK_NAME]["type"] == "aws:cloudformation:stack"
    assert {"FsaAlerts-Network", "FsaAlerts-Loader"} <= set(manifest["artifacts"][STACK_NAME]["dependencies"])


# ---------------------------------------------------------------- whole-app checks


# Asset hashes follow the code (tested for determinism below); masked here so a code change
# does not rewrite the snapshots. Update them with `make snapshot-update`.
_ASSET_HASH = re.compile(r"[0-9a-f]{64}")
_VERSION_ID = re.compile(r"CurrentVersion[0-9A-F]{8}[0-9a-f]{32}")


def _masked(template: Template) -> Any:
    text = _VERSION_ID.sub("CurrentVersion<hash>", _ASSET_HASH.sub("<asset-hash>", json.dumps(template.to_json())))
    return json.loads(text)


@pytest.mark.parametrize("stack", ["network", "loader", "worker", "monitoring"])
def test_template_snapshot(templates, stack, snapshot_json):
    assert _masked(templates[stack]) == snapshot_json


def test_two_synths_give_identical_templates(templates, tmp_path):
    again = synth(tmp_path)
    for name, template in templates.items():
        assert again[name].to_json() == template.to_json()


def test_cdk_nag_finds_nothing_unsuppressed(outdir, templates):
    # Validation errors would have failed synth; the report must also say so. AwsSolutionsChecks
    # is applied to the app, so it covers every stack, the monitoring stack included.
    assert set(templates) == {"network", "loader", "worker", "monitoring"}
    report = json.loads((outdir / "validation-report.json").read_text())
    assert [plugin["pluginName"] for plugin in report["pluginReports"]] == ["AwsSolutions"]
    for plugin in report["pluginReports"]:
        assert plugin["conclusion"] == "success", plugin.get("violations")


def test_cfn_lint_finds_no_errors(outdir, templates):
    # Through cfn-lint's API: `python -m cfnlint` does not exist in cfn-lint 1.x, and a check
    # that only reads the output of a command that failed to start passes on nothing.
    from cfnlint.api import lint_file

    files = sorted(outdir.glob("*.template.json"))
    assert len(files) == len(templates) and outdir / "FsaAlerts-Monitoring.template.json" in files
    errors = [f"{f.name}: {match}" for f in files for match in lint_file(f) if match.rule.id.startswith("E")]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("nat_gateways", 5, "context key 'nat_gateways' = 5 is not allowed: Input should be less than or equal to 2"),
        ("lambda_architecture", "sparc", "'lambda_architecture' = 'sparc' is not allowed: Input should be 'arm64'"),
        ("log_retention_days", 10, "'log_retention_days' = 10 is not allowed: must be one of 1, 3, 5"),
        ("alarm_email", "ops", "'alarm_email' = 'ops' is not allowed: must be an e-mail address"),
        ("radius_km", "far", "'radius_km' = 'far' is not allowed: Input should be a valid number"),
        (
            "sources",
            [{"type": "json_feed", "name": "city", "url": "ftp://example.org/feed"}],
            "context key 'sources.0.url' = 'ftp://example.org/feed' is not allowed: String should match pattern",
        ),
    ],
)
def test_bad_context_value_stops_synth_with_one_line(key, value, expected, tmp_path):
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({**NO_BUNDLING, key: value}), "CDK_OUTDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "app.py"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


def test_context_values_from_the_cli_are_strings_and_still_validate():
    with pytest.raises(ConfigError, match="'nat_gateways' = '3'"):
        build_app(context={**NO_BUNDLING, "nat_gateways": "3"})
    _app, stacks = build_app(context={**NO_BUNDLING, "nat_gateways": "0"})
    assert set(stacks) == {"network", "loader", "worker", "monitoring"}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "sources",
            '[{"type": "rss", "name": "city"}]',
            "context key 'sources.0' = {'type': 'rss', 'name': 'city'} is not allowed: Input tag 'rss'",
        ),
        (
            "sources",
            [{"type": "s3_jsonl", "name": "a", "bucket": "bkt"}, {"type": "s3_jsonl", "name": "a", "bucket": "bkt"}],
            "is not allowed: source names must be unique: a repeated",
        ),
        (
            "sources",
            [{"type": "json_feed", "name": "city", "url": "https://x.org", "fields": {"attributes": {"fsa": "a"}}}],
            "context key 'sources.0.fields.attributes' = {'fsa': 'a'} is not allowed: 'fsa' is the routing",
        ),
        ("geocoder_place_index", "my index", "'geocoder_place_index' = 'my index' is not allowed: must be an Amazon"),
    ],
)
def test_bad_worker_settings_name_the_key_path(key, value, expected):
    with pytest.raises(ConfigError) as raised:
        build_app(context={**NO_BUNDLING, key: value})
    message = str(raised.value)
    assert "\n" not in message and expected in message, message


def test_sources_from_the_cli_are_a_json_string():
    sources = '[{"type": "georss", "name": "quakes", "url": "https://example.org/quakes.xml"}]'
    _app, stacks = build_app(context={**NO_BUNDLING, "sources": sources})
    env = _worker_function(Template.from_stack(stacks["worker"]))["Environment"]["Variables"]
    assert json.loads(env["SOURCES"])[0]["name"] == "quakes"
    with pytest.raises(ConfigError, match=r"^context key 'sources' = '\[\{' is not allowed: Expecting"):
        build_app(context={**NO_BUNDLING, "sources": "[{"})


def test_too_many_sources_for_the_lambda_environment_stop_synth():
    many = [{"type": "json_feed", "name": f"feed-{i}", "url": f"https://example.org/{i}"} for i in range(12)]
    with pytest.raises(ConfigError, match=r"^context key 'sources' = .* over 3500 \(Lambda allows 4 KB"):
        build_app(context={**NO_BUNDLING, "sources": many})
