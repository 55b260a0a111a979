"""Config text read safely: bounded in size, depth and (aliases expanded) nodes, UTF-8 only,
and a key given twice is an error, not a silent overwrite.

A config may come from anyone who can reach the API or write to the configs folder, so what
it costs to read is bounded before anything is built from it: the text's size, then (walking
the parser's events, which needs no recursion) its nesting and its node count, then the
composed tree with every alias expanded (counted, not built: an alias bomb of a few hundred
bytes names billions of nodes), and only then the Python objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a config is a few KiB; 1 MiB is generous
MAX_DEPTH = 64
MAX_NODES = 200_000  # after aliases are expanded


class YamlError(ValueError):
    """Why the text cannot be a config (one line, says where)."""


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM is allowed); anything else a YamlError naming the first bad byte."""
    if len(data) > MAX_BYTES:
        raise YamlError(f"too big: {len(data):,} bytes (at most {MAX_BYTES:,})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise YamlError(
            f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} (offset {e.start})"
        ) from None


def read_beside(name: str, base_dir: Path | None, what: str) -> tuple[Path, bytes]:
    """A file a scenario names (a params file, a schema): read only from the scenario file's
    folder or below, at most MAX_BYTES (a YamlError says why not). A scenario sent as text
    (``base_dir`` None) names no files."""
    if base_dir is None:
        raise YamlError(
            f"{what} is read only for a scenario file (beside it); a scenario sent as text, "
            "or run by the daemon (which keeps each run's scenario as text), gives it inline"
        )
    base = base_dir.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise YamlError(f"{name!r} is outside the scenario file's folder")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise YamlError(f"cannot read {name!r}: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise YamlError(f"{name!r} is over {MAX_BYTES // 1024} KiB")
    return path, data


def load(text: str) -> Any:
    """The YAML document in ``text``, checked for size, depth, nodes and duplicate keys."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"too big: {len(text):,} characters (at most {MAX_BYTES:,})")
    try:
        _check_events(text)
        root = yaml.compose(text, Loader=_Loader)
        if root is None:
            return None
        _check_expanded(root)
        loader = _Loader(text)
        try:
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise YamlError(f"not valid YAML: {e.problem or e.context}{where}") from None
    except yaml.YAMLError as e:
        raise YamlError(f"not valid YAML: {e}") from None


def _check_events(text: str) -> None:
    depth = nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                where = f" (line {mark.line + 1})" if mark is not None else ""
                raise YamlError(f"nested more than {MAX_DEPTH} levels deep{where}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise YamlError(f"more than {MAX_NODES:,} values")


def _check_expanded(root: yaml.Node) -> None:
    """The node count with every alias expanded, counted once per node object."""
    size: dict[int, int] = {}
    # post-order, iteratively: (node, children counted yet)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if not ready:
            stack.append((node, True))
            stack += [(c, False) for c in children if id(c) not in size]
            continue
        total = 1 + sum(size.get(id(c), 0) for c in children)
        if total > MAX_NODES:
            line = node.start_mark.line + 1
            raise YamlError(
                f"more than {MAX_NODES:,} values once its aliases are expanded (line {line})"
            )
        size[id(node)] = total


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (and keys that are not
    plain values)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            mark = key_node.start_mark
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value", mark
                )
            k = (key_node.tag, key_node.value)
            if k in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key_node.value!r} given twice (first on line {seen[k]})",
                    mark,
                )
            seen[k] = mark.line + 1
        return super().construct_mapping(node, deep=deep)
