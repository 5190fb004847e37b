"""A user's own project as a user runs it: the installed `flotilla` command (no PYTHONPATH),
run from a project directory that has its own `actors/` package and its own actor
`myproj.x:MyActor`. Actor references import from the topology file's directory, then from
the working directory (docs/topology.md, "Your own actors")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.harness import free_ports
from tests.processes import FlotillaProcess

FLOTILLA = Path(sys.executable).parent / "flotilla"  # the console script pip installed beside this interpreter

HELPERS = '''"""The project's own `actors` package (a top-level name Flotilla does not use)."""


def greeting() -> str:
    return "hello from the project's own actors package"
'''

MY_ACTOR = '''"""The project's actor: it answers `inspect` with what its `actors.helpers` says."""

from actors.helpers import greeting
from flotilla.actors import Actor


class MyActor(Actor):
    def inspect(self):
        return {"greeting": greeting()}
'''

TOPOLOGY = """cluster: myproj
nodes: {solo: {address: "tcp://127.0.0.1:%d"}}
tree:
  children:
    - {id: mine, actor: "myproj.x:MyActor"}
"""


def make_project(root: Path) -> Path:
    """A project directory: `actors/` (its own helpers), `myproj/x.py` and its topology."""
    for package in ("actors", "myproj"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("", encoding="utf-8")
    (root / "actors" / "helpers.py").write_text(HELPERS, encoding="utf-8")
    (root / "myproj" / "x.py").write_text(MY_ACTOR, encoding="utf-8")
    (root / "supervisor_tree.yaml").write_text(TOPOLOGY % free_ports(1)[0], encoding="utf-8")
    return root


def user_env() -> dict[str, str]:
    """The environment of a user's terminal: nothing points Python at any project."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLOTILLA_TOPOLOGY")}


def flotilla(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `flotilla` command from `cwd` to completion."""
    return subprocess.run(
        [str(FLOTILLA), *args], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def processes() -> Iterator[list[FlotillaProcess]]:
    started: list[FlotillaProcess] = []
    yield started
    for process in started:
        process.kill()


def start(processes: list[FlotillaProcess], cwd: Path, *args: str) -> FlotillaProcess:
    process = FlotillaProcess(*args, command=[str(FLOTILLA)], cwd=cwd, env=user_env())
    processes.append(process)
    return process


def test_the_console_script_is_the_one_a_user_runs() -> None:
    assert FLOTILLA.is_file(), f"no console script at {FLOTILLA}"
    assert FLOTILLA.read_text(encoding="utf-8").startswith("#!"), "not the pip-generated console script"


def test_a_project_with_its_own_actors_package_runs_its_own_actor(
    tmp_path: Path, processes: list[FlotillaProcess]
) -> None:
    project = make_project(tmp_path / "p")

    check = flotilla(project, "check")
    assert check.returncode == 0, check.stderr
    assert "└─ mine  worker myproj.x:MyActor" in check.stdout

    up = start(processes, project, "up", "--log-format", "json")
    up.wait_for_event("supervisor.child_started", node="solo", child="solo/root/mine")
    shell = flotilla(project, "shell", "--exec", "inspect solo/root/mine", "--json")
    assert shell.returncode == 0, shell.stdout + shell.stderr
    answer = json.loads(shell.stdout)
    assert answer["ok"], answer
    assert "hello from the project's own actors package" in json.dumps(answer["data"])

    down = flotilla(project, "down")
    assert down.returncode == 0, down.stderr
    assert up.wait(30) == 0
    assert not [e for e in up.events() if e["event"] == "up.node_exited"], "a node crashed:\n" + "\n".join(up.lines)
    assert [(e["node"], e["code"]) for e in up.events() if e["event"] == "up.node_stopped"] == [("solo", 0)]


def test_actor_references_import_from_the_topology_directory_then_the_working_directory(
    tmp_path: Path, processes: list[FlotillaProcess]
) -> None:
    project = make_project(tmp_path / "p")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    topology = project / "supervisor_tree.yaml"
    (project / "conf").mkdir()
    in_conf = project / "conf" / "tree.yaml"
    in_conf.write_text(topology.read_text(encoding="utf-8"), encoding="utf-8")

    from_working_dir = flotilla(project, "check", "conf/tree.yaml")
    assert from_working_dir.returncode == 0, from_working_dir.stderr
    from_neither = flotilla(elsewhere, "check", str(in_conf))
    assert from_neither.returncode == 2
    assert "tree.children[0].actor: cannot import 'myproj.x': No module named 'myproj'" in from_neither.stderr

    # A `myproj` in the working directory too: the topology's directory comes first.
    (elsewhere / "myproj").mkdir()
    (elsewhere / "myproj" / "__init__.py").write_text("", encoding="utf-8")
    (elsewhere / "myproj" / "x.py").write_text("MyActor = 'not an actor'\n", encoding="utf-8")
    from_topology_dir = flotilla(elsewhere, "check", str(topology))
    assert from_topology_dir.returncode == 0, from_topology_dir.stderr
    shadowed = flotilla(elsewhere, "check", str(in_conf))
    assert shadowed.returncode == 2 and "'myproj.x:MyActor' is not a subclass" in shadowed.stderr

    node = start(
        processes, elsewhere, "node", "start", "--topology", str(topology), "--run-for", "1", "--log-format", "json"
    )
    assert node.wait(30) == 0, "\n".join(node.lines)
    node.wait_for_event("supervisor.child_started", child="solo/root/mine")
    assert not (elsewhere / "data").exists(), "the data directory is the topology's, not the working directory's"
