"""Scenario config: one YAML file per scenario, typed with pydantic, unknown keys rejected.

Validation is pure (no I/O beyond reading the file): ``load_config`` parses the YAML,
interpolates ``${ENV}`` references, validates the whole tree including each pack's params and
each sink's settings against the models their plugins export, and reports *every* problem
with the file, the line, the key path and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from datafactory import yamltext
from datafactory.engine.rate import ConstantProfile, RateProfile
from datafactory.units import ByteSize, Duration

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RunSection(BaseModel):
    model_config = _STRICT
    name: str = Field("datafactory", pattern=NAME, description="run name, used in file names")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of all randomness in the run")
    clock: Literal["wall", "simulated"] = Field(
        "wall", description="wall: real time, paced; simulated: as fast as possible"
    )
    start: datetime | None = Field(
        None, description="simulated clock: where time starts (default 2026-01-01T00:00:00Z)"
    )
    duration: Duration | None = Field(
        None, gt=0, description="stop after this long (simulated clocks need it or max_events)"
    )
    shards: int = Field(
        1,
        ge=1,
        le=4096,
        description="stream mode: parts of the population, each with its own entities and "
        "seqs, run as one business (in worker processes, or on several daemons sharing a "
        "PostgreSQL ledger); a paced rate is split across them by their share",
    )
    from_state: str | None = Field(
        None,
        description="continue a batch's history: a shard's saved state (a path or "
        "s3://bucket/key, as the batch's manifest lists them); a simulated clock without a "
        "start starts where the history ended",
        examples=["./data/history/_state/<batch id>/shard-0000/day-000365.pkl"],
    )

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v

    def start_epoch(self) -> float:
        return (self.start or datetime(2026, 1, 1, tzinfo=UTC)).timestamp()


class StreamSection(BaseModel):
    model_config = _STRICT
    enabled: bool = True
    rate: RateProfile | None = Field(None, description="rate profile; default: the pack's")
    sinks: list[str] | None = Field(None, description="sink names; default: every sink")
    max_events: int | None = Field(None, ge=1, description="stop the stream after this many")


class PackSection(BaseModel):
    model_config = _STRICT
    params: dict[str, Any] = Field(default_factory=dict, description="the pack's parameters")
    params_file: str | None = Field(
        None,
        description="the pack's parameters from a YAML file beside the scenario file (a "
        "template's streams and entities); params given here are merged over them",
    )
    streams: dict[str, StreamSection] | None = Field(
        None, description="streams to run; default: all of the pack's streams"
    )


class EngineSection(BaseModel):
    model_config = _STRICT
    block_size: int = Field(8192, ge=1, le=1_000_000, description="events generated per block")
    batch_max: int = Field(16384, ge=1, le=1_000_000, description="most events in one sink write")
    pacing_interval: Duration = Field(
        0.05, gt=0, le=10, description="target time between releases of a stream (wall clock)"
    )
    max_attempts: int = Field(
        10, ge=1, le=1000, description="tries per batch before its events count as failed"
    )
    retry_backoff: Duration = Field(0.1, gt=0, description="first wait between tries")
    retry_backoff_max: Duration = Field(5.0, gt=0, description="longest wait between tries")
    snapshot_interval: Duration = Field(
        60.0,
        ge=1,
        le=86_400,
        description="daemon runs: how often the packs' state is saved, so that a restart "
        "replays at most this much of the run's journal",
    )


class TelemetrySection(BaseModel):
    model_config = _STRICT
    enabled: bool = True
    listen: str = Field(
        "127.0.0.1:9400", pattern=r"^[^\s:]+:\d{1,5}$", description="host:port of /metrics"
    )


class LogSection(BaseModel):
    model_config = _STRICT
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


DISK_BUFFER_BYTES = 2**30


class BufferConfig(BaseModel):
    """A sink's own buffer: what it holds for its sink, and what happens when that is full."""

    model_config = _STRICT
    type: Literal["memory", "disk"] = Field(
        "memory",
        description="memory: `max_events` in memory; disk: `max_events` in memory and what "
        "does not fit on disk (up to `max_bytes`, under the state folder), written later by "
        "the sink, across restarts: the stream keeps its pace while the sink lags",
    )
    max_events: int = Field(
        65_536,
        ge=1,
        le=50_000_000,
        description="events it holds in memory at most",
        examples=[100_000],
    )
    max_bytes: ByteSize = Field(
        DISK_BUFFER_BYTES,
        ge=2**16,
        le=2**40,
        description="disk buffer: encoded bytes it holds on disk at most",
        examples=["10GiB"],
    )
    when_full: Literal["block", "drop_newest"] = Field(
        "block",
        description="block: the stream waits for this sink (and so do its other sinks); "
        "drop_newest: this sink sheds what it cannot take (counted, in the manifest as `shed`), "
        "the stream and the other sinks keep their pace (a disk buffer: once its disk part is "
        "full too)",
        examples=["drop_newest"],
    )

    @model_validator(mode="after")
    def _disk_only(self) -> BufferConfig:
        # (a default-sized max_bytes passes: a config written back out carries it)
        if self.type == "memory" and self.max_bytes != DISK_BUFFER_BYTES:
            raise ValueError("max_bytes bounds a disk buffer: set type: disk, or remove it")
        return self


