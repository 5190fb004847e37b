"""The `flotilla` command line.

    flotilla check [--no-import] [TOPOLOGY]
    flotilla node start [--topology T] [--node N] [--run-for SECONDS]
    flotilla up [--topology T] [--run-for SECONDS] [--detach]   every node, as child processes
    flotilla down [--topology T]                        stop what 'up' started
    flotilla status [--json]                            the nodes 'up' runs: pid, up since, ready
    flotilla wait-ready [--timeout S]                   until every node of 'up' is ready
    flotilla keys generate DIR --name NODE [--name ...]
    flotilla submit URLS_FILE|URL... [--rules R] [--jsonl] [--wait [--wait-timeout S]]
    flotilla wait BATCH [--timeout S]          flotilla job KEY|URL [--rules R] [--json]
    flotilla cancel KEY...|--batch B           flotilla breakers reset TARGET
    flotilla reextract [KEY...] [--rules R]    apply fixed rules to captured pages
    flotilla jobs | results | export | dlq | hold | shell     (see docs/cli.md)

Exit codes: 0 success; 1 the tree failed (a root that gave up or could not start), or the
intake is unavailable (when nothing listens, said at once: "no cluster at ...") or refused,
or no `flotilla up` runs (status, wait-ready, down) or one runs already (up); 2 bad usage or
an invalid topology (every problem is printed to stderr); 3 some jobs were rejected or did not
end stored (reextract: some results could not be re-extracted); 4 a wait timed out (wait-ready:
some node not ready in time); 130 a wait was interrupted (Ctrl-C; the jobs go on); 141 the
reader of the output went away (as `flotilla results | head`: the output stops quietly, as a
shell tool's does on SIGPIPE).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from flotilla.nodes.cli import cluster, control, export, jobs, keys, reextract, results, shell, status, tree
from flotilla.nodes.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_NOT_ALL_STORED,
    EXIT_USAGE,
    EXIT_WAIT_TIMED_OUT,
)

EXIT_OUTPUT_CLOSED = 141
"""The reader of stdout closed it (128 + SIGPIPE, what a shell reports for a tool that
SIGPIPE ended)."""

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NOT_ALL_STORED",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_USAGE",
    "EXIT_WAIT_TIMED_OUT",
    "build_parser",
    "main",
]

COMMAND_MODULES = (tree, cluster, status, jobs, control, results, export, reextract, shell, keys)
"""The modules whose commands make up `flotilla`, in the order its help lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The `flotilla` argument parser with every command."""
    parser = argparse.ArgumentParser(prog="flotilla", description="Fault-tolerant worker fleets.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flotilla` console script. Ctrl-C (SIGINT) stops every command the
    same way, even one started with SIGINT ignored (as `flotilla ... &` in a script is):
    following commands (`wait`, `submit --wait`, `shell ... logs --follow`) end cleanly, and
    `node start` and `up` install their own graceful-stop handlers on top."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_closed_stdout()
        return EXIT_OUTPUT_CLOSED
    return code


def package_version() -> str:
    """The installed distribution's version ("unknown" when run from a checkout that is not
    installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flotilla")
    except PackageNotFoundError:
        return "unknown"


def _quiet_closed_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit (to a reader that has gone)
    raises nothing more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
