"""The command that starts one node of a topology (benchmarks start them as processes)."""

from __future__ import annotations

import sys
from pathlib import Path


def node_command(topology: Path, name: str, *options: str) -> list[str]:
    """`flotilla node start` for node `name` of `topology` (JSON logs), with `options` after."""
    return [
        sys.executable,
        "-m",
        "flotilla.nodes.cli",
        "node",
        "start",
        "--topology",
        str(topology),
        "--node",
        name,
        "--log-format",
        "json",
        *options,
    ]