class SinkBase(BaseModel):
    """Settings every sink has; each sink type extends it with its own."""

    model_config = _STRICT
    type: str = Field(description="sink type, e.g. file, stdout")
    format: Literal["json", "avro"] = Field("json", description="record encoding")
    buffer: BufferConfig = Field(
        default_factory=BufferConfig, description="this sink's buffer and its policy when full"
    )


class ManifestSection(BaseModel):
    model_config = _STRICT
    sink: dict[str, Any] = Field(
        description="where the ground truth goes: any sink's settings (file, kafka, aws_s3...)",
        examples=[{"type": "file", "path": "./data/manifest"}],
    )
    format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="jsonl (any sink) or parquet (file and aws_s3 sinks)"
    )
    flush: Duration = Field(1.0, gt=0, le=3600, description="write what was injected this often")


class BatchSection(BaseModel):
    """Batch mode (``datafactory batch``): where history goes and how it is cut up. The
    command line overrides any of these."""

    model_config = _STRICT
    out: str = Field(
        "./data/batch",
        description="a local directory, or s3://bucket/prefix",
        examples=["s3://lake/raw/", "./history"],
    )
    format: Literal["parquet", "jsonl", "avro"] = Field("parquet", description="file format")
    compression: Literal["zstd", "snappy", "gzip", "none"] | None = Field(
        None,
        description="parquet: zstd (default), snappy, gzip, none; jsonl: gzip, zstd, none "
        "(default); avro: none",
    )
    partition: Literal["day", "hour"] = Field(
        "day", description="Hive partitions: stream=/dt=/ or stream=/dt=/hour=/"
    )
    shards: int = Field(
        4,
        ge=1,
        le=4096,
        description="independent parts of each pack's population (part of the data's "
        "identity: the same seed and shards give the same files, whatever the workers)",
    )
    workers: int = Field(1, ge=1, le=1024, description="worker processes (local engine)")
    row_group_rows: int = Field(
        1_000_000, ge=1_000, le=100_000_000, description="Parquet rows per row group (at most)"
    )
    file_rows: int = Field(
        20_000_000,
        ge=1_000,
        le=2_000_000_000,
        description="rows per file at most: a partition with more is written as several "
        "files (memory stays a row group's either way)",
    )
    part_size: int = Field(
        16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=5 * 1024**3,
        description="S3 multipart part size in bytes (files bigger than one part go multipart)",
    )
    endpoint_url: str | None = Field(None, description="S3 endpoint (moto, MinIO, LocalStack)")
    region: str = Field("us-east-1", description="S3 region")
    checkpoint_days: int = Field(
        30,
        ge=1,
        le=3660,
        description="save each shard's state every this many days (a resumed batch starts "
        "from the last one) and at the end (a stream run can continue from it)",
    )

    @field_validator("out")
    @classmethod
    def _out(cls, v: str) -> str:
        if v.startswith("s3://"):
            bucket = v[5:].split("/", 1)[0]
            if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
                raise ValueError(f"not a valid S3 bucket name: {bucket!r}")
        elif "://" in v:
            raise ValueError("out must be a local directory or s3://bucket/prefix")
        return v


