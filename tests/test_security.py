"""Least privilege and data protection, asserted over the synthesized templates of every stack
``build_app`` returns (a stack added later is covered without touching this file).

Each check reads the CloudFormation JSON as deployed: IAM policies and roles, and every
resource policy found anywhere in a template (topic, queue, key, file system, bucket, ...).
Wildcards are refused unless ``ALLOWED_WILDCARDS`` lists them with the reason; docs/security.md
carries the same list. Bundling is skipped, as in test_infra.py.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stacks.application import build_app
from stacks.settings import cdk_json_context

# One process runs this module under `make test` (--dist loadgroup): two synths, not four.
pytestmark = pytest.mark.xdist_group("security-synth")

NO_BUNDLING = {"aws:cdk:bundling-stacks": []}
WORKER_HANDLER = "lambda_src.worker.handler.handler"
LOADER_HANDLER = "lambda_src.loader.handler.handler"

#: A second synth with s3_jsonl sources (one under a prefix, one reading a whole bucket) and
#: a geocoder, so the grants that only exist when configured are checked too.
S3_SOURCES = [
    {"type": "s3_jsonl", "name": "drop", "bucket": "partner-drop", "prefix": "postings/"},
    {"type": "s3_jsonl", "name": "archive", "bucket": "partner-archive"},
    {"type": "json_feed", "name": "city", "url": "https://example.org/feed.json"},
]
VARIANTS = {
    "defaults": {},
    "s3-sources": {"sources": S3_SOURCES, "geocoder_place_index": "fsa-places"},
}


# ---------------------------------------------------------------- the allow-lists


@dataclass(frozen=True)
class Wildcard:
    """A wildcard (in an action, or in a resource) that an Allow statement may carry."""

    holder_type: str  #: CloudFormation type of the resource holding the policy document
    actions: tuple[str, ...]  #: the actions it may go with, exactly as written
    value: str  #: regex the wildcard action or resource must match in full
    reason: str
    holder: str = r".*"  #: regex the holder's logical id must match in full
    principal: str | None = None  #: regex every principal of the statement must match
    condition_key: str | None = None  #: a condition key the statement must carry

    def allows(self, finding: Finding) -> bool:
        statement = finding.statement
        return (
            finding.holder_type == self.holder_type
            and re.fullmatch(self.holder, finding.holder) is not None
            and finding.action in self.actions
            and re.fullmatch(self.value, finding.value) is not None
            and (
                self.principal is None
                or (bool(statement.principals) and all(re.fullmatch(self.principal, p) for p in statement.principals))
            )
            and (self.condition_key is None or self.condition_key in statement.condition_keys)
        )


VPC_ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
ACCOUNT_ROOT = r"AWS:arn:\$\{AWS::Partition\}:iam::\$\{AWS::AccountId\}:root"
#: ``arn:<partition>:s3:::<literal bucket>/<literal prefix>*``: no wildcard in bucket or prefix.
S3_SOURCE_OBJECTS = r"arn:\$\{AWS::Partition\}:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^*?]*\*"

#: Every wildcard the app may grant. docs/security.md has the same table; keep them in step.
ALLOWED_WILDCARDS = (
    Wildcard(
        "AWS::IAM::Policy",
        VPC_ENI_ACTIONS,
        r"\*",
        "a Lambda in a VPC manages its network interfaces with these; the AWS managed "
        "AWSLambdaVPCAccessExecutionRole grants them on '*' too (PythonFunction)",
        holder=r".*RoleDefaultPolicy[0-9A-F]{8}",
    ),
    Wildcard(
        "AWS::IAM::Policy",
        ("xray:PutTraceSegments", "xray:PutTelemetryRecords"),
        r"\*",
        "active X-Ray tracing: these X-Ray actions support no resource-level permissions",
        holder=r".*RoleDefaultPolicy[0-9A-F]{8}",
    ),
    Wildcard(
        "AWS::IAM::Policy",
        ("cloudwatch:PutMetricData",),
        r"\*",
        "PutMetricData supports no resource-level permissions; allowed only when scoped to a "
        "namespace by the cloudwatch:namespace condition",
        condition_key="cloudwatch:namespace",
    ),
    Wildcard(
        "AWS::KMS::Key",
        ("kms:*",),
        r"kms:\*|\*",
        "CDK's default key policy statement: the account root may administer the key, which "
        "delegates access to IAM policies; in a key policy the resource '*' is the key itself",
        principal=ACCOUNT_ROOT,
    ),
    Wildcard(
        "AWS::KMS::Key",
        ("kms:GenerateDataKey*", "kms:Decrypt"),
        r"kms:GenerateDataKey\*|\*",
        "SNS (service principal, this account only) encrypts/decrypts with the topic key, also "
        "when it delivers into a subscriber queue encrypted with it; '*' is the key itself",
        principal=r"Service:sns\.amazonaws\.com",
        condition_key="aws:SourceAccount",
    ),
    Wildcard(
        "AWS::KMS::Key",
        ("kms:GenerateDataKey*", "kms:Decrypt"),
        r"kms:GenerateDataKey\*|\*",
        "CloudWatch alarms publish into the KMS-encrypted operations topic, so CloudWatch needs "
        "data keys from its key; '*' is the key itself",
        holder=r"OperationsKey[0-9A-F]{8}",
        principal=r"Service:cloudwatch\.amazonaws\.com",
    ),
    Wildcard(
        "AWS::IAM::Role",
        ("lambda:InvokeFunction",),
        r"\$\{Loader\w*\.Arn\}:\*",
        "CDK triggers' custom resource provider (CDK internals) invokes the loader's current "
        "version, a qualified ARN that changes with every new version",
        holder=r"AWSCDKTriggerCustomResourceProvider\w*Role\w*",
    ),
    Wildcard(
        "AWS::IAM::Policy",
        ("s3:GetObject",),
        S3_SOURCE_OBJECTS,
        "objects under a configured s3_jsonl source's bucket/prefix: new objects arrive there "
        "under names nobody knows in advance (only when such a source is configured)",
        holder=r"WorkerRoleDefaultPolicy[0-9A-F]{8}",
    ),
)

#: AWS managed policies that CDK internals attach to their own roles (logical id regex, ARN).
ALLOWED_MANAGED_POLICIES = (
    (
        r"AWSCDKTriggerCustomResourceProvider\w*Role\w*",
        "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    ),
)


# ---------------------------------------------------------------- reading templates


def render(value: Any) -> str:
    """A template value as one string: ``Ref``/``GetAtt``/``ImportValue`` as ``${...}``,
    ``Fn::Join`` joined, ``Fn::Sub`` as written, so patterns and wildcards are visible."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return "${" + arg + "}"
        if fn == "Fn::GetAtt":
            return "${" + (".".join(arg) if isinstance(arg, list) else arg) + "}"
        if fn == "Fn::Join":
            separator, parts = arg
            return separator.join(render(part) for part in parts)
        if fn == "Fn::Sub":
            return arg if isinstance(arg, str) else arg[0]
        if fn == "Fn::ImportValue":
            return "${Import:" + render(arg) + "}"
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def principals(value: Any) -> list[str]:
    """``"*"`` -> ``["AWS:*"]``; ``{"Service": "sns.amazonaws.com"}`` -> ``["Service:sns.amazonaws.com"]``."""
    if value is None:
        return []
    if value == "*":
        return ["AWS:*"]
    if isinstance(value, dict) and all(k in ("AWS", "Service", "Federated", "CanonicalUser") for k in value):
        return [f"{kind}:{render(v)}" for kind, items in value.items() for v in as_list(items)]
    return [f"?:{render(value)}"]


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    principals: tuple[str, ...]
    condition: dict[str, Any]
    raw: dict[str, Any]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Statement:
        return cls(
            effect=raw.get("Effect", ""),
            actions=tuple(render(a) for a in as_list(raw.get("Action"))),
            resources=tuple(render(r) for r in as_list(raw.get("Resource"))),
            principals=tuple(principals(raw.get("Principal"))),
            condition=raw.get("Condition") or {},
            raw=raw,
        )

    @property
    def condition_keys(self) -> set[str]:
        return {key for operator in self.condition.values() for key in operator}

    def grants(self, action: str) -> bool:
        """Whether an Allow of this statement covers ``action`` (IAM wildcards, any case)."""
        return self.effect == "Allow" and any(
            re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), action, re.IGNORECASE)
            for pattern in self.actions
        )


