"""schemathesis against a running daemon's /openapi.json: no 5xx, responses match the
document, schema-invalid input is rejected, auth is enforced, undeclared methods get 405
with Allow. (Not `positive_data_acceptance`: whether a config is valid depends on the
installed packs and sinks, which JSON Schema cannot say; the API tests cover acceptance.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_daemon_process import TOKEN, Serve

pytestmark = pytest.mark.integration
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,negative_data_rejection,"
    "unsupported_method,ignored_auth"
)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    d = Serve(tmp_path)
    (d.configs / "shop.yaml").write_text(
        "run: {name: shop}\npacks: {retail: {}}\n"
        f"sinks: {{out: {{type: file, path: '{tmp_path / 'out'}'}}}}\n"
    )
    d.start()
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st is not None
    try:
        out = subprocess.run(
            [
                st, "run", f"http://127.0.0.1:{d.port}/openapi.json",
                "-H", f"Authorization: Bearer {TOKEN}",
                "--max-examples", "10", "--generation-deterministic", "--checks", CHECKS,
                "--request-timeout", "10",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        assert d.stop() == 0
    report = out.stdout[-4000:]
    assert out.returncode == 0, report + out.stderr[-2000:]
    assert "Tested: 18" in report and " passed" in report and "failed" not in report
