"""The cluster directory: which node runs which path, and the spec behind a path.

Placement is part of the topology, which every node reads, so every node answers
`whereis(path)` alike without asking anyone: a path runs on the node of its deepest
ancestor placed with `node:`, a pool replica ``i`` on ``nodes[i % len(nodes)]`` of its pool,
and anything else (a child started at run time) on its supervisor's node.
"""

from __future__ import annotations

import functools

from flotilla.actors.core.child_spec import PoolSpec, Spec, SupervisorSpec
from flotilla.nodes.config.topology import Topology

WALK_CACHE = 16_384
"""How many path lookups are remembered (the topology never changes while a node runs)."""


class Directory:
    """Answers where a path runs and what spec it has, from the topology alone."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.root_path = topology.root_path
        self._walk = functools.lru_cache(maxsize=WALK_CACHE)(self._walk_uncached)

    def _walk_uncached(self, path: str) -> tuple[str, Spec | None]:
        """The node running `path` and its spec (None if the topology does not name it)."""
        root_prefix = self.root_path
        node = self.topology.root_node
        if path == root_prefix:
            return node, self.topology.tree
        if not path.startswith(root_prefix + "/"):
            head = path.split("/", 1)[0]
            return (head if head in self.topology.nodes else node), None
        spec: Spec | None = self.topology.tree
        for segment in path[len(root_prefix) + 1 :].split("/"):
            if isinstance(spec, SupervisorSpec):
                spec = next((c for c in spec.children if c.id == segment), None)
                if isinstance(spec, (SupervisorSpec, PoolSpec)) and spec.node:
                    node = spec.node
            elif isinstance(spec, PoolSpec) and segment.isdigit():
                if spec.replica_nodes:
                    node = spec.replica_nodes[int(segment) % len(spec.replica_nodes)]
                spec = spec.replica(int(segment))
            else:
                spec = None
            if spec is None:
                break
        return node, spec

    def whereis(self, path: str) -> str:
        """The node that runs (or would run) `path`."""
        return self._walk(path)[0]

    def spec_at(self, path: str) -> Spec | None:
        """The topology's spec for `path`, or None if it names no such child."""
        return self._walk(path)[1]
