"""A batch as separate steps, for an orchestrator (the Terraform module's AWS Step Functions
state machine, a CI matrix, a shell loop): each shard on its own, anywhere
(``datafactory batch ... --shard K``), then the manifest once every shard is written
(``--finish``). The steps share the batch's ledger (PostgreSQL) and output (S3); the files
are the same bytes as ``datafactory batch`` writes with the same shards, because a shard's
output depends only on (config, seed, window, shards, format), never on who ran it.

``--plan sfn`` prints the execution input of the state machine
(``deploy/stepfunctions/batch.asl.json``): the batch id, one item per shard with the
container command that writes it, and the finishing command. A failed shard is retried by
the state machine; a shard run again skips the partitions it already recorded.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Any

from datafactory.batch.runner import BatchError, BatchJob, _prepare, _write_manifest, run_shard
from datafactory.batch.simulate import day_chunks
from datafactory.config import Config
from datafactory.control.ledger import open_ledger

# where the module's tasks find the tenant's configs (synced from its S3 prefix)
TASK_CONFIGS = "/etc/datafactory/configs"


def one_shard(job: BatchJob, index: int) -> dict[str, Any]:
    """Write shard ``index`` of the batch (what a state machine's task runs)."""
    spec = job.section()
    if not 0 <= index < spec.shards:
        raise BatchError(f"--shard {index}: this batch has shards 0 to {spec.shards - 1}")
    asyncio.run(_prepare(spec, job.ledger_url, abort=False))
    stats = run_shard(job, index)
    return {"batch_id": job.batch_id, "out": spec.out, **stats}


def finish(job: BatchJob, config: Config) -> dict[str, Any]:
    """The batch's manifest, once every shard has written every day (else a BatchError naming
    the shards still to run); uploads that killed shard tasks left open are aborted first."""
    spec = job.section()
    days = len(day_chunks(job.start_us, job.end_us))
    missing = asyncio.run(_unfinished(job, spec.shards, days))
    if missing:
        shown = ", ".join(f"{k} ({n} of {days} days)" for k, n in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise BatchError(
            f"cannot finish batch {job.batch_id}: shards not written: {shown}{more}; "
            "run `datafactory batch ... --shard K` for each first"
        )
    aborted = asyncio.run(_prepare(spec, job.ledger_url))  # every shard is done now
    manifest = asyncio.run(_write_manifest(job, config, spec))
    return {
        "batch_id": job.batch_id,
        "out": spec.out,
        "partitions": spec.shards * days,
        "rows": manifest["totals"]["rows"],
        "files": len(manifest["files"]),
        "bytes": manifest["totals"]["bytes"],
        "aborted_uploads": aborted,
        "manifest": manifest["key"],
    }


async def _unfinished(job: BatchJob, shards: int, days: int) -> list[tuple[int, int]]:
    ledger = open_ledger(job.ledger_url)
    await ledger.open()
    try:
        rows = await ledger.batch_partitions(job.batch_id)
    finally:
        await ledger.close()
    done = [0] * shards
    for r in rows:
        if 0 <= int(r[0]) < shards:
            done[int(r[0])] += 1
    return [(k, n) for k, n in enumerate(done) if n < days]


def sfn_input(
    job: BatchJob, config_path: str, start: str, end: str, task_config: str | None = None
) -> dict[str, Any]:
    """The state machine's execution input: per shard, the container command (the image's
    entrypoint is ``datafactory``) that writes it; the finishing command. ``task_config``:
    the config's path inside the task (default: its file name in the tenant's configs)."""
    spec = job.section()
    if not spec.out.startswith("s3://"):
        raise BatchError(f"--plan sfn: the output must be s3://BUCKET/PREFIX, not {spec.out!r}")
    path = task_config or str(PurePosixPath(TASK_CONFIGS) / PurePosixPath(config_path).name)
    args = ["batch", path, "--start", start, "--end", end]
    for flag, key in (("--out", "out"), ("--format", "format"), ("--compression", "compression"),
                      ("--partition", "partition"), ("--shards", "shards")):  # fmt: skip
        args += [flag, str(job.spec[key])]
    if job.overrides.get("run", {}).get("seed") is not None:
        args += ["--seed", str(job.overrides["run"]["seed"])]
    if spec.endpoint_url:
        args += ["--endpoint-url", spec.endpoint_url]
    args.append("--no-progress")
    return {
        "batch_id": job.batch_id,
        "shards": [{"shard": k, "command": [*args, "--shard", str(k)]} for k in range(spec.shards)],
        "finish": {"command": [*args, "--finish"]},
    }