@dataclass(frozen=True)
class Document:
    """A policy document found in a template, and the resource that holds it."""

    stack: str
    holder: str
    holder_type: str
    path: str
    statements: tuple[Statement, ...]

    @property
    def where(self) -> str:
        return f"{self.stack}/{self.holder}{self.path}"


def _documents_in(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, str) and value.lstrip().startswith("{") and '"Statement"' in value:
        try:  # e.g. AWS::Logs::ResourcePolicy takes its document as a JSON string
            value = json.loads(value)
        except json.JSONDecodeError:
            return
    if isinstance(value, dict):
        if isinstance(value.get("Statement"), list | dict):
            yield path, value
            return
        for key, item in value.items():
            yield from _documents_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _documents_in(item, f"{path}[{i}]")


@dataclass
class App:
    """One synthesized app: every stack's template by short name."""

    name: str
    context: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    stack_names: dict[str, str] = field(default_factory=dict)

    def resources(self, type_: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for stack, template in self.templates.items():
            for logical_id, resource in template.get("Resources", {}).items():
                if type_ is None or resource["Type"] == type_:
                    yield stack, logical_id, resource

    def documents(self) -> list[Document]:
        found = []
        for stack, logical_id, resource in self.resources():
            for path, document in _documents_in(resource.get("Properties", {})):
                statements = tuple(Statement.of(s) for s in as_list(document["Statement"]))
                found.append(Document(stack, logical_id, resource["Type"], path, statements))
        return found

    def function(self, handler: str) -> tuple[str, str, dict[str, Any]]:
        found = [
            (stack, logical_id, resource["Properties"])
            for stack, logical_id, resource in self.resources("AWS::Lambda::Function")
            if resource["Properties"].get("Handler") == handler
        ]
        assert len(found) == 1, f"expected one function with handler {handler}, found {found}"
        return found[0]

    def role_of(self, handler: str) -> tuple[str, str, dict[str, Any]]:
        stack, _function_id, props = self.function(handler)
        role_id = props["Role"]["Fn::GetAtt"][0]
        return stack, role_id, self.templates[stack]["Resources"][role_id]

    def role_statements(self, handler: str) -> list[Statement]:
        """Every statement that applies to the role of the function with ``handler``: its inline
        policies and each AWS::IAM::Policy or ManagedPolicy of any stack attached to it."""
        stack, role_id, role = self.role_of(handler)
        statements = [
            Statement.of(s)
            for policy in role["Properties"].get("Policies", [])
            for s in as_list(policy["PolicyDocument"]["Statement"])
        ]
        for other, _logical_id, resource in self.resources():
            if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                continue
            roles = resource["Properties"].get("Roles", [])
            if any(_is_role(ref, other == stack, role_id) for ref in roles):
                statements += [Statement.of(s) for s in as_list(resource["Properties"]["PolicyDocument"]["Statement"])]
        return statements


def _is_role(ref: Any, same_stack: bool, role_id: str) -> bool:
    if same_stack:
        return ref == {"Ref": role_id}
    return isinstance(ref, dict) and "Fn::ImportValue" in ref and role_id in render(ref["Fn::ImportValue"])


def synth(outdir: Path, name: str, overrides: dict[str, Any]) -> App:
    context = {**cdk_json_context(), **NO_BUNDLING, **overrides}
    app, stacks = build_app(context=context, outdir=str(outdir))
    app.synth()
    templates = {short: json.loads((outdir / stack.template_file).read_text()) for short, stack in stacks.items()}
    return App(name, context, templates, {short: stack.stack_name for short, stack in stacks.items()})


_SYNTHS: dict[str, App] = {}


def synthesized(variant: str, tmp_path_factory: pytest.TempPathFactory) -> App:
    """Each variant is synthesized once per test process."""
    if variant not in _SYNTHS:
        _SYNTHS[variant] = synth(tmp_path_factory.mktemp(f"cdk.out.{variant}"), variant, VARIANTS[variant])
    return _SYNTHS[variant]


@pytest.fixture(scope="module", params=list(VARIANTS))
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> App:
    return synthesized(request.param, tmp_path_factory)


# ---------------------------------------------------------------- the checks as functions


@dataclass(frozen=True)
class Finding:
    where: str
    holder: str
    holder_type: str
    action: str
    value: str
    statement: Statement

    def __str__(self) -> str:
        return f"{self.where}: {self.action} -> {self.value} (principals {list(self.statement.principals)})"


def wildcard_findings(documents: list[Document]) -> list[Finding]:
    """Every wildcard action or resource of every Allow statement (a Deny may be broad: it only
    takes away). NotAction/NotResource in an Allow are findings no allow-list entry matches."""
    findings = []
    for doc in documents:
        for statement in doc.statements:
            if statement.effect != "Allow":
                continue
            for negated in ("NotAction", "NotResource", "NotPrincipal"):
                if negated in statement.raw:
                    findings.append(Finding(doc.where, doc.holder, doc.holder_type, negated, negated, statement))
            for action in statement.actions:
                if "*" in action or "?" in action:
                    findings.append(Finding(doc.where, doc.holder, doc.holder_type, action, action, statement))
                for resource in statement.resources:
                    if "*" in resource or "?" in resource:
                        findings.append(Finding(doc.where, doc.holder, doc.holder_type, action, resource, statement))
    return findings


def unlisted(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if not any(entry.allows(f) for entry in ALLOWED_WILDCARDS)]


def public_statements(documents: list[Document]) -> list[str]:
    """Allow statements open to everyone (principal ``*``) with no condition to narrow them."""
    return [
        f"{doc.where}: {json.dumps(s.raw)}"
        for doc in documents
        for s in doc.statements
        if s.effect == "Allow" and "AWS:*" in s.principals and not s.condition
    ]


SECRET_KEY = re.compile(r"(?i)pass(word|wd|phrase)?$|passw|secret|token|api[_-]?key|private[_-]?key|credential")
SECRET_VALUE = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(
        r"\b(ghp|gho|ghs|ghu)_[A-Za-z0-9]{36}\b|\bgithub_pat_\w{40,}|\bxox[abposr]-[\w-]{10,}|\bsk_live_\w{16,}"
    ),
    re.compile(r"(?i)\w+://[^/\s:@\"]+:[^/\s@\"]+@"),  # credentials in a URL's userinfo
    re.compile(r"(?i)[?&](api[_-]?key|access[_-]?token|token|secret|password|passwd|sig|signature)=[^&\s\"]+"),
]


