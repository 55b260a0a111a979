"""`datafactory serve` as a real process: kill -9 and resume against Tansu, SIGTERM at load,
systemd's notify protocol on a fake NOTIFY_SOCKET, and the unit file."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from datafactory.lifecycle.local import Moto, Tansu
from tests.integration.conftest import consume

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "process-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    def __init__(
        self, tmp: Path, env: dict[str, str] | None = None, ledger: str | None = None
    ) -> None:
        """``ledger``: its URL (default: a SQLite file in ``tmp``)."""
        self.tmp = tmp
        self.port = free_port()
        self.ledger = ledger or f"sqlite:///{tmp / 'ledger.db'}"
        self.configs = tmp / "configs"
        self.configs.mkdir(exist_ok=True)
        self.env = {**os.environ, "DATAFACTORY_TOKEN": TOKEN, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: Any = None

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def start(self) -> None:
        self.starts += 1
        self.close_log()
        log = self._log = (self.tmp / f"serve-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "datafactory", "serve", "--listen", f"127.0.0.1:{self.port}",
                "--ledger", self.ledger, "--configs", str(self.configs),
                "--no-watch",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=self.env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/readyz")
                return
            except OSError:
                assert self.proc.poll() is None, self.logs()
                assert time.monotonic() < deadline, "daemon never became ready"
                time.sleep(0.2)

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("serve-*.log")))[-3000:]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return orjson.loads(r.read())

    def post(self, path: str, body: Any = None, method: str = "POST") -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=orjson.dumps(body or {}),
            headers={"Authorization": f"Bearer {TOKEN}"},
            method=method,
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return orjson.loads(r.read())

    def wait(self, run_id: str, pred: Any, within: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            view: dict[str, Any] = self.get(f"/v1/runs/{run_id}")
            if pred(view):
                return view
            assert time.monotonic() < deadline, (view["state"], self.logs())
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, within: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=within)
        finally:
            self.close_log()


KAFKA = """
run: {{name: crash, seed: 6}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 5000}}, max_events: {n}}}
sinks:
  bus: {{type: kafka, bootstrap: "{bootstrap}", topic: "{topic}", partitions: 3}}
"""


@pytest.mark.timed
def test_kill_9_mid_run_then_restart_resumes_with_every_event_accounted_for(
    tansu: Tansu, tmp_path: Path
) -> None:
    n, topic = 40_000, f"crash-{uuid.uuid4().hex[:8]}"
    d = Serve(tmp_path)
    (d.configs / "crash.yaml").write_text(KAFKA.format(n=n, bootstrap=tansu.bootstrap, topic=topic))
    d.start()
    try:
        rid = d.post("/v1/runs", {"config": "crash"})["id"]
        view = d.wait(
            rid,
            lambda v: v["streams"].get("retail.pos_transaction", {}).get("released", 0) > 12_000,
        )
        assert view["state"] == "RUNNING"
        d.stop(signal.SIGKILL)
        d.start()  # same ledger: the run resumes by itself
        view = d.wait(rid, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=90)
        assert view["state"] == "COMPLETED", d.logs()
    finally:
        d.stop()
    reasons = [(h["to"], h["reason"]) for h in view["history"]]
    assert ("PROVISIONING", "restart") in reasons
    import asyncio

    msgs = asyncio.run(consume(tansu.bootstrap, topic, n, quiet=3.0, deadline=90))
    seqs = Counter(int(dict(m.headers)["seq"]) for m in msgs)
    assert set(seqs) == set(range(n))  # nothing missing
    resent = len(msgs) - n  # sent before the crash, after the last checkpoint: again
    counters = view["counters"][0]
    # the ledger counts each event once up to the checkpoint, then everything after it
    assert counters["acked"] == n and counters["failed"] == 0
    assert resent == sum(c - 1 for c in seqs.values())
    assert 0 <= resent < 5000 * 3  # at most a few seconds' worth


FILES = """
run: {{name: load, seed: 2}}
packs:
  retail:
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 20000}}}}
sinks:
  out: {{type: file, path: "{out}"}}
