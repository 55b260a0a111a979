"""The `datafactory` command as a user runs it: a real process, real files, real HTTP."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fastavro
import orjson
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "datafactory"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], capture_output=True, timeout=120, **kw)  # type: ignore[call-overload, no-any-return]


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timed
def test_run_streams_at_the_rate_with_live_metrics_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        (ROOT / "config/examples/retail-files.yaml")
        .read_text()
        .replace("./data", str(tmp_path / "data"))
        .replace("127.0.0.1:9400", f"127.0.0.1:{port}")
    )
    log_path = tmp_path / "stderr.log"
    log_file = log_path.open("wb")  # a file, not a pipe: nothing can block the daemon
    proc = subprocess.Popen([*CLI, "run", str(cfg)], stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = orjson.loads(urllib.request.urlopen(url + "/healthz", timeout=2).read())
                break
            except OSError:
                assert time.monotonic() < deadline, "telemetry never came up"
                time.sleep(0.2)
        assert health["status"] == "ok"
        time.sleep(4)
        first = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        time.sleep(2)
        second = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        sent1 = metric(first, "datafactory_sink_sent_events_total")
        sent2 = metric(second, "datafactory_sink_sent_events_total")
        assert sent1 > 0
        # default config: 2000 events/s; two seconds later about 4000 more
        assert 3000 <= sent2 - sent1 <= 5000, (sent1, sent2)
        assert 1500 <= metric(second, "datafactory_stream_actual_rate") <= 2500
        assert metric(second, "datafactory_stream_target_rate") == 2000
        assert "datafactory_sink_buffer_events" in second
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log_file.close()
    err = log_path.read_bytes()
    assert proc.returncode == 0, err.decode()[-2000:]
    logs = [orjson.loads(x) for x in err.splitlines() if x.startswith(b"{")]
    finished = [x for x in logs if x["event"] == "run_finished"]
    assert finished, err.decode()[-2000:]
    released = finished[0]["released"]["retail.pos_transaction"]
    lines = [x for f in (tmp_path / "data").rglob("*.jsonl") for x in f.read_bytes().splitlines()]
    assert len(lines) == released  # everything released before SIGTERM was written
    assert orjson.loads(lines[-1])["store_id"].startswith("S")


def test_validate_reports_bad_keys_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "run: {name: x, speed: 9}\npacks: {retail: {params: {stores: -1}}}\n"
        "sinks: {o: {type: stdout}}\n"
    )
    r = cli("validate", str(bad))
    assert r.returncode == 2
    err = r.stderr.decode()
    assert f"{bad}:1: run.speed: unknown key" in err
    assert f"{bad}:2: packs.retail.params.stores" in err
    ok = cli("validate", str(ROOT / "config/default.yaml"))
    assert ok.returncode == 0 and b"ok" in ok.stdout
    assert cli("run", str(bad)).returncode == 2


def test_sample_json_and_avro_and_packs() -> None:
    r = cli("sample", "retail.pos_transaction", "-n", "3")
    assert r.returncode == 0
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 3 and all(x["total"] > 0 for x in recs)
    a = cli("sample", "retail.pos_transaction", "-n", "4", "--format", "avro")
    assert a.returncode == 0
    assert len(list(fastavro.reader(io.BytesIO(a.stdout)))) == 4
    bad = cli("sample", "retail.nope")
    assert bad.returncode == 2 and b"retail.pos_transaction" in bad.stderr
    packs = cli("packs", "--json")
    info = {p["pack"]: p for p in orjson.loads(packs.stdout)}
    assert info["retail"]["streams"][0]["stream"] == "pos_transaction"
    assert info["iot"]["params"]["incidents"]["default"] == []
    assert info["healthcare"]["params"]["errors"]["default"]["invalid_npi"] == 0
    v = cli("--version")
    assert v.returncode == 0 and v.stdout.startswith(b"datafactory ")


def test_simulated_run_from_the_command_line_is_deterministic(tmp_path: Path) -> None:
    text = (ROOT / "config/examples/retail-diurnal-avro.yaml").read_text()
    outs = []
    for name, hashseed in (("a", "1"), ("b", "2")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(text.replace("./data/retail-day", str(tmp_path / name)))
        r = cli(
            "run", str(cfg), "--duration", "20m", env={**os.environ, "PYTHONHASHSEED": hashseed}
        )
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        outs.append(sorted((p.name, p.read_bytes()) for p in (tmp_path / name).rglob("*.avro")))
    assert outs[0] == outs[1] and outs[0]


def test_default_config_streams_to_local_kafka_and_kinesis(tmp_path: Path) -> None:
    """`make run`'s config: stand-ins started for the run, events visible with `tail`."""
    port = free_port()
    cfg = tmp_path / "default.yaml"
    cfg.write_text(
        (ROOT / "config/default.yaml").read_text().replace("127.0.0.1:9400", f"127.0.0.1:{port}")
    )
    env = {**os.environ, "DATAFACTORY_STATE_DIR": str(tmp_path / "state")}
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [*CLI, "run", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            sent: dict[str, float] = {"kafka": 0, "kinesis": 0}
            while time.monotonic() < deadline and min(sent.values()) < 2000:
                time.sleep(1)
                try:
                    url = f"http://127.0.0.1:{port}/metrics"
                    text = urllib.request.urlopen(url, timeout=2).read().decode()
                except OSError:
                    continue
                for sink in sent:
                    sent[sink] = sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines()
                        if line.startswith("datafactory_sink_sent_events_total{")
                        and f'sink="{sink}"' in line
                    )
            assert min(sent.values()) >= 2000, (sent, log_path.read_text()[-3000:])
            endpoints = orjson.loads((tmp_path / "state/local.json").read_bytes())
            assert set(endpoints) == {"kafka", "aws"}
            seen = subprocess.run(
                [*CLI, "tail", "kafka://retail.pos_transaction", "-n", "3", "--from-beginning"],
                capture_output=True,
                timeout=60,
                env=env,
                cwd=tmp_path,
            )
            assert seen.returncode == 0, seen.stderr.decode()[-2000:]
            recs = [orjson.loads(x) for x in seen.stdout.splitlines()]
            assert len(recs) == 3 and all(r["store_id"].startswith("S") for r in recs)
            seen = subprocess.run(
                [*CLI, "tail", "kinesis://retail-pos_transaction", "-n", "2", "--from-beginning"],
                capture_output=True,
                timeout=60,
                env=env,
                cwd=tmp_path,
            )
            assert seen.returncode == 0, seen.stderr.decode()[-2000:]
            assert len(seen.stdout.splitlines()) == 2
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    assert not (tmp_path / "state/local.json").exists()  # stand-ins stopped, file removed
    logs = log_path.read_text()
    assert "stand_in_stopped" in logs and "run_finished" in logs


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_stdout_sink(tmp_path: Path, fmt: str) -> None:
    cfg = tmp_path / "out.yaml"
    cfg.write_text(f"""
run: {{name: out, seed: 2}}
packs: {{retail: {{streams: {{pos_transaction: {{rate: {{profile: constant, base: 5000}},
                                               max_events: 700}}}}}}}}
sinks: {{out: {{type: stdout, format: {fmt}}}}}
telemetry: {{enabled: false}}
log: {{level: warning}}
""")
    r = cli("run", str(cfg))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    if fmt == "json":
        recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    else:
        recs = list(fastavro.reader(io.BytesIO(r.stdout)))
    assert [x["transaction_id"] for x in recs] == [1_000_000_001 + i for i in range(700)]


