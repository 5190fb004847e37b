"""Composing a topology's YAML safely: hostile files are refused fast, with a line.

PyYAML builds a graph of nodes in which an alias is the very node its anchor names, so a
"billion laughs" file (anchors of lists of aliases of lists...) is small as a graph and
enormous once expanded, and an alias inside its own anchor (`&a [*a]`) is a cycle that
expands forever. Topologies are read by walking and constructing nodes, so before that,
`compose` counts the values as written (stopping at `MAX_YAML_NODES`), then walks the
graph once, without recursion, counting nodes as they would be
expanded: a cycle, nesting deeper than `MAX_YAML_DEPTH`, or more than `MAX_YAML_NODES`
expanded nodes is refused with the line where it was found. The file is parsed with libyaml
(PyYAML's C loader), which itself refuses nesting deeper than 1,000 levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_YAML_DEPTH = 64
"""Deepest nesting of lists and mappings in a topology. A supervision level takes three
(child, supervisor, children), so this allows about twenty nested supervisors; the Python
code that reads the file would crash far deeper."""
MAX_YAML_NODES = 20_000
"""Most values (scalars, lists, mappings) in a topology, counted once as written and once
with its aliases expanded; a large topology has a few thousand. Beyond it the file is
refused before it is built (as written) or as an alias bomb (expanded)."""

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlRefused(Exception):
    """The document cannot be read safely; `line` is 1-based, or None."""

    message: str
    line: int | None


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def compose(text: str) -> Node | None:
    """The document's node graph, checked for cycles, depth and expanded size. Raises
    `yaml.YAMLError` for text that is not YAML, `YamlRefused` for a hostile document."""
    count = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)):
            count += 1
            if count > MAX_YAML_NODES:
                mark = event.start_mark
                raise YamlRefused(f"more than {MAX_YAML_NODES} values", mark.line + 1 if mark else None)
    document = yaml.compose(text, Loader=_Loader)
    if document is not None:
        check_graph(document)
    return document


def check_graph(root: Node) -> None:
    """Walk `root` as if every alias were expanded, refusing cycles, depth and size."""
    visited = 0
    on_path: set[int] = set()
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]  # (node, depth, leaving)
    while stack:
        node, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            continue
        visited += 1
        if visited > MAX_YAML_NODES:
            raise YamlRefused(
                f"more than {MAX_YAML_NODES} values once aliases are expanded (an alias bomb?)", _line(node)
            )
        if depth > MAX_YAML_DEPTH:
            raise YamlRefused(f"nested more than {MAX_YAML_DEPTH} levels deep", _line(node))
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            continue
        if id(node) in on_path:
            raise YamlRefused("an alias refers to a value that contains it (a recursive alias)", _line(node))
        on_path.add(id(node))
        stack.append((node, depth, True))
        for child in reversed(children):
            if id(child) in on_path:
                raise YamlRefused("an alias refers to a value that contains it (a recursive alias)", _line(child))
            stack.append((child, depth + 1, False))
