"""docs/deploy.md's topology for several machines is a valid topology (checked as `flotilla
check` would, with a key directory of its nodes' keys in place of /etc/flotilla/keys)."""

from __future__ import annotations

import re
from pathlib import Path

from flotilla.nodes.config.topology import parse_topology
from flotilla.nodes.security.keys import generate_keys

DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"


def test_the_topology_for_several_machines_is_valid(tmp_path: Path) -> None:
    example = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[0]
    keys = tmp_path / "keys"
    for node in ("hq-a", "hq-b", "fetch-1", "fetch-2"):
        generate_keys(keys, node)
    topology = parse_topology(example.replace("/etc/flotilla/keys", str(keys)), "deploy.md", tmp_path)
    assert topology.failover is not None and topology.failover.candidates == ("hq-a", "hq-b")
    assert topology.journal_is_shared
    assert [intake.node for intake in topology.intakes] == ["hq-a", "hq-b"]
    assert topology.root_path == "hq-a/root"