def test_unreachable_broker_fails_with_a_clear_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("""
run: {name: bad, seed: 1}
packs: {retail: {streams: {pos_transaction: {max_events: 5}}}}
sinks: {k: {type: kafka, bootstrap: "127.0.0.1:1"}}
telemetry: {enabled: false}
""")
    r = cli("run", str(cfg))
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "datafactory: run failed: sink 'k' (kafka)" in err and "127.0.0.1" in err
    assert "Traceback" not in err
    for line in err.splitlines()[:-1]:  # every log line is JSON, libraries' included
        orjson.loads(line)


ACCOUNT = """
run: {{name: acct, seed: 1, duration: 3s}}
packs:
  retail:
    params: {{stores: 5, skus: 200, customers: 500}}
    streams:
      pos_transaction: {{rate: {{profile: constant, base: 1000}}}}
sinks:
  out: {{type: file, path: {out}}}
chaos:
  - {{step: drop, rate: 0.05}}
manifest: {{sink: {{type: file, path: {manifest}}}}}
telemetry: {{enabled: false}}
"""


def test_run_ends_with_its_account_as_json_and_as_text_on_a_terminal(tmp_path: Path) -> None:
    import pty

    cfg = tmp_path / "acct.yaml"
    cfg.write_text(ACCOUNT.format(out=tmp_path / "out", manifest=tmp_path / "m"))
    done = cli("run", str(cfg), "--json")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    acc = orjson.loads(done.stdout)
    stream = acc["streams"]["retail.pos_transaction"]
    assert stream["released"] == 3000  # 3 s at 1,000 events/s, exactly
    lines = [x for f in (tmp_path / "out").rglob("*.jsonl") for x in f.read_bytes().splitlines()]
    drops = [
        r
        for f in (tmp_path / "m").rglob("*.jsonl")
        for r in map(orjson.loads, f.read_bytes().splitlines())
        if r.get("step") == "drop"
    ]
    out = acc["sinks"]["out"]["streams"]["retail.pos_transaction"]
    assert out["acked"] == len(lines) == 3000 - stream["chaos_dropped"]
    assert stream["chaos_dropped"] == len(drops) > 0
    assert out["failed"] == out["shed"] == acc["sinks"]["out"]["buffered"] == 0
    assert acc["manifest"] == str((tmp_path / "m" / "chaos" / "manifest").resolve())
    # on a terminal: the same account, for people
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "run", str(cfg), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        cwd=tmp_path,
    )
    os.close(follower)
    text = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        text += chunk
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    shown = text.decode()
    assert "stream retail.pos_transaction: 3,000 released" in shown, shown[-2000:]
    assert "sink out / retail.pos_transaction:" in shown and "manifest:" in shown


def test_a_run_piped_into_a_reader_that_stops_ends(tmp_path: Path) -> None:
    """``datafactory run x.yaml | head -2``: once the reader is gone the run ends (as a pipe's
    writer does), quietly, instead of retrying its writes to a closed pipe."""
    cfg = tmp_path / "piped.yaml"
    cfg.write_text(
        "run: {name: piped, seed: 1}\n"
        "packs: {retail: {streams: {pos_transaction: {rate: {profile: constant, base: 500}}}}}\n"
        "sinks: {out: {type: stdout}}\n"
        "telemetry: {enabled: false}\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "datafactory", "run", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    lines = [p.stdout.readline() for _ in range(2)]
    assert all(orjson.loads(x)["event_id"] for x in lines)
    p.stdout.close()  # the reader goes away
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("the run went on writing to a closed pipe") from None
    err = p.stderr.read().decode()
    p.stderr.close()
    assert "stdout_closed" in err and "Traceback" not in err, err[-2000:]
