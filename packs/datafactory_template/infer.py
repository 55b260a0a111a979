"""``datafactory infer SAMPLE``: a template drafted from example records, and how close what it
makes comes to them.

The sample (JSON lines, an Avro container file, or Parquet) is read whole up to ``limit``
records. Per field: the null rate; booleans and numbers or strings with few distinct values
become ``choice`` with their weights (the top 50, the tail noted); other numbers a fitted
distribution (uniform, normal, lognormal or exponential, whichever is nearest by the KS
distance) with the sample's bounds, its decimals or ``integer``; consecutive integers a
``sequence``; UUIDs ``uuid``; timestamps ``time`` around the event, dates ``date`` (days from
the event's); other strings a ``pattern`` of their most common shape (digits ``#``, capitals
``?``, lower case ``[a-z]``); lists of records ``array`` with their lengths and items drafted
the same way; nested records ``object`` with their fields drafted the same way. The draft is a
complete scenario file; edit it, then run it.

:func:`compare` makes events from a draft and measures, per field, the KS distance (numbers)
or the overlap of the categories' shares (everything else) against the sample.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

TOP = 50
MAX_KS = 0.1  # what the report calls close: KS distance at most this
MIN_OVERLAP = 0.9  # and categories' shares overlapping at least this much
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
ENVELOPE = ("event_id", "event_time")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EPOCH = dt.date(1970, 1, 1)


def read_sample(path: Path, limit: int = 100_000) -> list[dict[str, Any]]:
    """Records of a JSON lines, Avro container or Parquet file."""
    name = path.name.lower()
    if name.endswith(".avro"):
        import fastavro

        with path.open("rb") as f:
            return [r for _, r in zip(range(limit), fastavro.reader(f), strict=False)
                    if isinstance(r, dict)]  # fmt: skip
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).slice(0, limit).to_pylist()  # type: ignore[no-any-return]
    out = []
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
                if len(out) >= limit:
                    break
    return out


def _decimals(values: list[float]) -> int | None:
    """How many decimal places the values have (None: more than 4, or not decimal-like)."""
    for k in range(5):
        scaled = np.asarray(values, dtype=np.float64) * 10**k
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            return k
    return None


def _ks(sample: np.ndarray[Any, Any], cdf: Any) -> float:
    x = np.sort(sample)
    n = len(x)
    f = cdf(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def _fit(values: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The nearest of uniform, normal, lognormal, exponential (by KS distance)."""
    lo, hi = float(values.min()), float(values.max())
    mean, sd = float(values.mean()), float(values.std()) or 1e-9
    erf = np.vectorize(math.erf)
    fits: list[tuple[float, dict[str, Any]]] = []
    if hi > lo:
        fits.append((_ks(values, lambda x: (x - lo) / (hi - lo)),
                     {"gen": "uniform", "min": lo, "max": hi}))  # fmt: skip
    fits.append((_ks(values, lambda x: 0.5 * (1 + erf((x - mean) / (sd * math.sqrt(2))))),
                 {"gen": "normal", "mean": round(mean, 6), "sd": round(sd, 6)}))  # fmt: skip
    if lo > 0:
        logs = np.log(values)
        mu, sigma = float(logs.mean()), float(logs.std()) or 1e-9
        fits.append((
            _ks(values, lambda x: 0.5 * (1 + erf((np.log(x) - mu) / (sigma * math.sqrt(2))))),
            {"gen": "lognormal", "mu": round(mu, 6), "sigma": round(sigma, 6)},
        ))  # fmt: skip
    if lo >= 0 and mean > 0:
        fits.append((_ks(values, lambda x: 1 - np.exp(-x / mean)),
                     {"gen": "exponential", "mean": round(mean, 6)}))  # fmt: skip
    best = min(fits, key=lambda f: f[0])[1]
    return {**best, "min": lo, "max": hi}