def secret_findings(template: dict[str, Any]) -> list[str]:
    """Literal values that look like credentials, and keys named like secrets holding a literal
    (a reference such as ``Ref``, an ARN or a ``{{resolve:...}}`` dynamic reference is fine)."""
    findings = [f"value matching {p.pattern!r}" for p in SECRET_VALUE if p.search(json.dumps(template))]

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                literal = isinstance(item, str | int | float) and not isinstance(item, bool) and str(item).strip()
                if SECRET_KEY.search(key) and literal and not re.match(r"arn:|\{\{resolve:", str(item)):
                    findings.append(f"{path}.{key} is a literal {type(item).__name__}")
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            with contextlib.suppress(json.JSONDecodeError):  # JSON in a string, e.g. SOURCES
                walk(json.loads(value), path + "<json>")

    walk(template, "")
    return findings


# ---------------------------------------------------------------- the checkers catch what they should


def test_the_checkers_catch_what_they_should():
    doc = Document(
        "S",
        "Policy",
        "AWS::IAM::Policy",
        "",
        tuple(
            Statement.of(s)
            for s in [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/k"},
                {"Effect": "Allow", "Action": "ec2:CreateNetworkInterface", "Resource": "*"},
                {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"},
                {"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": "arn:q"},
                {"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"},
            ]
        ),
    )
    # the ENI grant sits in a policy named like CDK's role policies, this one is not
    assert len(unlisted(wildcard_findings([doc]))) == 3
    assert len(public_statements([doc])) == 1
    assert Statement.of({"Effect": "Allow", "Action": "sqs:Send*"}).grants("sqs:SendMessage")
    assert not Statement.of({"Effect": "Deny", "Action": "*"}).grants("sqs:SendMessage")
    template = {
        "Resources": {
            "F": {
                "Properties": {
                    "Environment": {"Variables": {"DB_PASSWORD": "hunter2", "TOKEN_ARN": {"Ref": "T"}}},
                    "Sources": json.dumps([{"url": "https://u:p@example.org/x?api_key=1"}]),
                    "Key": "AKIAABCDEFGHIJKLMNOP",
                }
            }
        }
    }
    found = secret_findings(template)
    assert any("DB_PASSWORD" in f for f in found) and not any("TOKEN_ARN" in f for f in found)
    assert sum("value matching" in f for f in found) == 3, found


# ---------------------------------------------------------------- every stack


def test_every_stack_is_checked(app):
    assert {"network", "loader", "worker"} <= set(app.templates)
    assert all(template.get("Resources") for template in app.templates.values())


def test_no_wildcard_beyond_the_allow_list(app):
    assert unlisted(wildcard_findings(app.documents())) == []


def test_every_allow_list_entry_is_still_needed(tmp_path_factory):
    """A stale entry would quietly allow a wildcard later: each must match something."""
    findings = [
        f for variant in VARIANTS for f in wildcard_findings(synthesized(variant, tmp_path_factory).documents())
    ]
    used = {entry for f in findings for entry in ALLOWED_WILDCARDS if entry.allows(f)}
    # PutMetricData is kept for a stack to come: the worker publishes its metrics as EMF log
    # lines and needs no grant today.
    expected = {entry for entry in ALLOWED_WILDCARDS if entry.actions != ("cloudwatch:PutMetricData",)}
    assert expected <= used, [entry.reason for entry in expected - used]


def test_no_aws_managed_policies_on_the_projects_roles(app):
    attached = []
    for stack, logical_id, resource in app.resources("AWS::IAM::Role"):
        for arn in map(render, resource["Properties"].get("ManagedPolicyArns", [])):
            if ":iam::aws:policy/" in arn and not any(
                re.fullmatch(role, logical_id) and arn == allowed for role, allowed in ALLOWED_MANAGED_POLICIES
            ):
                attached.append(f"{stack}/{logical_id}: {arn}")
    assert attached == []


def test_roles_are_assumed_by_aws_services_only(app):
    trusts = [
        (f"{stack}/{logical_id}", s)
        for stack, logical_id, resource in app.resources("AWS::IAM::Role")
        for s in map(Statement.of, as_list(resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]))
    ]
    assert trusts
    for where, statement in trusts:
        assert statement.principals and all(p.startswith("Service:") for p in statement.principals), where
        assert statement.actions == ("sts:AssumeRole",), where