"""


@pytest.mark.timed
def test_sigterm_at_load_drains_and_exits_0_with_every_event_accounted_for(
    tmp_path: Path,
) -> None:
    import threading

    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(0.2)
    messages: list[str] = []
    done = threading.Event()

    def listen() -> None:  # what systemd does: read every datagram as it comes
        while not done.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    d = Serve(tmp_path, {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"})
    (d.configs / "load.yaml").write_text(FILES.format(out=tmp_path / "out"))
    try:
        d.start()
        time.sleep(0.3)
        assert messages[0].startswith("READY=1\nSTATUS=serving on 127.0.0.1:")
        rid = d.post("/v1/runs", {"config": "load"})["id"]
        d.wait(
            rid,
            lambda v: v["streams"].get("retail.pos_transaction", {}).get("released", 0) > 40_000,
        )
        # SIGHUP re-reads the configs folder and applies the change live (systemctl reload)
        (d.configs / "load.yaml").write_text(
            FILES.format(out=tmp_path / "out").replace("base: 20000", "base: 15000")
        )
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        d.wait(rid, lambda v: v["streams"]["retail.pos_transaction"]["target_rate"] == 15000, 10)
        t0 = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 30
        time.sleep(0.5)
    finally:
        done.set()
        reader.join()
        sock.close()
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
    # pinged from the event loop all along (also while streaming 20k events/s), then STOPPING;
    # a long drain keeps pinging (systemd's watchdog still runs while a unit stops)
    assert messages.count("WATCHDOG=1") >= 3
    stopping = [i for i, m in enumerate(messages) if m.startswith("STOPPING=1")]
    assert len(stopping) == 1 and set(messages[stopping[0] + 1 :]) <= {"WATCHDOG=1"}
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert "reload_applied" in logs and TOKEN not in logs  # the token is never logged
    db = sqlite3.connect(tmp_path / "ledger.db")
    (mark, released) = db.execute(
        "SELECT seq, released FROM checkpoints WHERE run_id = ?", (rid,)
    ).fetchone()
    (acked, failed) = db.execute(
        "SELECT acked, failed FROM counters WHERE run_id = ?", (rid,)
    ).fetchone()
    (state,) = db.execute("SELECT state FROM runs WHERE id = ?", (rid,)).fetchone()
    lines = [x for f in (tmp_path / "out").rglob("*.jsonl") for x in f.read_bytes().splitlines()]
    assert mark == released == acked == len(lines) > 40_000 and failed == 0
    assert state == "DRAINING"  # suspended by the shutdown: the next start resumes it
    assert len({orjson.loads(x)["event_id"] for x in lines}) == len(lines)


SPILL = """
run: {{name: spill{uid}, seed: 8}}
packs:
  retail:
    params: {{stores: 5, skus: 300, customers: 1000}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 12000}}, max_events: {n}}}
sinks:
  bus: {{type: kafka, bootstrap: "{bootstrap}", topic: "spill-{uid}", partitions: 2}}
  kin: {{type: aws_kinesis, endpoint_url: "{endpoint}", stream: "spill-{uid}", shards: 1,
         max_in_flight: 1, buffer: {{type: disk, max_events: 500, when_full: block}}}}
