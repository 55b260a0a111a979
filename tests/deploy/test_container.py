"""The container as the module and docker-compose run it. There is no Docker daemon here, so
the image is not built; instead the daemon is started the way the image starts it (``datafactory
serve`` with no flags, everything from the environment the task definition sets: ledger URL
without a password plus PGPASSWORD, token, state key, listen address, folders), against this
machine's PostgreSQL, and the Dockerfile and compose file are checked to say the same."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.deploy.hcl import ROOT, TERRAFORM
from tests.integration.test_daemon_process import free_port

pytestmark = pytest.mark.integration


def task_environment() -> set[str]:
    """The variable names the module's daemon container gets (environment and secrets)."""
    text = (TERRAFORM / "modules" / "tenant" / "ecs.tf").read_text()
    return set(re.findall(r'name = "([A-Z_]+)"', text))


def test_the_daemon_starts_from_the_task_definitions_environment_alone(
    tmp_path: Path, database: str
) -> None:
    names = task_environment()
    assert {"DATAFACTORY_LEDGER", "PGPASSWORD", "DATAFACTORY_TOKEN", "DATAFACTORY_STATE_KEY",
            "DATAFACTORY_LISTEN", "DATAFACTORY_CONFIGS", "DATAFACTORY_STATE_DIR"} <= names  # fmt: skip
    port = free_port()
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "hello.yaml").write_text(
        "run: {name: hello, duration: 1s}\npacks: {retail: {}}\nsinks: {out: {type: stdout}}\n"
    )
    values = {
        "DATAFACTORY_LEDGER": database,
        "PGPASSWORD": "unused by this machine's trust auth",
        "DATAFACTORY_TOKEN": "a-tenant-token",
        "DATAFACTORY_STATE_KEY": "the fleet's shared state key",
        "DATAFACTORY_LISTEN": f"127.0.0.1:{port}",
        "DATAFACTORY_CONFIGS": str(configs),
        "DATAFACTORY_STATE_DIR": str(tmp_path / "state"),
        "DATAFACTORY_DATA_ROOT": str(tmp_path / "data"),
        "DATAFACTORY_WORKERS": "1",
        "DATAFACTORY_RUN": "hello",
        "AWS_REGION": "eu-west-1",
    }
    assert names <= values.keys() | {"DATAFACTORY_KAFKA_BOOTSTRAP", "HOME"}  # HOME: the init step
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **values}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "datafactory", "serve"], stdout=log, stderr=log, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # (ready: the runs it starts at startup are made; /healthz answers sooner)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.3)
        # DATAFACTORY_RUN started the named config from DATAFACTORY_CONFIGS, in the ledger
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/runs",
            headers={"Authorization": "Bearer a-tenant-token"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read().decode()
        assert '"hello"' in body, body
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]


def test_the_image_and_the_compose_file_run_it_the_same_way() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", docker, re.M)
    assert users and users[-1] not in ("root", "0")
    uid = re.search(r"useradd .*--uid (\d+)", docker)
    assert uid is not None
    ecs = (TERRAFORM / "modules" / "tenant" / "ecs.tf").read_text()
    assert f'user                   = "{uid.group(1)}"' in ecs  # the task runs as that user
    assert re.search(r'^ENTRYPOINT \["datafactory"\]', docker, re.M)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    app = compose["services"]["datafactory"]
    assert app["depends_on"]["ledger"]["condition"] == "service_healthy"
    env = app["environment"]
    assert env["DATAFACTORY_LEDGER"].startswith("postgresql://datafactory@ledger:5432/")
    assert set(env) <= task_environment() | {"DATAFACTORY_KAFKA_BOOTSTRAP"}
    assert app["read_only"] is True and app["ports"] == ["127.0.0.1:9400:9400"]