def test_nothing_is_public(app):
    assert public_statements(app.documents()) == []
    open_ingress = []
    for stack, logical_id, resource in app.resources():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            rules = [props]
        elif resource["Type"] == "AWS::EC2::SecurityGroup":
            rules = props.get("SecurityGroupIngress", [])
        else:
            rules = []
        open_ingress += [
            f"{stack}/{logical_id}: {rule}"
            for rule in rules
            if rule.get("CidrIp") == "0.0.0.0/0" or rule.get("CidrIpv6") == "::/0"
        ]
    assert open_ingress == []
    for stack, logical_id, resource in app.resources("AWS::Lambda::Permission"):
        props = resource["Properties"]
        assert props["Principal"] != "*", f"{stack}/{logical_id}"
        assert "SourceArn" in props or "SourceAccount" in props, f"{stack}/{logical_id} names no source"
    for stack, logical_id, resource in app.resources("AWS::Lambda::Url"):
        assert resource["Properties"]["AuthType"] != "NONE", f"{stack}/{logical_id}"


def test_no_secrets_in_templates_or_lambda_environments(app):
    for stack, template in app.templates.items():
        assert secret_findings(template) == [], stack
    for stack, logical_id, resource in app.resources("AWS::Lambda::Function"):
        env = resource["Properties"].get("Environment", {}).get("Variables", {})
        assert secret_findings({"Variables": env}) == [], f"{stack}/{logical_id}"


