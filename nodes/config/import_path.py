"""Where a topology's own actors (``package.module:Class``) import from.

The directory of the topology file comes first on `sys.path`, then the working directory,
ahead of everything else. The installed `flotilla` command would otherwise see neither (a
console script puts its own ``bin`` directory first), while the nodes that `flotilla up`
starts with ``python -m`` would see the working directory only; with both directories first
in one order, `flotilla check`, `flotilla up`, `flotilla node start` and every node resolve
an actor reference to the same module, and a project's own top-level package (``actors``,
``shop``...) is its own, not an installed one of the same name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def project_dirs(topology_path: str | Path) -> list[Path]:
    """The directories a topology's actor references import from, first to last."""
    dirs = [Path(topology_path).resolve().parent, Path.cwd().resolve()]
    return list(dict.fromkeys(dirs))


def put_project_first(topology_path: str | Path) -> None:
    """Put `project_dirs(topology_path)` at the front of `sys.path`, each once (an entry
    already on the path for the same directory, ``''`` included, moves to the front)."""
    first = [str(d) for d in project_dirs(topology_path)]
    rest = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) not in first]
    sys.path[:] = [*first, *rest]