class ConfigModel(BaseModel):
    model_config = _STRICT
    run: RunSection = Field(default_factory=RunSection)
    packs: dict[str, PackSection] = Field(min_length=1, description="packs to run, by name")
    sinks: dict[str, dict[str, Any]] = Field(min_length=1, description="sinks, by name")
    chaos: list[dict[str, Any]] = Field(
        default_factory=list, description="chaos steps, applied in this order"
    )
    manifest: ManifestSection | None = Field(
        None, description="the ground-truth manifest of injected faults"
    )
    engine: EngineSection = Field(default_factory=EngineSection)
    telemetry: TelemetrySection = Field(default_factory=TelemetrySection)
    log: LogSection = Field(default_factory=LogSection)
    batch: BatchSection = Field(
        default_factory=BatchSection, description="batch mode's output (datafactory batch)"
    )


@dataclass(frozen=True)
class StreamPlan:
    pack: str
    stream: str
    rate: Any
    sinks: tuple[str, ...]
    max_events: int | None
    driven: bool = False
    schema: Any = None  # its EventSchema (a template's is derived from the template)

    @property
    def event_type(self) -> str:
        return f"{self.pack}.{self.stream}"


@dataclass(frozen=True)
class Config:
    """A validated config: the raw model plus each plugin's own validated settings."""

    model: ConfigModel
    pack_params: dict[str, BaseModel]
    sinks: dict[str, SinkBase]
    streams: tuple[StreamPlan, ...]
    source: str
    chaos: tuple[Any, ...] = ()  # validated chaos.StepConfig, in order
    manifest_sink: SinkBase | None = None

    @property
    def run(self) -> RunSection:
        return self.model.run


class ConfigError(Exception):
    """Every problem found, one per line: ``file:line: key.path: message``."""

    def __init__(
        self,
        source: str,
        problems: list[tuple[tuple[str | int, ...], str]],
        lines: dict[tuple[str | int, ...], int] | Places | None = None,
    ) -> None:
        self.source = source
        self.problems = problems
        places = lines if isinstance(lines, Places) else Places(source, lines or {})
        out = []
        for loc, msg in problems:
            where, key = places.where(loc)
            out.append(f"{where}: {'.'.join(str(p) for p in key) or '(top level)'}: {msg}")
        super().__init__("invalid config:\n  " + "\n  ".join(out))


Loc: TypeAlias = tuple[str | int, ...]


class Places:
    """Where each key path was written: a line of the scenario, or of a params file it
    names (``packs.<pack>.params_file``; a key given in both is the scenario's)."""

    def __init__(self, source: str, lines: dict[Loc, int]) -> None:
        self.source, self.lines = source, lines
        self.files: list[tuple[Loc, str, dict[Loc, int], Any, Any]] = []

    def include(self, prefix: Loc, source: str, text: str, given: Any, inline: Any) -> None:
        """The params at ``prefix`` came from file ``source`` (``given``), under ``inline``."""
        self.files.append((prefix, source, _line_map(text), given, inline))

    def where(self, loc: Loc) -> tuple[str, Loc]:
        """(``file:line``, the key path as that file writes it)."""
        for prefix, source, lines, given, inline in self.files:
            rest = loc[len(prefix) :]
            if loc[: len(prefix)] == prefix and _depth(given, rest) > _depth(inline, rest):
                return _at(source, _nearest_line(lines, rest)), rest
        return _at(self.source, _nearest_line(self.lines, loc)), loc