# ---------------------------------------------------------------- data protection


def _resource_policies(app: App, policy_type: str, list_key: str, target: dict[str, Any]) -> list[Statement]:
    return [
        Statement.of(s)
        for _stack, _id, policy in app.resources(policy_type)
        if target in policy["Properties"][list_key]
        for s in as_list(policy["Properties"]["PolicyDocument"]["Statement"])
    ]


def _denies_without_tls(statements: list[Statement] | tuple[Statement, ...], action: str) -> bool:
    return any(
        s.effect == "Deny"
        and "AWS:*" in s.principals
        and s.condition == {"Bool": {"aws:SecureTransport": "false"}}
        and (action in s.actions or "*" in s.actions or f"{action.split(':')[0]}:*" in s.actions)
        for s in statements
    )


def test_topics_are_kms_encrypted_and_ssl_only(app):
    topics = list(app.resources("AWS::SNS::Topic"))
    assert topics
    for stack, logical_id, topic in topics:
        assert topic["Properties"].get("KmsMasterKeyId"), f"{stack}/{logical_id} is not KMS-encrypted"
        statements = _resource_policies(app, "AWS::SNS::TopicPolicy", "Topics", {"Ref": logical_id})
        assert _denies_without_tls(statements, "sns:Publish"), f"{stack}/{logical_id} is not SSL-only"


