"""A batch as steps, the way the Terraform module's Step Functions state machine runs it: the
execution input from ``datafactory batch ... --plan sfn``, the state machine's definition
(``deploy/stepfunctions/batch.asl.json.tftpl``) walked state by state, each ECS task's
container command run here as ``datafactory ...``, the shards sharing a PostgreSQL ledger and
moto's S3. The files and the manifest's file list are the same bytes as one
``datafactory batch`` with the same shards writes.

(moto's Step Functions cannot run ``ecs:runTask.sync`` tasks, and there is no AWS here: the
walk below interprets the states this definition uses — Map, Task, Pass, Fail, Succeed, with
Retry and Catch — and fails on anything else, so the definition cannot drift from what is
tested without the test saying so.)"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from datafactory.lifecycle.local import Moto

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ASL = ROOT / "deploy" / "stepfunctions" / "batch.asl.json.tftpl"
VALIDATOR = ROOT / "build" / "npm" / "node_modules" / ".bin" / "asl-validator"
LEDGER = "postgresql://postgres@127.0.0.1:5432/test"
CLI = [sys.executable, "-m", "datafactory"]
AWS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}

RETAIL = """
run: {{name: hist, seed: 11}}
packs:
  retail:
    params: {{stores: 6, customers: 3000, skus: 400, expected_daily_transactions: 300}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 0.004}}}}
      inventory_movement: {{}}
      return: {{}}
      price_change: {{}}
      customer_event: {{}}