def _shape(s: str) -> str:
    out = []
    for c in s:
        if c.isdigit():
            out.append("#")
        elif "A" <= c <= "Z":
            out.append("?")
        elif "a" <= c <= "z":
            out.append("[a-z]")
        elif c in "#?[]{}\\":
            out.append("_")
        else:
            out.append(c)
    return "".join(out)


def _is_time(values: list[str]) -> bool:
    try:
        for v in values[:200]:
            dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return False
    return any("T" in v or ":" in v for v in values[:200])


def draft_field(values: list[Any], times: list[int] | None) -> tuple[dict[str, Any], str | None]:
    """A field's generator from its values (None for null), and a note (what was dropped)."""
    present = [_plain(v) for v in values if v is not None]
    null_rate = 1 - len(present) / len(values) if values else 0.0
    spec, note = _draft(present, [t for t, v in zip(times or [], values, strict=False)
                                  if v is not None] if times else None)  # fmt: skip
    if null_rate > 0:
        spec["null_rate"] = round(null_rate, 4)
    return spec, note


def _plain(v: Any) -> Any:
    """A value as JSON gives it: Avro's and Parquet's decimals, times and dates as numbers
    and text."""
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def _draft(values: list[Any], times: list[int] | None) -> tuple[dict[str, Any], str | None]:
    if not values:
        return {"gen": "const", "value": "", "null_rate": 1.0}, "always null"
    if all(isinstance(v, list) for v in values):
        return _draft_array(values)
    if all(isinstance(v, dict) for v in values):
        fields, notes = draft_fields(values, times)
        return {"gen": "object", "fields": fields}, "; ".join(notes) or None
    if all(isinstance(v, bool) for v in values):
        return _choice(values)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        counts = Counter(values)
        ints = all(isinstance(v, int) for v in values)
        if (
            ints
            and len(counts) == len(values)
            and sorted(values) == list(range(min(values), min(values) + len(values)))
        ):
            return {"gen": "sequence", "start": min(values), "step": 1}, None
        if len(counts) <= 20:
            return _choice(values)
        arr = np.asarray(values, dtype=np.float64)
        spec = _fit(arr)
        if ints:
            spec["integer"] = True
        else:
            places = _decimals(values)
            if places is not None:
                spec["decimals"] = places
        return spec, None
    if all(isinstance(v, str) for v in values):
        if all(UUID.match(v) for v in values[:500]):
            return {"gen": "uuid"}, None
        if _is_date(values):
            return _draft_date(values, times), None
        if times is not None and _is_time(values):
            offsets = [
                dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() - t / 1e6
                for v, t in zip(values, times, strict=False)
            ]
            lo, hi = np.percentile(offsets, [1, 99])
            return {"gen": "time", "offset": [round(float(lo), 3), round(float(hi), 3)]}, None
        counts = Counter(values)
        if len(counts) <= TOP or sum(c for _, c in counts.most_common(TOP)) >= 0.95 * len(values):
            return _choice(values)
        shapes = Counter(_shape(v) for v in values)
        shape, n = shapes.most_common(1)[0]
        note = None if n == len(values) else f"{1 - n / len(values):.0%} have other shapes"
        return {"gen": "pattern", "pattern": shape}, note
    return {"gen": "const", "value": str(values[0])}, "mixed or nested values: drafted as text"


def _is_date(values: list[str]) -> bool:
    try:
        return all(DATE.match(v) and dt.date.fromisoformat(v) for v in values)
    except ValueError:
        return False