manifest: {{sink: {{type: file, path: "{manifest}"}}, flush: 200ms}}
"""


@pytest.mark.timed
def test_sigterm_leaves_a_lagging_sinks_disk_buffer_and_the_restart_drains_it(
    tansu: Tansu, moto: Moto, tmp_path: Path
) -> None:
    """Kinesis (moto, one shard, one write at a time) lags; its disk buffer takes what it
    cannot keep up with, so Kafka keeps pace. SIGTERM exits at once (the memory part moves to
    disk, nothing waits for Kinesis), the files outlive the process, and the next start
    drains them: every event reaches both sinks."""
    n, uid = 48_000, uuid.uuid4().hex[:8]
    state = tmp_path / "state"
    aws = {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    d = Serve(tmp_path, {"DATAFACTORY_STATE_DIR": str(state), **aws})
    text = SPILL.format(
        n=n, uid=uid, bootstrap=tansu.bootstrap, endpoint=moto.endpoint, manifest=tmp_path / "m"
    )
    (d.configs / "spill.yaml").write_text(text)
    d.start()
    try:
        rid = d.post("/v1/runs", {"config": "spill"})["id"]
        view = d.wait(
            rid,
            lambda v: v["streams"].get("retail.pos_transaction", {}).get("released", 0) > 24_000,
        )
        t0 = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 15  # nothing waited for the lagging sink
        files = list((state / "buffers" / rid / "kin").glob("*.npz"))
        assert files, d.logs()
        d.start()  # resumes the run: the disk buffer first, then the rest of the events
        view = d.wait(rid, lambda v: v["state"] in ("COMPLETED", "FAILED"), within=120)
        assert view["state"] == "COMPLETED", d.logs()
    finally:
        d.stop()
    assert "disk_buffer_restored" in d.logs()
    assert not list((state / "buffers").rglob("*.npz"))  # drained, nothing left behind
    import asyncio

    from datafactory.config import parse_config
    from datafactory.verify import verify

    os.environ.update(aws)
    report = asyncio.run(verify(parse_config(text), quiet=3.0))
    for sink in ("bus", "kin"):
        row = report["sinks"][sink]["retail.pos_transaction"]
        assert row["missing"] == 0 and row["shed"] == 0, (sink, row)
        assert row["delivered"] == n, (sink, row)


def _tansu_pids() -> set[int]:
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "tansu":
                    out.add(int(proc.name))
            except OSError:
                pass
    return out


def test_a_daemon_that_cannot_bind_stops_the_runs_it_resumed(tmp_path: Path) -> None:
    """Its port taken, the daemon says so and exits; the run it had resumed (with a local
    broker of its own) is suspended again and its broker stopped, not left running."""
    import socket

    d = Serve(tmp_path, {"DATAFACTORY_STATE_DIR": str(tmp_path / "state")})
    (d.configs / "local.yaml").write_text(
        "run: {name: local, seed: 1}\n"
        "packs: {retail: {streams: {pos_transaction: {rate: {profile: constant, base: 50}}}}}\n"
        "sinks: {bus: {type: kafka, provider: local}}\ntelemetry: {enabled: false}\n"
    )
    d.start()
    rid = d.post("/v1/runs", {"config": "local"})["id"]
    d.wait(rid, lambda v: v["state"] == "RUNNING", within=60)
    assert d.stop(signal.SIGTERM) == 0  # suspended: live in the ledger, resumed at the next start
    before = _tansu_pids()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "datafactory", "serve", "--listen",
             f"127.0.0.1:{taken.getsockname()[1]}", "--ledger", d.ledger,
             "--configs", str(d.configs), "--no-watch"],
            capture_output=True, env=d.env, timeout=120,
        )  # fmt: skip
    finally:
        taken.close()
    assert r.returncode != 0 and b"address already in use" in r.stderr, r.stderr[-2000:]
    assert b"run_resuming" in r.stderr  # it had resumed the run (and started its broker)
    # and it went through its orderly shutdown: the run drained to a checkpoint again
    assert b"daemon_stopped" in r.stderr, r.stderr[-2000:]
    time.sleep(1)
    assert _tansu_pids() <= before, "a broker the failed daemon started is still running"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "datafactory.service").read_text()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "WatchdogSec=" in unit and "User=datafactory" in unit
    # verify the unit as installed on this machine: the same file, our interpreter's binary
    exe = Path(sys.executable).parent / "datafactory"
    local = tmp_path / "datafactory.service"
    local.write_text(unit.replace("/opt/datafactory/venv/bin/datafactory", str(exe)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
