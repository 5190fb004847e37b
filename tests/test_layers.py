"""Import directions: a module imports only its own layer or the layers it is allowed to.

Every module under actors/ and nodes/ is parsed (not imported) and each `flotilla.*` import
in it, at module level, in a function or under `if TYPE_CHECKING:`, absolute or relative,
is mapped to its layer. An import of a layer that is not allowed, of a `flotilla` module in
no layer, or of the bare names `actors` / `nodes` fails the test with file:line and the
rule. The same table is in docs/architecture.md ("Layers"), checked below.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ACTORS = ("actors.core", "actors.resilience", "actors.pipeline", "actors.demo", "actors.catalog")

ALLOWED: dict[str, tuple[str, ...]] = {
    "actors.core": (),
    "actors.resilience": ("actors.core",),
    "actors.pipeline": ("actors.core", "actors.resilience"),
    "actors.demo": ("actors.core",),
    "actors.catalog": ("actors.core", "actors.resilience", "actors.pipeline", "actors.demo"),
    "nodes.config": ACTORS,
    "nodes.security": (*ACTORS, "nodes.config"),
    "nodes.serving": (*ACTORS, "nodes.config", "nodes.security"),
    "nodes.cluster": (*ACTORS, "nodes.config", "nodes.security", "nodes.serving"),
    "nodes.intake": (*ACTORS, "nodes.config", "nodes.security", "nodes.serving", "nodes.cluster"),
    "nodes.shell": (*ACTORS, "nodes.config", "nodes.security", "nodes.serving", "nodes.cluster", "nodes.intake"),
    "nodes.runtime": (
        *ACTORS,
        *("nodes.config", "nodes.security", "nodes.serving", "nodes.cluster", "nodes.intake", "nodes.shell"),
    ),
    "nodes.cli": (
        *ACTORS,
        *("nodes.config", "nodes.security", "nodes.serving", "nodes.cluster", "nodes.intake", "nodes.shell"),
        "nodes.runtime",
    ),
}
"""Each layer (``flotilla.<layer>``, a package or the module `nodes.cli`) and the layers it may
import besides its own. The package `flotilla.actors` itself counts as `actors.core` (it
re-exports the core) and `flotilla.nodes` as `nodes.config` (it holds nothing)."""

PACKAGE_LAYERS = {"flotilla.actors": "actors.core", "flotilla.nodes": "nodes.config"}
BARE = ("actors", "nodes")


@dataclass(frozen=True)
class Violation:
    """One import that breaks the layering, at `where` (file:line)."""

    where: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.where}: imports {self.imported}: {self.rule}"


def shown(layers: tuple[str, ...]) -> str:
    """`layers` in words: every `actors` layer at once, the others by name."""
    actors = [m for m in layers if m.startswith("actors.")]
    rest = [m for m in layers if not m.startswith("actors.")]
    words = (["every `actors` layer"] if actors == list(ACTORS) else [f"`{m}`" for m in actors]) + [
        f"`{m}`" for m in rest
    ]
    return ", ".join(words) or "no other layer"


def layer_of(module: str) -> str | None:
    """The layer of a `flotilla` module name (or of a name inside one); None outside every layer."""
    if module in PACKAGE_LAYERS:
        return PACKAGE_LAYERS[module]
    for layer in ALLOWED:
        if module == f"flotilla.{layer}" or module.startswith(f"flotilla.{layer}."):
            return layer
    return None


def _target_layer(module: str, names: list[str]) -> list[tuple[str, str | None]]:
    """The imported modules and their layers: `from X import y` imports X.y when that is in a
    layer of its own (a subpackage), else a name from X."""
    found = []
    for name in names or [""]:
        full = f"{module}.{name}" if name and name != "*" else module
        layer = layer_of(full)
        if full != module and full not in PACKAGE_LAYERS and layer in (None, layer_of(module)):
            full, layer = module, layer_of(module)  # a name from X, or X's own submodule: X's layer
        found.append((full, layer))
    return found


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def check_source(source: str, module: str, filename: str, *, is_package: bool = False) -> list[Violation]:
    """The layering violations in `source`, the text of module `module` shown as `filename`."""
    own = layer_of(module)
    violations: list[Violation] = []
    if own is None:
        return [Violation(f"{filename}:1", module, "the module is in no layer; add its package to the table")]
    allowed = {own, *ALLOWED[own]}
    for node in ast.walk(ast.parse(source, filename)):
        imports: list[tuple[str, str | None]] = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports.append((alias.name, layer_of(alias.name)))
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                target = _resolve_relative(module, is_package, node.level, node.module)
                imports += _target_layer(target, names)
            elif node.module is not None:
                imports += _target_layer(node.module, names)
        else:
            continue
        where = f"{filename}:{node.lineno}"
        for imported, layer in dict.fromkeys(imports):
            top = imported.split(".")[0]
            if top in BARE:
                violations.append(Violation(where, imported, f"bare `{top}` import; write flotilla.{imported}"))
            elif top != "flotilla" or imported == "flotilla":
                continue
            elif layer is None:
                violations.append(Violation(where, imported, "a flotilla module in no layer"))
            elif layer not in allowed:
                rule = f"{own} may not import {layer} (it may import {shown(ALLOWED[own])})"
                violations.append(Violation(where, imported, rule))
    return violations


def check_tree(root: Path) -> tuple[int, list[Violation]]:
    """How many modules under `root`/actors and `root`/nodes were checked, and their violations."""
    checked = 0
    violations: list[Violation] = []
    for folder in BARE:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root)
            is_package = path.name == "__init__.py"
            parts = relative.with_suffix("").parts[:-1] if is_package else relative.with_suffix("").parts
            module = ".".join(("flotilla", *parts))
            violations += check_source(path.read_text(encoding="utf-8"), module, str(relative), is_package=is_package)
            checked += 1
    return checked, violations


def test_no_module_imports_a_layer_above_its_own() -> None:
    checked, violations = check_tree(ROOT)
    assert checked >= 70, f"only {checked} modules found under {ROOT}"
    assert not violations, "upward or bare imports:\n" + "\n".join(map(str, violations))


def bare_imports(source: str, filename: str) -> list[str]:
    """file:line of each bare `actors` / `nodes` import in `source` (absolute imports only)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{filename}:{node.lineno}: {name}" for name in names if name.split(".")[0] in BARE]
    return found