def test_queues_are_encrypted_and_ssl_only(app):
    queues = list(app.resources("AWS::SQS::Queue"))
    assert queues
    for stack, logical_id, queue in queues:
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or props.get("KmsMasterKeyId"), f"{stack}/{logical_id}"
        statements = _resource_policies(app, "AWS::SQS::QueuePolicy", "Queues", {"Ref": logical_id})
        assert _denies_without_tls(statements, "sqs:SendMessage"), f"{stack}/{logical_id} is not SSL-only"


def test_buckets_block_public_access_and_are_encrypted(app):
    # No stack has a bucket today (the datasets are CDK assets in the bootstrap bucket); any
    # bucket a stack adds must block public access and be encrypted.
    for stack, logical_id, bucket in app.resources("AWS::S3::Bucket"):
        props = bucket["Properties"]
        block = props.get("PublicAccessBlockConfiguration", {})
        flags = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        assert all(block.get(flag) is True for flag in flags), f"{stack}/{logical_id}"
        assert props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration"), f"{stack}/{logical_id}"


def test_file_systems_are_encrypted_and_deny_non_tls(app):
    file_systems = list(app.resources("AWS::EFS::FileSystem"))
    assert len(file_systems) == 1
    for stack, logical_id, fs in file_systems:
        props = fs["Properties"]
        assert props.get("Encrypted") is True, f"{stack}/{logical_id}"
        statements = [Statement.of(s) for s in as_list(props["FileSystemPolicy"]["Statement"])]
        assert _denies_without_tls(statements, "elasticfilesystem:ClientMount"), f"{stack}/{logical_id}"


def test_log_groups_have_retention(app):
    log_groups = list(app.resources("AWS::Logs::LogGroup"))
    assert len(log_groups) >= 3  # flow logs, loader, worker
    for stack, logical_id, log_group in log_groups:
        assert isinstance(log_group["Properties"].get("RetentionInDays"), int), f"{stack}/{logical_id}"


