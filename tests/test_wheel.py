"""What `pip install .` installs: one top-level package, `flotilla`, and nothing called
`actors` or `nodes`. The wheel is built offline from a copy of the source (the checkout
stays clean) and installed into a fresh virtual environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "flotilla", "actors", "nodes")


def run(*argv: str | Path, cwd: Path) -> str:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built without build isolation (no package index)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    pip_wheel = ("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, ".")
    run(sys.executable, *pip_wheel, cwd=source)
    (built,) = dist.glob("flotilla-*.whl")
    return built


def test_the_wheel_holds_only_the_flotilla_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = [top for top in tops if top.startswith("flotilla-") and top.endswith(".dist-info")]
    assert tops == {"flotilla", *dist_info} and len(dist_info) == 1, tops
    for expected in ("flotilla/py.typed", "flotilla/actors/core/actor.py", "flotilla/nodes/cli/__init__.py"):
        assert expected in names
    sources = {
        f"flotilla/{p.relative_to(ROOT).as_posix()}"
        for folder in ("actors", "nodes")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert sources - set(names) == set(), "modules of the checkout missing from the wheel (pyproject's packages)"
    assert zipfile.ZipFile(wheel).read(f"{dist_info[0]}/top_level.txt").decode().split() == ["flotilla"]


def test_installed_into_a_fresh_venv_it_adds_no_top_level_actors_or_nodes(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "v"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path
    )
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    assert (purelib / "flotilla" / "actors" / "core" / "actor.py").is_file()
    assert not (purelib / "actors").exists() and not (purelib / "nodes").exists()
    found = run(
        python,
        "-c",
        "import importlib.util as u; print([n for n in ('actors', 'nodes', 'flotilla') if u.find_spec(n)])",
        cwd=tmp_path,  # no actors/ or nodes/ here
    )
    assert found.strip() == "['flotilla']"

    # The dependencies from this interpreter's environment (not its editable flotilla, whose
    # finder is installed by a .pth file that a plain path entry does not run): the
    # installed package imports and its `flotilla` command checks a topology.
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    where = run(python, "-c", "import flotilla.actors.core.actor as m; print(m.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(purelib)
    (tmp_path / "tree.yaml").write_text(
        "nodes: {solo: {}}\ntree: {children: [{id: tally, actor: tally}]}\n", encoding="utf-8"
    )
    checked = run(venv / "bin" / "flotilla", "check", "tree.yaml", cwd=tmp_path)
    assert "└─ tally  worker flotilla.actors.demo.tally:Tally" in checked
