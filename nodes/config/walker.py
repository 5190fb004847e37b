"""Walking the YAML document with positions: every value read is checked against its
section of the schema, and every problem gets its YAML path and line."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flotilla.nodes.config.problems import Problem
from flotilla.nodes.config.schema import default_of, keys_of

FROM_SCHEMA: Any = object()
"""`YamlMapping.get`'s default: take the key's default from the schema."""


class Context:
    """Collects problems while walking the document."""

    def __init__(self, import_actors: bool = True, import_builtins: bool = True) -> None:
        self.problems: list[Problem] = []
        self.node_names: set[str] = set()
        self.actor_paths: list[tuple[str, str, str, Node | None]] = []
        """Actor args that name other actors: (where, path, built-in kind, YAML node)."""
        self.import_actors = import_actors
        self.import_builtins = import_builtins
        """Whether the built-in actors are imported (and their args checked) even when
        `import_actors` is false."""
        self.where: dict[str, Node] = {}
        """YAML node of every key read, by path: the line of a problem found later."""

    def problem(self, path: str, message: str, node: Node | None) -> None:
        if node is None:
            node = self._nearest(path)
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(path, message, line))

    def _nearest(self, path: str) -> Node | None:
        """The node of `path`, or of the closest enclosing path that was read."""
        while path:
            if path in self.where:
                return self.where[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


_constructor = SafeConstructor()


def value_of(node: Node) -> Any:
    """Build the plain Python value of a YAML node."""
    value = _constructor.construct_object(node, deep=True)
    _constructor.constructed_objects.clear()
    _constructor.recursive_objects.clear()
    return value


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class YamlMapping:
    """One YAML mapping checked against a section: duplicate and unknown keys are problems."""

    def __init__(self, ctx: Context, node: Node | None, path: str, section: str) -> None:
        self.ctx = ctx
        self.path = path
        self.section = section
        self.node = node
        self.entries: dict[str, tuple[Node, Node]] = {}
        self.valid = True
        if node is None or (isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
            return
        if not isinstance(node, MappingNode):
            ctx.problem(path, f"must be a mapping, not {kind_of(node)}", node)
            self.valid = False
            return
        allowed = keys_of(section)
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or not isinstance(value_of(key_node), str):
                ctx.problem(path, "keys must be strings", key_node)
                continue
            key = key_node.value
            if key in self.entries:
                ctx.problem(
                    join(path, key),
                    f"duplicate key (the first is on line {self.entries[key][0].start_mark.line + 1})",
                    key_node,
                )
                continue
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                ctx.problem(join(path, key), f"unknown key{suggestion} (allowed: {', '.join(allowed)})", key_node)
                continue
            self.entries[key] = (key_node, value_node)
            ctx.where[join(path, key)] = key_node

    def has(self, key: str) -> bool:
        return key in self.entries

    def node_of(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def get(self, key: str, check: Callable[[Any], str | None], default: Any = FROM_SCHEMA) -> Any:
        """The value of `key`, or its default if absent or invalid (the problem is recorded).
        The default is the schema's unless the caller gives one (one that depends on where the
        section is, such as a node's address)."""
        if default is FROM_SCHEMA:
            default = default_of(self.section, key)
        node = self.node_of(key)
        if node is None:
            return default
        value = value_of(node)
        error = check(value)
        if error is not None:
            self.ctx.problem(join(self.path, key), error, node)
            return default
        return value

    def require(self, key: str, what: str) -> bool:
        if key not in self.entries:
            self.ctx.problem(join(self.path, key), f"is required ({what})", self.node)
            return False
        return True


def kind_of(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = value_of(node)
    return "null" if value is None else f"{type(value).__name__} {value!r}"