def test_project_functions_log_to_their_own_group_with_retention(app):
    """A function without LoggingConfig gets a group Lambda creates on first use, kept forever.
    Only CDK's trigger provider (it logs one line per deploy) is left like that."""
    for stack, logical_id, function in app.resources("AWS::Lambda::Function"):
        if logical_id.startswith("AWSCDKTriggerCustomResourceProvider"):
            continue
        group = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
        assert group and "Ref" in group, f"{stack}/{logical_id}"
        assert app.templates[stack]["Resources"][group["Ref"]]["Type"] == "AWS::Logs::LogGroup"


def test_tables_are_encrypted_with_point_in_time_recovery(app):
    assert not list(app.resources("AWS::DynamoDB::GlobalTable")), "extend this test to global tables"
    tables = list(app.resources("AWS::DynamoDB::Table"))
    assert tables
    for stack, logical_id, table in tables:
        props = table["Properties"]
        assert props.get("SSESpecification", {}).get("SSEEnabled") is True, f"{stack}/{logical_id}"
        pitr = props.get("PointInTimeRecoverySpecification", {})
        assert pitr.get("PointInTimeRecoveryEnabled") is True, f"{stack}/{logical_id}"


def test_kms_keys_rotate(app):
    for stack, logical_id, key in app.resources("AWS::KMS::Key"):
        assert key["Properties"].get("EnableKeyRotation") is True, f"{stack}/{logical_id}"


# ---------------------------------------------------------------- the worker's role


def _services(statements: list[Statement]) -> set[str]:
    return {a.split(":")[0] for s in statements if s.effect == "Allow" for a in s.actions}


