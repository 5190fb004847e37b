"""The cluster directory: which node runs which path, and the spec behind a path.

Placement is part of the topology, which every node reads, so every node answers
`whereis(path)` alike without asking anyone: a path runs on the node of its deepest
ancestor placed with `node:`, a pool replica ``i`` on ``nodes[i % len(nodes)]`` of its pool,
and anything else (a child started at run time) on its supervisor's node. What is not placed
anywhere runs on the tree's *owner*: the root's node, or with `failover` the candidate that
holds the lease now, as this node last heard it (`set_owner`; a claim with a lower fencing
token than one already heard is refused).
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
        self.owner = topology.root_node
        """The node that runs the tree's root and every path not placed elsewhere."""
        self.owner_token = 0
        """The fencing token of `owner`'s lease (0: no lease, the topology's root node)."""
        self._walk = functools.lru_cache(maxsize=WALK_CACHE)(self._walk_uncached)

    def set_owner(self, node: str, token: int) -> bool:
        """`node` owns the tree under lease `token`: accepted (True) if the token is newer
        than the one known, or the same token from the same node; refused otherwise (a
        stale owner's claim)."""
        if token > self.owner_token or (token == self.owner_token and node == self.owner):
            self.owner, self.owner_token = node, token
            return True
        return False

    def owned(self, path: str) -> bool:
        """`path` runs wherever the tree's owner is (it is not placed on a node)."""
        return self._walk(path)[0] is None

    def _walk_uncached(self, path: str) -> tuple[str | None, Spec | None]:
        """The node running `path` (None: the tree's owner) and its spec (None if the
        topology does not name it)."""
        root_prefix = self.root_path
        node: str | None = None
        if path == root_prefix:
            return node, self.topology.tree
        if not path.startswith(root_prefix + "/"):
            head = path.split("/", 1)[0]
            return (head if head in self.topology.nodes else self.topology.root_node), None
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
        return self._walk(path)[0] or self.owner

    def spec_at(self, path: str) -> Spec | None:
        """The topology's spec for `path`, or None if it names no such child."""
        return self._walk(path)[1]