def _draft_date(values: list[str], times: list[int] | None) -> dict[str, Any]:
    """Days from the event's date (1st to 99th percentile), else between the extremes."""
    days = [(dt.date.fromisoformat(v) - EPOCH).days for v in values]
    if times is None:
        return {"gen": "date", "between": [(EPOCH + dt.timedelta(days=d)).isoformat()
                                           for d in (min(days), max(days))]}  # fmt: skip
    offsets = [d - t // 86_400_000_000 for d, t in zip(days, times, strict=False)]
    lo, hi = np.percentile(offsets, [1, 99])
    return {"gen": "date", "offset": [math.floor(lo), math.ceil(hi)]}


def _choice(values: list[Any]) -> tuple[dict[str, Any], str | None]:
    counts = Counter(values)
    top = counts.most_common(TOP)
    covered = sum(c for _, c in top)
    note = None if covered == len(values) else f"{1 - covered / len(values):.1%} in a tail left out"
    return {"gen": "choice", "values": [v for v, _ in top],
            "weights": [c for _, c in top]}, note  # fmt: skip


def _draft_array(values: list[list[Any]]) -> tuple[dict[str, Any], str | None]:
    lengths = [len(v) for v in values]
    items = [x for v in values for x in v]
    if not items or not all(isinstance(x, dict) for x in items):
        return {"gen": "const", "value": "[]"}, "lists of plain values are not drafted yet"
    fields, notes = draft_fields(items, None)
    lo, hi = min(lengths), max(lengths)
    counts = Counter(lengths)
    length = {"min": lo, "max": hi, "weights": [counts.get(k, 0) for k in range(lo, hi + 1)]}
    return {"gen": "array", "length": length, "items": fields}, "; ".join(notes) or None


def draft_fields(
    records: list[dict[str, Any]], times: list[int] | None
) -> tuple[dict[str, Any], list[str]]:
    names: dict[str, None] = {}
    for r in records[:1000]:
        names.update(dict.fromkeys(r))
    fields: dict[str, Any] = {}
    notes = []
    for name in names:
        if name in ENVELOPE:
            continue
        key = re.sub(r"[^a-z0-9_]", "_", name.lower())
        if not key or not key[0].isalpha():
            key = "f_" + key
        spec, note = draft_field([r.get(name) for r in records], times)
        fields[key] = spec
        if note:
            notes.append(f"{key}: {note}")
    return fields, notes


def _event_times(records: list[dict[str, Any]]) -> list[int] | None:
    if not records or "event_time" not in records[0]:
        return None
    out = []
    for r in records:
        v = r.get("event_time")
        if isinstance(v, str):
            out.append(int(dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1e6))
        elif isinstance(v, dt.datetime):
            out.append(int(v.timestamp() * 1e6))
        elif isinstance(v, int):
            out.append(v)
        else:
            return None
    return out


def draft(records: list[dict[str, Any]], stream: str) -> tuple[dict[str, Any], list[str]]:
    """A scenario (as a dict) with one template stream drafted from ``records``."""
    return draft_many({stream: records})


def draft_many(samples: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """A scenario with a stream per sample; where a field of one sample refers to a key of
    another (its values unique there, and at least 95 % of this field's found among them), the
    other sample is drafted as an entity too and the field as a reference to it."""
    streams: dict[str, Any] = {}
    rates: dict[str, Any] = {}
    notes: list[str] = []
    for stream, records in samples.items():
        fields, found = draft_fields(records, _event_times(records))
        notes += [f"{stream}.{n}" for n in found]
        streams[stream] = {"doc": "drafted by datafactory infer", "fields": fields}
        rate = 10
        times = _event_times(records)
        if times and len(times) > 1 and max(times) > min(times):
            rate = max(1, round(len(times) / ((max(times) - min(times)) / 1e6)))
        rates[stream] = {"rate": {"profile": "constant", "base": rate}}
    entities: dict[str, Any] = {}
    keys = {s: _keys(r) for s, r in samples.items()}
    for stream, records in samples.items():
        for name in list(streams[stream]["fields"]):
            for other, other_keys in keys.items():
                if other == stream or name in keys[stream]:
                    continue
                for key, values in other_keys.items():
                    share, skewed = _refers(records, name, values)
                    if share < 0.95:
                        continue
                    if other not in entities:
                        entities[other] = _entity(samples[other], key, values)
                    streams[stream]["fields"][name] = {
                        "gen": "ref", "entity": other, "field": key,
                        "pick": "zipf" if skewed else "uniform",
                    }  # fmt: skip
                    notes.append(
                        f"{other}.{key} is a key (unique); {stream}.{name} refers to it "
                        f"({share:.1%} of its values found): a ref to entity {other!r}"
                    )
                    for field, of in _carried(records, name, samples[other], key,
                                              entities[other]["fields"]).items():  # fmt: skip
                        streams[stream]["fields"][field] = {
                            "gen": "lookup", "ref": name, "field": of,
                        }  # fmt: skip
                        notes.append(f"{stream}.{field} is the member's {of}: a lookup")
                    break
                else:
                    continue
                break
    params: dict[str, Any] = {"streams": streams}
    if entities:
        params["entities"] = entities
    name = "-".join(samples)[:40]
    scenario = {
        "run": {"name": f"{name}-draft", "seed": 1},
        "packs": {"template": {"params": params, "streams": rates}},
        "sinks": {"out": {"type": "stdout"}},
    }
    return scenario, notes


def _carried(
    records: list[dict[str, Any]],
    ref: str,
    members: list[dict[str, Any]],
    key: str,
    entity_fields: dict[str, Any],
) -> dict[str, str]:
    """Fields of ``records`` that are a field of the member their ``ref`` names (the same
    value in 99 % of them or more): field -> the member's field."""
    by_key = {m[key]: m for m in members}
    pairs = [(r, by_key[r[ref]]) for r in records if r.get(ref) in by_key]
    out: dict[str, str] = {}
    if len(pairs) < 20:
        return out
    for name in records[0]:
        if name in (ref, *ENVELOPE):
            continue
        candidates = sorted(entity_fields, key=lambda f: f != name)  # the same name first
        for of in candidates:
            if of == key:
                continue
            same = sum(r.get(name) == m.get(of) for r, m in pairs)
            if same >= 0.99 * len(pairs):
                out[name] = of
                break
    return out


def _keys(records: list[dict[str, Any]]) -> dict[str, set[Any]]:
    """Candidate keys: fields whose values are all there, scalar and different."""
    out: dict[str, set[Any]] = {}
    if len(records) < 20:
        return out
    for name in records[0]:
        if name in ENVELOPE:
            continue
        values = [r.get(name) for r in records]
        if all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            distinct = set(values)
            if len(distinct) == len(values):
                out[name] = distinct
    return out


def _refers(records: list[dict[str, Any]], name: str, keys: set[Any]) -> tuple[float, bool]:
    """The share of a field's values found among ``keys``, and whether a few keys take most."""
    values = [r.get(name) for r in records if r.get(name) is not None]
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        return 0.0, False  # (lists, objects, floats: not references)
    if len(set(values)) < 20:
        return 0.0, False
    share = sum(v in keys for v in values) / len(values)
    counts = sorted(Counter(values).values(), reverse=True)
    top = counts[: max(1, len(counts) // 100)]
    return share, sum(top) > 0.1 * len(values)


def _entity(records: list[dict[str, Any]], key: str, values: set[Any]) -> dict[str, Any]:
    """An entity drafted from a sample whose ``key`` is unique: the key made from the member's
    index (so members stay distinct), its other plain fields as drafted."""
    fields, _ = draft_fields(records, None)
    plain = {k: f for k, f in fields.items() if f["gen"] not in ("array", "time", "sequence")}
    plain[key] = _key_field(values)
    ordered = {key: plain.pop(key), **plain}
    return {"count": len(values), "fields": ordered}


def _key_field(values: set[Any]) -> dict[str, Any]:
    if all(isinstance(v, int) for v in values):
        return {"gen": "sequence", "start": min(values), "step": 1}
    texts = [str(v) for v in values]
    if all(UUID.match(t) for t in texts):
        return {"gen": "uuid"}
    shapes = {re.fullmatch(r"([A-Za-z_-]*)(\d+)", t) for t in texts}
    if None not in shapes:
        prefixes = {m.group(1) for m in shapes if m}
        widths = {len(m.group(2)) for m in shapes if m}
        if len(prefixes) == 1 and len(widths) == 1:
            return {"gen": "pattern", "pattern": f"{prefixes.pop()}{{seq:0{widths.pop()}d}}"}
    return {"gen": "pattern", "pattern": "K{seq:08d}"}


def to_yaml(scenario: dict[str, Any], notes: list[str]) -> str:
    import yaml

    head = "# drafted by `datafactory infer`: edit it, then `datafactory run` it\n"
    head += "".join(f"# note: {n}\n" for n in notes)
    body = yaml.safe_dump(
        scenario, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )
    return head + body if body.endswith("\n") else head + body + "\n"


def compare(sample: list[dict[str, Any]], made: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per field: the KS distance (numbers) or the overlap of shares (the rest), and whether
    that is close (KS <= MAX_KS, overlap >= MIN_OVERLAP)."""
    report: dict[str, dict[str, Any]] = {}
    sample, made = [_flat(r) for r in sample], [_flat(r) for r in made]
    seen: dict[str, None] = {}
    for r in sample[:1000]:
        seen.update(dict.fromkeys(r))
    names = [k for k in seen if k not in ENVELOPE and not any(o.startswith(k + ".") for o in seen)]
    for name in names:
        a = [r.get(name) for r in sample]
        b = [r.get(name) for r in made]
        a_num = [float(x) for x in a if isinstance(x, int | float) and not isinstance(x, bool)]
        b_num = [float(x) for x in b if isinstance(x, int | float) and not isinstance(x, bool)]
        if a_num and len(a_num) == len([x for x in a if x is not None]) and b_num:
            x, y = np.sort(a_num), np.sort(b_num)
            grid = np.concatenate([x, y])
            ks = float(np.max(np.abs(np.searchsorted(x, grid, "right") / len(x)
                                     - np.searchsorted(y, grid, "right") / len(y))))  # fmt: skip
            report[name] = {"ks": round(ks, 4), "close": ks <= MAX_KS}
        else:
            ca = Counter(_category(v) for v in a)
            cb = Counter(_category(v) for v in b)
            overlap = sum(min(ca[k] / len(a), cb[k] / len(b)) for k in ca)
            report[name] = {"overlap": round(overlap, 4), "close": overlap >= MIN_OVERLAP}
    return report


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A record with its nested records' fields as ``ship.city`` (values as JSON has them)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = _plain(v)
    return out


def _category(v: Any) -> Any:
    """What is compared for text: its shape (ids differ, their shapes should not)."""
    if isinstance(v, str):
        return v if len(v) <= 24 and not any(c.isdigit() for c in v) else _shape(v)
    if isinstance(v, list):
        return f"list[{len(v)}]"
    return v


def render(
    scenario: dict[str, Any], n: int, seed: int = 1, stream: str | None = None
) -> list[dict[str, Any]]:
    """``n`` events of one of the draft's streams (its first by default), as JSON records."""
    import orjson

    from datafactory.config import parse_config
    from datafactory.encoders import build_encoder
    from datafactory.engine.seeding import SeedTree
    from datafactory_template import TemplatePack

    cfg = parse_config(json.dumps(scenario))
    stream = stream or next(iter(scenario["packs"]["template"]["params"]["streams"]))
    gen = TemplatePack(cfg.pack_params["template"], SeedTree(seed)).stream(stream)
    block = gen.generate(0, 1_772_409_600_000_000 + np.arange(n, dtype=np.int64) * 1000)
    payload = bytes(build_encoder("json", gen.schema, seed).encode(block).payload)
    return [orjson.loads(x) for x in io.BytesIO(payload).read().splitlines()]