def _worker_resources(app: App) -> dict[str, str]:
    """The worker's own resources, rendered as they appear in its policy: found through its
    environment and its asynchronous invocation config, not by name."""
    stack, function_id, props = app.function(WORKER_HANDLER)
    resources = app.templates[stack]["Resources"]
    env = props["Environment"]["Variables"]
    topic_id = env["TOPIC_ARN"]["Ref"]
    table_id = env["STATE_TABLE"]["Ref"]
    dlq_id = env["DLQ_URL"]["Ref"]
    [config] = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventInvokeConfig" and r["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    failed_runs_id = config["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert resources[failed_runs_id]["Type"] == "AWS::SQS::Queue"
    return {
        "topic": render({"Ref": topic_id}),
        "key": render(resources[topic_id]["Properties"]["KmsMasterKeyId"]),
        "table": render({"Fn::GetAtt": [table_id, "Arn"]}),
        "dlq": render({"Fn::GetAtt": [dlq_id, "Arn"]}),
        "failed_runs": render({"Fn::GetAtt": [failed_runs_id, "Arn"]}),
        "log_group": render({"Fn::GetAtt": [props["LoggingConfig"]["LogGroup"]["Ref"], "Arn"]}),
    }


def _granting(statements: list[Statement], prefix: str) -> list[Statement]:
    return [s for s in statements if s.effect == "Allow" and any(a.lower().startswith(prefix) for a in s.actions)]


def test_worker_may_only_mount_the_index_read_only(app):
    statements = app.role_statements(WORKER_HANDLER)
    efs = _granting(statements, "elasticfilesystem:")
    assert len(efs) == 1 and efs[0].actions == ("elasticfilesystem:ClientMount",)
    assert "elasticfilesystem:AccessPointArn" in efs[0].condition["StringEquals"]
    for action in ("elasticfilesystem:ClientWrite", "elasticfilesystem:ClientRootAccess"):
        assert not any(s.grants(action) for s in statements), action


def test_worker_grants_are_on_its_own_resources_only(app):
    statements = app.role_statements(WORKER_HANDLER)
    own = _worker_resources(app)
    expected_services = {"logs", "ec2", "xray", "elasticfilesystem", "sns", "kms", "dynamodb", "sqs"}
    settings_sources = app.context["sources"]
    s3_sources = [s for s in settings_sources if s["type"] == "s3_jsonl"]
    if s3_sources:
        expected_services.add("s3")
    if app.context["geocoder_place_index"]:
        expected_services.add("geo")
    assert _services(statements) == expected_services

    def resources_of(prefix: str) -> set[str]:
        return {r for s in _granting(statements, prefix) for r in s.resources}

    assert {r for s in statements if s.grants("sns:Publish") for r in s.resources} == {own["topic"]}
    assert resources_of("sns:") == {own["topic"]}
    assert resources_of("dynamodb:") == {own["table"]}
    assert resources_of("logs:") == {own["log_group"]}
    # SendMessage on exactly its two queues; CDK's SqsDestination adds two read-only calls.
    assert {r for s in statements if s.grants("sqs:SendMessage") for r in s.resources} == {
        own["dlq"],
        own["failed_runs"],
    }
    assert resources_of("sqs:") == {own["dlq"], own["failed_runs"]}
    sqs_actions = {a for s in _granting(statements, "sqs:") for a in s.actions}
    assert sqs_actions <= {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    kms = _granting(statements, "kms:")
    assert {r for s in kms for r in s.resources} == {own["key"]}
    assert all("kms:ViaService" in s.condition_keys for s in kms)


def test_worker_reads_s3_only_where_its_sources_are(app):
    statements = app.role_statements(WORKER_HANDLER)
    s3 = _granting(statements, "s3:")
    sources = [s for s in app.context["sources"] if s["type"] == "s3_jsonl"]
    if not sources:
        assert s3 == []
        return
    assert {a for s in s3 for a in s.actions} == {"s3:ListBucket", "s3:GetObject"}
    partition = "arn:${AWS::Partition}:s3:::"
    expected_objects = {f"{partition}{s['bucket']}/{s.get('prefix', '')}*" for s in sources}
    assert {r for s in s3 if "s3:GetObject" in s.actions for r in s.resources} == expected_objects
    listing = {r: s for s in s3 if "s3:ListBucket" in s.actions for r in s.resources}
    assert set(listing) == {f"{partition}{s['bucket']}" for s in sources}
    for source in sources:
        statement = listing[f"{partition}{source['bucket']}"]
        if source.get("prefix"):
            assert f"{source['prefix']}*" in statement.condition["StringLike"]["s3:prefix"]
        else:
            assert not statement.condition  # a source that reads the whole bucket lists all of it


def test_worker_geocodes_only_with_its_place_index(app):
    geo = _granting(app.role_statements(WORKER_HANDLER), "geo:")
    index = app.context["geocoder_place_index"]
    if not index:
        assert geo == []
        return
    assert [s.actions for s in geo] == [("geo:SearchPlaceIndexForText",)]
    [[resource]] = [s.resources for s in geo]
    assert resource.endswith(f":place-index/{index}")


# ---------------------------------------------------------------- the loader's role


def test_loader_writes_efs_only_through_the_access_point(app):
    statements = app.role_statements(LOADER_HANDLER)
    efs = _granting(statements, "elasticfilesystem:")
    assert len(efs) == 1
    assert set(efs[0].actions) == {"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}
    access_point = render(efs[0].condition["StringEquals"]["elasticfilesystem:AccessPointArn"])
    _stack, _id, props = app.function(LOADER_HANDLER)
    assert access_point == render(props["FileSystemConfigs"][0]["Arn"])  # the one it mounts
    assert not any(s.grants("elasticfilesystem:ClientRootAccess") for s in statements)


def test_loader_reads_only_its_two_dataset_objects(app):
    statements = app.role_statements(LOADER_HANDLER)
    assert _services(statements) == {"logs", "ec2", "xray", "elasticfilesystem", "s3"}
    s3 = _granting(statements, "s3:")
    assert [s.actions for s in s3] == [("s3:GetObject",)]
    _stack, _id, props = app.function(LOADER_HANDLER)
    env = props["Environment"]["Variables"]
    bucket = render(env["DATASET_BUCKET"])
    expected = {
        f"arn:${{AWS::Partition}}:s3:::{bucket}/{env[key]}" for key in ("FSA_DATASET_KEY", "POSTAL_DATASET_KEY")
    }
    assert set(s3[0].resources) == expected and len(s3[0].resources) == 2