sinks: {{none: {{type: stdout}}}}
batch: {{endpoint_url: "{endpoint}", format: jsonl}}
"""
WINDOW = ["--start", "2026-01-01", "--end", "2026-01-04"]


def render(template: str, **values: Any) -> str:
    """Terraform's templatefile() for the two forms the template uses: ${name} and
    ${jsonencode(name)}."""

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr.startswith("jsonencode(") and expr.endswith(")"):
            return json.dumps(values[expr[len("jsonencode(") : -1]])
        return str(values[expr])

    return re.sub(r"\$\{([^}]+)\}", sub, template)


def definition() -> dict[str, Any]:
    text = render(
        ASL.read_text(),
        cluster_arn="arn:aws:ecs:eu-west-1:123456789012:cluster/acme-datafactory",
        task_definition_arn="arn:aws:ecs:eu-west-1:123456789012:task-definition/acme-batch:1",
        container_name="datafactory",
        subnets=["subnet-0a1b2c3d"],
        security_groups=["sg-0a1b2c3d"],
        max_concurrency=4,
        max_attempts=3,
    )
    out: dict[str, Any] = json.loads(text)
    return out


def test_the_state_machine_definition_is_valid_asl(tmp_path: Path) -> None:
    path = tmp_path / "batch.asl.json"
    path.write_text(json.dumps(definition()))
    r = subprocess.run([str(VALIDATOR), "--json-path", str(path)], capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    broken = definition()
    broken["States"]["WriteManifest"]["Next"] = "Nowhere"  # the validator does check
    path.write_text(json.dumps(broken))
    assert subprocess.run([str(VALIDATOR), "--json-path", str(path)]).returncode != 0


def dollar(doc: Any, path: str) -> Any:
    """The JSONPath subset the definition uses: $, $.a, $.a.b."""
    assert path == "$" or re.fullmatch(r"\$(\.[A-Za-z_]\w*)+", path), path
    for part in path.split(".")[1:]:
        doc = doc[part]
    return doc


class Walk:
    """Runs a state machine's states here; an ECS task is its container command run as the
    CLI (with the environment a task gets: the ledger URL, AWS credentials)."""

    def __init__(self, env: dict[str, str], task_config: Path) -> None:
        self.env, self.task_config = env, task_config
        self.commands: list[list[str]] = []

    def run(self, machine: dict[str, Any], data: Any) -> Any:
        name = machine["StartAt"]
        while True:
            state = machine["States"][name]
            kind = state["Type"]
            try:
                if kind == "Map":
                    items = dollar(data, state["ItemsPath"])
                    results = [self.run(state["ItemProcessor"], item) for item in items]
                    out = self._result(state, data, results)
                elif kind == "Task":
                    out = self._result(state, data, self._task(state, data))
                elif kind == "Pass":
                    params = state.get("Parameters")
                    out = data if params is None else self._params(params, data)
                elif kind == "Fail":
                    raise RuntimeError(f"{state['Error']}: {json.dumps(data)[:2000]}")
                elif kind == "Succeed":
                    return data
                else:
                    raise AssertionError(f"the walk does not know state type {kind}")
            except TaskFailed as e:
                catch = next(iter(state.get("Catch", [])), None)
                if catch is None:
                    raise
                data = {**data, catch["ResultPath"][2:]: {"Error": "States.TaskFailed",
                                                          "Cause": str(e)}}  # fmt: skip
                name = catch["Next"]
                continue
            if state.get("End"):
                return out
            data, name = out, state["Next"]

    def _params(self, params: dict[str, Any], data: Any) -> dict[str, Any]:
        return {
            (k[:-2] if k.endswith(".$") else k): (dollar(data, v) if k.endswith(".$") else v)
            for k, v in params.items()
        }

    def _result(self, state: dict[str, Any], data: Any, result: Any) -> Any:
        if "ResultPath" not in state:
            return result
        path = state["ResultPath"]
        if path is None:
            return data
        return {**data, path[2:]: result}

    def _task(self, state: dict[str, Any], data: Any) -> Any:
        assert state["Resource"] == "arn:aws:states:::ecs:runTask.sync"
        (override,) = state["Parameters"]["Overrides"]["ContainerOverrides"]
        command = dollar(data, override["Command.$"])
        attempts = 1 + max((r["MaxAttempts"] for r in state.get("Retry", [])), default=0)
        for _ in range(attempts):
            self.commands.append(command)
            r = subprocess.run([*CLI, *command], capture_output=True, env=self.env, timeout=300)
            if r.returncode == 0:
                return {"task": "local", "stdout": r.stdout.decode()}
        raise TaskFailed(r.stderr.decode()[-2000:])


class TaskFailed(Exception):
    pass


def client(moto: Moto) -> Any:
    return boto3.client(
        "s3", endpoint_url=moto.endpoint, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",
    )  # fmt: skip


def s3_files(moto: Moto, bucket: str, prefix: str) -> dict[str, str]:
    s3 = client(moto)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            key = o["Key"][len(prefix) :]
            if key.startswith(("_state/", "_manifests/")):
                continue
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            out[key] = hashlib.sha256(body).hexdigest()
    return out


def manifest(moto: Moto, bucket: str, prefix: str) -> dict[str, Any]:
    s3 = client(moto)
    (obj,) = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "_manifests/")["Contents"]
    doc: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return doc


def test_a_batch_run_by_the_state_machine_writes_what_one_batch_does(
    tmp_path: Path, moto: Moto
) -> None:
    import os

    cfg = tmp_path / "history.yaml"
    cfg.write_text(RETAIL.format(endpoint=moto.endpoint))
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **AWS, "DATAFACTORY_LEDGER": LEDGER}
    whole = subprocess.run(
        [*CLI, "batch", str(cfg), *WINDOW, "--shards", "3", "--workers", "2", "--no-progress",
         "--out", f"s3://{bucket}/whole/", "--ledger", f"sqlite:///{tmp_path}/whole.db"],
        capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr.decode()[-3000:]

    out = f"s3://{bucket}/steps/"
    plan = subprocess.run(
        [*CLI, "batch", str(cfg), *WINDOW, "--shards", "3", "--out", out, "--plan", "sfn",
         "--task-config", str(cfg)],
        capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr.decode()
    execution_input = json.loads(plan.stdout)
    assert [s["shard"] for s in execution_input["shards"]] == [0, 1, 2]

    walk = Walk(env, cfg)
    result = walk.run(definition(), execution_input)
    assert "error" not in result, result
    steps = [c[c.index("--shard") :] if "--shard" in c else c[-1:] for c in walk.commands]
    assert steps == [["--shard", "0"], ["--shard", "1"], ["--shard", "2"], ["--finish"]]
    finished = json.loads(result["manifest_task"]["stdout"])
    assert finished["batch_id"] == execution_input["batch_id"]

    a, b = s3_files(moto, bucket, "whole/"), s3_files(moto, bucket, "steps/")
    assert len(a) > 20 and a == b  # every data file, byte for byte
    ma, mb = manifest(moto, bucket, "whole/"), manifest(moto, bucket, "steps/")
    assert ma["files"] == mb["files"] and ma["totals"] == mb["totals"]
    assert mb["partitions"] == {"shards": 3, "days": 4, "finished": 12}


def test_finishing_before_every_shard_is_written_says_which_are_missing(
    tmp_path: Path, moto: Moto
) -> None:
    import os

    cfg = tmp_path / "history.yaml"
    cfg.write_text(RETAIL.format(endpoint=moto.endpoint))
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **AWS, "DATAFACTORY_LEDGER": f"sqlite:///{tmp_path}/l.db"}
    base = [*CLI, "batch", str(cfg), *WINDOW, "--shards", "3", "--out", f"s3://{bucket}/x/"]
    one = subprocess.run([*base, "--shard", "1"], capture_output=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    r = subprocess.run([*base, "--finish"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "shards not written: 0 (0 of 4 days), 2 (0 of 4 days)" in r.stderr.decode()
    bad = subprocess.run([*base, "--shard", "3"], capture_output=True, env=env, timeout=60)
    assert bad.returncode == 2 and "shards 0 to 2" in bad.stderr.decode()
    local = subprocess.run(
        [*CLI, "batch", str(cfg), *WINDOW, "--out", str(tmp_path / "here"), "--plan", "sfn"],
        capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    assert local.returncode == 2 and "must be s3://" in local.stderr.decode()


def test_the_state_machines_ecs_parameters_are_runtask_fields() -> None:
    """Step Functions passes a Task's Parameters to ECS RunTask (PascalCase for the API's
    camelCase); each one, nested ones too, must be a field of the request."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecs")

    def check(params: dict[str, Any], shape: Any, where: str) -> int:
        members = {k.lower(): v for k, v in shape.members.items()}
        n = 0
        for key, value in params.items():
            name = key.removesuffix(".$")
            assert name.lower() in members, f"{where}.{name}: not a field of {shape.name}"
            n += 1
            member = members[name.lower()]
            if isinstance(value, dict):
                n += check(value, member, f"{where}.{name}")
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:
                    n += check(item, member.member, f"{where}.{name}[]")
        return n

    tasks = []
    machine = definition()
    for state in machine["States"].values():
        if state["Type"] == "Map":
            tasks += [s for s in state["ItemProcessor"]["States"].values() if s["Type"] == "Task"]
        elif state["Type"] == "Task":
            tasks.append(state)
    assert len(tasks) == 2
    request = model.operation_model("RunTask").input_shape
    for task in tasks:
        assert check(task["Parameters"], request, task["Resource"]) >= 10
    bad = {"Cluster": "x", "Overides": {}}
    with pytest.raises(AssertionError, match="Overides"):
        check(bad, request, "bad")