def test_no_bare_actors_or_nodes_import_in_tests_or_scripts() -> None:
    paths = sorted([*ROOT.glob("tests/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("flotilla/*.py")])
    assert len(paths) > 50
    found = [
        hit for path in paths for hit in bare_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not found, "bare imports:\n" + "\n".join(found)
    assert bare_imports("import nodes.cli\nfrom actors import Actor\n", "x.py") == [
        "x.py:1: nodes.cli",
        "x.py:2: actors",
    ]


def test_the_checker_reports_a_planted_upward_import(tmp_path: Path) -> None:
    core = tmp_path / "actors" / "core"
    core.mkdir(parents=True)
    (tmp_path / "nodes").mkdir()
    (core / "fine.py").write_text("from flotilla.actors.core.messages import Message\n", encoding="utf-8")
    (core / "planted.py").write_text(
        "from __future__ import annotations\n"
        "\n"
        "from flotilla.nodes.cli import main\n"
        "\n"
        "\n"
        "def later():\n"
        "    from flotilla.actors import pipeline\n"
        "    from ..resilience.view import ResilienceView\n"
        "    import actors.core.system\n",
        encoding="utf-8",
    )
    checked, violations = check_tree(tmp_path)
    assert checked == 2
    none = " (it may import no other layer)"
    assert [str(v) for v in violations] == [
        "actors/core/planted.py:3: imports flotilla.nodes.cli: actors.core may not import nodes.cli" + none,
        "actors/core/planted.py:7: imports flotilla.actors.pipeline: actors.core may not import actors.pipeline" + none,
        "actors/core/planted.py:8: imports flotilla.actors.resilience.view: actors.core may not import "
        + "actors.resilience"
        + none,
        "actors/core/planted.py:9: imports actors.core.system: bare `actors` import; write flotilla.actors.core.system",
    ]


def test_the_checker_allows_what_the_table_allows() -> None:
    source = (
        "from flotilla.actors import Actor\n"
        "from flotilla.actors.core import messages\n"
        "from flotilla.actors.resilience.view import target_of\n"
        "from . import rules\n"
        "import flotilla.actors.pipeline.journal\n"
    )
    assert check_source(source, "flotilla.actors.pipeline.router", "router.py") == []
    (violation,) = check_source("from flotilla.nodes.runtime import node\n", "flotilla.nodes.shell.x", "x.py")
    assert violation.rule.startswith("nodes.shell may not import nodes.runtime (it may import every `actors` layer")
    (violation,) = check_source("from flotilla.actors.pipeline import x\n", "flotilla.actors.demo.y", "y.py")
    assert violation.rule == "actors.demo may not import actors.pipeline (it may import `actors.core`)"


def table_rows() -> list[str]:
    """The table as docs/architecture.md shows it, one Markdown row per layer."""
    return [f"| `flotilla.{layer}` | {shown(may)} |" for layer, may in ALLOWED.items()]


def test_docs_show_the_same_table() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    shown = [line for line in section.splitlines() if line.startswith("| `flotilla.")]
    assert shown == table_rows()
