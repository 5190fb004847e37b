"""docs/deploy.md says what works: its topologies are valid (checked as `flotilla check` would,
with a key directory of their nodes' keys in place of /etc/flotilla/keys), its StatefulSet
starts pods in any order and names nodes after them, and its systemd unit verifies. (The
Kubernetes manifests are read as YAML only: no cluster runs here.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def test_the_kubernetes_topology_names_the_pods_and_parses_with_a_tree(tmp_path: Path) -> None:
    """The ConfigMap's topology (the tree left out in the doc) with a router pool on the pods."""
    example = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[2]
    keys = tmp_path / "keys"
    for node in ("flotilla-0", "flotilla-1", "flotilla-2"):
        generate_keys(keys, node)
    text = example.replace("/etc/flotilla/keys", str(keys)).replace("/var/lib/flotilla", str(tmp_path / "data"))
    text += (
        "tree:\n  children:\n    - id: routers\n      nodes: [flotilla-0, flotilla-1]\n"
        "      pool: {actor: router, size: 2, args: {fetchers: flotilla-0/root/fetchers}}\n"
        "    - id: fetchers\n      node: flotilla-2\n"
        "      pool: {actor: fetcher, size: 2, args: {extractor: flotilla-0/root/x}}\n"
        "    - id: x\n      node: flotilla-2\n      pool: {actor: extractor, size: 1}\n"
    )
    topology = parse_topology(text, "deploy.md", tmp_path)
    assert topology.root_path == "flotilla-0/root"
    assert topology.nodes["flotilla-1"].address == "tcp://flotilla-1.flotilla.crawl.svc.cluster.local:7101"


def test_the_statefulset_starts_pods_in_parallel_and_names_nodes_after_them() -> None:
    manifests = list(yaml.safe_load_all(re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[1]))
    service, statefulset = manifests
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    spec = statefulset["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    container = pod["containers"][0]
    assert container["args"][container["args"].index("--node") + 1] == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = re.findall(r"```ini\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[0]
    flotilla = Path(sys.executable).parent / "flotilla"
    path = tmp_path / "flotilla@hq-a.service"
    path.write_text(unit.replace("/opt/flotilla/bin/flotilla", str(flotilla)), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "flotilla@hq-a.service" not in done.stderr, done.stderr