def _at(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line else source


def _depth(node: Any, path: Loc) -> int:
    """How many keys of ``path`` lead somewhere in ``node``."""
    n = 0
    for key in path:
        listed = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        if not (listed or (isinstance(node, dict) and key in node)):
            break
        node = node[key]
        n += 1
    return n


def _nearest_line(lines: dict[Loc, int], loc: Loc) -> int | None:
    for k in range(len(loc), -1, -1):
        if loc[:k] in lines:
            return lines[loc[:k]]
    return None


def _include_params(
    data: dict[str, Any],
    places: Places,
    base_dir: Path | None,
    problems: list[Any],
    secret: set[Any],
) -> dict[str, Any]:
    """Each pack's ``params_file`` read (beside the scenario file, nowhere else) and its
    params merged under the pack's inline ones."""
    packs = data.get("packs")
    if not isinstance(packs, dict):
        return data
    for name, sec in packs.items():
        name_of = sec.get("params_file") if isinstance(sec, dict) else None
        if not isinstance(name_of, str):
            continue  # (not a string: the model says so)
        loc: Loc = ("packs", name, "params_file")
        try:
            path, raw = yamltext.read_beside(name_of, base_dir, "a params file")
            text = yamltext.decode(raw)
            given = yamltext.load(text)
        except yamltext.YamlError as e:
            problems.append((loc, f"{name_of}: {e}"))
            continue
        if not isinstance(given, dict):
            problems.append((loc, f"{name_of}: expected a mapping of the pack's params"))
            continue
        prefix: Loc = ("packs", name, "params")
        given = _interpolate(given, prefix, problems, secret)
        inline = sec.get("params") if isinstance(sec.get("params"), dict) else {}
        places.include(prefix, str(path), text, given, inline)
        sec["params"] = merge(given, inline)
    return data


_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _interpolate(
    node: Any, loc: tuple[str | int, ...], problems: list[Any], secret: set[Any]
) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in string values; ``$$`` is a literal ``$``. The
    locations of values taken from the environment go to ``secret``: never shown."""
    if isinstance(node, dict):
        return {k: _interpolate(v, (*loc, k), problems, secret) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*loc, i), problems, secret) for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            secret.add(loc)
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is not None:
                    return m.group(2)
                problems.append((loc, f"environment variable {m.group(1)} is not set"))
                return ""
            return value

        return _ENV.sub(sub, node)
    return node


def _line_map(text: str) -> dict[tuple[str | int, ...], int]:
    """Key path -> 1-based line, from the YAML node tree (best effort)."""
    out: dict[tuple[str | int, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node: Any, loc: tuple[str | int, ...]) -> None:
        if node is None:
            return
        out.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*loc, k.value)
                out[key] = k.start_mark.line + 1
                walk(v, key)
                out[key] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*loc, i))

    walk(root, ())
    return out


def _pyd_problems(
    err: ValidationError, prefix: tuple[str | int, ...], secret: set[Any] | None = None
) -> list[Any]:
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        where = (*prefix, *loc)
        msg = e["msg"]
        hidden = any(where[: len(s)] == s for s in secret or ())
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        elif hidden:  # from the environment: what it holds is not shown (nor the message,
            # which may quote it)
            msg = f"not a valid value ({e['type']}; it comes from the environment: not shown)"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg = f"{msg} (got {_short(e['input'])})"
        out.append((where, msg))
    return out


def _short(value: Any) -> str:
    """A value as an error shows it: at most 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


_UNION_TAGS = {"constant", "ramp", "diurnal", "spike", "hourly"}
# settings anyone who can list runs sees (and the logs carry): never from the environment
PUBLIC = {("run", "name")}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in (mappings key by key; anything else replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_config(
    text: str,
    source: str = "<config>",
    overrides: dict[str, Any] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate config text; raises :class:`ConfigError` listing every problem. ``base_dir``:
    the folder of the file it came from (files a config names, such as a template's schema,
    are read from there, nowhere else; None: a config sent as text names no files)."""
    try:
        data = yamltext.load(text)
    except yamltext.YamlError as e:
        raise ConfigError(source, [((), str(e))]) from None
    lines = Places(source, _line_map(text))
    if not isinstance(data, dict):
        raise ConfigError(source, [((), "expected a mapping of sections (run, packs, sinks, ...)")])
    problems: list[Any] = []
    secret: set[Any] = set()
    data = _interpolate(data, (), problems, secret)
    data = _include_params(data, lines, base_dir, problems, secret)
    for loc in PUBLIC & secret:
        problems.append(
            (loc, "shown to anyone who can list runs and written to the logs: it cannot come "
             "from the environment (${...})")
        )  # fmt: skip
    if overrides:
        data = merge(data, overrides)
    try:
        model = ConfigModel.model_validate(data)
    except ValidationError as e:
        problems += _pyd_problems(e, (), secret)
        problems += _plugin_problems(data)  # report those too, in the same pass
        raise ConfigError(source, problems, lines) from None
    if problems:
        raise ConfigError(source, problems, lines)
    return _resolve(model, source, lines, secret, base_dir)


def _plugin_problems(data: dict[str, Any]) -> list[Any]:
    """Best effort, for a file whose top level is invalid: pack params and sink settings."""
    from datafactory.pack import registered_packs, registered_sinks

    out: list[Any] = []
    packs, sinks = data.get("packs"), data.get("sinks")
    if isinstance(packs, dict):
        known = registered_packs()
        for name, sec in packs.items():
            params = sec.get("params") if isinstance(sec, dict) else None
            if name in known and isinstance(params, dict):
                try:
                    known[name].Params.model_validate(params)
                except ValidationError as e:
                    out += _pyd_problems(e, ("packs", name, "params"))
    if isinstance(sinks, dict):
        types = registered_sinks()
        for name, raw in sinks.items():
            kind = raw.get("type") if isinstance(raw, dict) else None
            if kind in types:
                try:
                    types[kind].Config.model_validate(raw)
                except ValidationError as e:
                    out += _pyd_problems(e, ("sinks", name))
    return out


def _resolve(
    model: ConfigModel,
    source: str,
    lines: Places,
    secret: set[Any],
    base_dir: Path | None = None,
) -> Config:
    from datafactory.pack import registered_packs, registered_sinks

    problems: list[Any] = []
    packs = registered_packs()
    sink_types = registered_sinks()
    sinks: dict[str, SinkBase] = {}
    for name, raw in model.sinks.items():
        loc: tuple[str | int, ...] = ("sinks", name)
        if not re.match(NAME, name):
            problems.append((loc, f"sink name must match {NAME}"))
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in sink_types:
            problems.append(
                (
                    (*loc, "type"),
                    f"unknown sink type {kind!r}; known: {', '.join(sorted(sink_types))}",
                )
            )
            continue
        try:
            sinks[name] = sink_types[kind].Config.model_validate(raw)
        except ValidationError as e:
            problems += _pyd_problems(e, loc, secret)

    params: dict[str, BaseModel] = {}
    streams: list[StreamPlan] = []
    for pname, psec in model.packs.items():
        loc = ("packs", pname)
        if pname not in packs:
            problems.append((loc, f"unknown pack {pname!r}; installed: {', '.join(sorted(packs))}"))
            continue
        pack = packs[pname]
        try:
            params[pname] = pack.Params.model_validate(psec.params, context={"base_dir": base_dir})
        except ValidationError as e:
            problems += _pyd_problems(e, (*loc, "params"), secret)
        if pname not in params and pack.streams_for(None) is not pack.streams:
            continue  # its streams come from its params, which are invalid (said above)
        specs = pack.streams_for(params.get(pname))
        chosen = psec.streams if psec.streams is not None else {s: StreamSection() for s in specs}
        for sname, ssec in chosen.items():
            sloc = (*loc, "streams", sname)
            if sname not in specs:
                problems.append(
                    (
                        sloc,
                        f"pack {pname!r} has no stream {sname!r}; "
                        f"streams: {', '.join(sorted(specs))}",
                    )
                )
                continue
            if not ssec.enabled:
                continue
            targets = tuple(ssec.sinks) if ssec.sinks is not None else tuple(model.sinks)
            for i, t in enumerate(targets):
                if t not in model.sinks:
                    problems.append(
                        (
                            (*sloc, "sinks", i),
                            f"no sink named {t!r}; sinks: {', '.join(sorted(model.sinks))}",
                        )
                    )
            spec = specs[sname]
            if spec.driven and ssec.rate is not None:
                problems.append(
                    (
                        (*sloc, "rate"),
                        f"stream {sname!r} is driven by the pack's simulation "
                        "(it follows the pack's other streams): it has no rate",
                    )
                )
            rate = (
                ssec.rate or pack.default_rate(sname, params.get(pname)) or ConstantProfile(base=0)
            )
            schema = pack.schema_of(sname, params.get(pname))
            streams.append(
                StreamPlan(pname, sname, rate, targets, ssec.max_events, spec.driven, schema)
            )
    if not problems and not streams:
        problems.append((("packs",), "no stream is enabled"))
    run = model.run
    if (
        run.clock == "simulated"
        and run.duration is None
        and any(
            s.max_events is None
            for s in streams
            if not s.driven or (s.pack in packs and packs[s.pack].driven_follow_clock())
        )
    ):
        problems.append(
            (
                ("run", "duration"),
                "a simulated clock runs as fast as it can: set run.duration "
                "or max_events on every stream",
            )
        )
    problems += [(("run", "shards"), p) for p in shard_problems(run.shards, params, streams)]
    if run.shards > 1 and run.from_state is not None:
        problems.append(
            (
                ("run", "from_state"),
                "a batch's saved state is one shard's: a sharded stream run cannot continue it",
            )
        )
    chaos, manifest_sink = _chaos_problems(model, sinks, streams, problems)
    if problems:
        raise ConfigError(source, problems, lines)
    return Config(model, params, sinks, tuple(streams), source, tuple(chaos), manifest_sink)


def shard_problems(
    n: int, params: dict[str, BaseModel], streams: Sequence[StreamPlan]
) -> list[str]:
    """What stops ``n`` shards: every pack with an enabled stream must give each shard
    entities of its own (stream mode's ``run.shards``, batch mode's ``batch.shards``)."""
    from datafactory.pack import registered_packs

    if n <= 1:
        return []
    packs, out = registered_packs(), []
    for name in dict.fromkeys(s.pack for s in streams):
        if name not in params:
            continue
        pack = packs[name]
        most = pack.max_shards(params[name]) if pack.shardable else 1
        if n > most:
            out.append(
                f"pack {name!r} cannot be split into {n} shards (at most {most}: a shard "
                "needs entities of its own)"
            )
    return out


# chaos steps that work on a record without knowing its fields (x-payload streams)
PAYLOAD_SAFE_STEPS = ("drop", "duplicate", "delay", "hot_key", "poison_pill", "corrupt_bytes")


def _chaos_problems(
    model: ConfigModel, sinks: dict[str, SinkBase], streams: list[StreamPlan], problems: list[Any]
) -> tuple[list[Any], SinkBase | None]:
    """The chaos steps and the manifest sink, validated against the streams and sinks."""
    from datafactory.chaos import applies, parse_steps, step_class
    from datafactory.pack import registered_sinks

    indexed, found = parse_steps(model.chaos)
    problems += found
    steps = [c for _, c in indexed]
    names = {p.event_type for p in streams} | {p.stream for p in streams}
    sink_types = registered_sinks()
    for i, cfg in indexed:
        loc: tuple[str | int, ...] = ("chaos", i)
        for j, name in enumerate(cfg.streams or []):
            if name not in names:
                problems.append(((*loc, "streams", j), f"no enabled stream {name!r}"))
        cls = step_class(cfg.step)
        for plan in streams:
            if not applies(cfg, plan.event_type):
                continue
            schema = plan.schema
            if schema.raw.get("x-payload") and cfg.step not in PAYLOAD_SAFE_STEPS:
                problems.append(
                    (
                        loc,
                        f"{plan.event_type}: each record is its own document (FHIR, HL7), so "
                        f"{cfg.step} has no fields to edit there; on this stream use "
                        f"{', '.join(PAYLOAD_SAFE_STEPS)}, or limit the step's streams",
                    )
                )
                continue
            try:
                cls(cfg, plan.event_type, schema, 0)
            except ValueError as e:
                problems.append((loc, f"{plan.event_type}: {e}"))
            if not cls.byte_level:
                continue
            for t in plan.sinks:
                sink = sinks.get(t)
                if sink is None or sink.format != "avro":
                    continue
                if not sink_types[sink.type].message_oriented:
                    problems.append(
                        (
                            loc,
                            f"{cfg.step} rewrites single records, but sink {t!r} writes Avro "
                            "container files (one schema per file): use format json there, "
                            "a message sink, or limit the step's streams",
                        )
                    )
    manifest_sink: SinkBase | None = None
    if model.manifest is not None:
        raw = model.manifest.sink
        kind = raw.get("type")
        loc = ("manifest", "sink")
        if kind not in sink_types:
            problems.append(
                (
                    (*loc, "type"),
                    f"unknown sink type {kind!r}; known: {', '.join(sorted(sink_types))}",
                )
            )
        else:
            try:
                manifest_sink = sink_types[kind].Config.model_validate({"format": "json", **raw})
            except ValidationError as e:
                problems += _pyd_problems(e, loc)
            if model.manifest.format == "parquet" and kind not in ("file", "aws_s3"):
                problems.append(
                    (("manifest", "format"), f"parquet needs a file or aws_s3 sink, not {kind}")
                )
            if manifest_sink is not None and manifest_sink.format != "json":
                problems.append(((*loc, "format"), "the manifest is written as JSON"))
    return steps, manifest_sink


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    return parse_config(read_config_text(path), str(path), overrides, Path(path).resolve().parent)


def read_config_text(path: str | Path) -> str:
    """A config file's text: bounded, UTF-8; ConfigError naming the file otherwise."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(yamltext.MAX_BYTES + 1)
        return yamltext.decode(data)
    except OSError as e:
        raise ConfigError(str(p), [((), f"cannot read: {e.strerror}")]) from None
    except yamltext.YamlError as e:
        raise ConfigError(str(p), [((), str(e))]) from None
