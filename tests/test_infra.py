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


# ---------------------------------------------------------------- whole-app checks


# Asset hashes follow the code (tested for determinism below); masked here so a code change
# does not rewrite the snapshots. Update them with `make snapshot-update`.
_ASSET_HASH = re.compile(r"[0-9a-f]{64}")
_VERSION_ID = re.compile(r"CurrentVersion[0-9A-F]{8}[0-9a-f]{32}")


def _masked(template: Template) -> Any:
    text = _VERSION_ID.sub("CurrentVersion<hash>", _ASSET_HASH.sub("<asset-hash>", json.dumps(template.to_json())))
    return json.loads(text)


@pytest.mark.parametrize("stack", ["network", "loader"])
def test_template_snapshot(templates, stack, snapshot_json):
    assert _masked(templates[stack]) == snapshot_json


def test_two_synths_give_identical_templates(templates, tmp_path):
    again = synth(tmp_path)
    for name, template in templates.items():
        assert again[name].to_json() == template.to_json()


def test_cdk_nag_finds_nothing_unsuppressed(outdir):
    # Validation errors would have failed synth; the report must also say so.
    report = json.loads((outdir / "validation-report.json").read_text())
    for plugin in report["pluginReports"]:
        assert plugin["conclusion"] == "success", plugin.get("violations")


def test_cfn_lint_finds_no_errors(outdir, templates):
    files = sorted(str(p) for p in outdir.glob("*.template.json"))
    assert len(files) == len(templates)
    done = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "parseable", *files], capture_output=True, text=True, check=False
    )
    errors = [line for line in done.stdout.splitlines() if ":E" in line]
    assert not errors and done.returncode & 2 == 0, done.stdout


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("nat_gateways", 5, "context key 'nat_gateways' = 5 is not allowed: Input should be less than or equal to 2"),
        ("lambda_architecture", "sparc", "'lambda_architecture' = 'sparc' is not allowed: Input should be 'arm64'"),
        ("log_retention_days", 10, "'log_retention_days' = 10 is not allowed: must be one of 1, 3, 5"),
        ("alarm_email", "ops", "'alarm_email' = 'ops' is not allowed: must be an e-mail address"),
        ("radius_km", "far", "'radius_km' = 'far' is not allowed: Input should be a valid number"),
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
    assert set(stacks) == {"network", "loader"}
