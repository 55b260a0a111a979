"""The Terraform in ``deploy/terraform`` as data, for the deploy tests: HCL parsed by
python-hcl2 and normalised (labels and strings unquoted, blocks told from attributes), and
the AWS provider's schema read from the jsii assembly of its prebuilt CDK-for-Terraform
bindings (npm ``@cdktf/provider-aws``: every resource's arguments and nested blocks, without
the provider binary or the registry)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "deploy" / "terraform"
JSII = ROOT / "build" / "npm" / "provider-aws.jsii"
SCHEMA_CACHE = ROOT / "build" / "npm" / "provider-aws-schema.json"
# Terraform's own arguments of every resource and data block
META = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}


def unquote(v: Any) -> Any:
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    if isinstance(v, list):
        return [unquote(x) for x in v]
    if isinstance(v, dict):
        return {unquote(k): unquote(x) for k, x in v.items()}
    return v


@dataclass
class Block:
    """One resource, data or nested block: its attributes and its nested blocks (by name,
    each a list), with the comments inside it (checkov's skips live there)."""

    attrs: dict[str, Any] = field(default_factory=dict)
    blocks: dict[str, list[Block]] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)


def block(raw: dict[str, Any]) -> Block:
    b = Block()
    for k, v in raw.items():
        if k == "__comments__":
            b.comments = [c["value"] for c in v]
        elif k.startswith("__"):
            continue
        elif k == "dynamic":  # dynamic "name" { for_each, content {...} }: a block named name
            for d in v:
                for name, body in d.items():
                    content = body.get("content", [{}])
                    b.blocks.setdefault(unquote(name), []).extend(block(c) for c in content)
        elif isinstance(v, list) and v and all(isinstance(x, dict) and x.get("__is_block__")
                                               for x in v):  # fmt: skip
            b.blocks.setdefault(k, []).extend(block(x) for x in v)
        elif isinstance(v, dict) and v.get("__is_block__"):
            b.blocks.setdefault(k, []).append(block(v))
        else:
            b.attrs[k] = unquote(v)
    return b


@dataclass
class Module:
    """Every file of a folder: resources and data sources as (type, name) -> Block, and the
    variables, locals, outputs and ephemeral resources as parsed."""

    path: Path
    resources: dict[tuple[str, str], Block] = field(default_factory=dict)
    data: dict[tuple[str, str], Block] = field(default_factory=dict)
    variables: dict[str, Block] = field(default_factory=dict)
    modules: dict[str, Block] = field(default_factory=dict)
    ephemeral: dict[tuple[str, str], Block] = field(default_factory=dict)
    text: str = ""


def load(path: Path) -> Module:
    m = Module(path)
    for f in sorted(path.glob("*.tf")):
        m.text += f.read_text()
        doc = hcl2.loads(f.read_text())
        for kind, into in (("resource", m.resources), ("data", m.data),
                           ("ephemeral", m.ephemeral)):  # fmt: skip
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        into[(unquote(rtype), unquote(name))] = block(body)
        for entry in doc.get("variable", []):
            for name, body in entry.items():
                m.variables[unquote(name)] = block(body)
        for entry in doc.get("module", []):
            for name, body in entry.items():
                m.modules[unquote(name)] = block(body)
    return m


# -- the provider's schema ----------------------------------------------------------------------

LINK = re.compile(r"docs/(resources|data-sources)/(\w+)#(\w+) ")
CLASS = re.compile(r"Represents a \{@link https://registry\.terraform\.io/providers/hashicorp/aws/"
                   r"([\d.]+)/docs/(resources|data-sources)/(\w+) (aws_\w+)\}")  # fmt: skip


def _struct(t: Any) -> str | None:
    """The struct a property's type holds (a nested block), if any."""
    if isinstance(t, dict):
        fqn = t.get("fqn")
        if isinstance(fqn, str) and fqn.startswith("@cdktf/provider-aws."):
            return fqn
        for v in t.values():
            found = _struct(v)
            if found:
                return found
    if isinstance(t, list):
        for v in t:
            found = _struct(v)
            if found:
                return found
    return None


def provider_schema() -> dict[str, Any]:
    """{"version": provider version, "resource": {type: schema}, "data": {type: schema}};
    a schema is {argument: None | nested block schema}. Read from the jsii assembly once,
    then from a cache beside it."""
    if SCHEMA_CACHE.exists() and SCHEMA_CACHE.stat().st_mtime >= JSII.stat().st_mtime:
        cached: dict[str, Any] = json.loads(SCHEMA_CACHE.read_text())
        return cached
    types = json.loads(JSII.read_bytes())["types"]

    def props(fqn: str, depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        t = types.get(fqn, {})
        for p in t.get("properties", []):
            docs = p.get("docs", {})
            link = LINK.search(docs.get("summary", "") + " " + docs.get("remarks", ""))
            if link is None:
                continue
            nested = _struct(p.get("type"))
            out[link.group(3)] = props(nested, depth + 1) if nested and depth < 8 else None
        return out

    schema: dict[str, Any] = {"version": None, "resource": {}, "data": {}}
    for fqn, t in types.items():
        m = CLASS.search(t.get("docs", {}).get("summary", ""))
        if t.get("kind") != "class" or m is None:
            continue
        schema["version"] = m.group(1)
        kind = "resource" if m.group(2) == "resources" else "data"
        schema[kind][m.group(4)] = props(fqn + "Config")
    SCHEMA_CACHE.write_text(json.dumps(schema))
    return schema
