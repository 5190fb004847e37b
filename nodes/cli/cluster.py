"""Running nodes: `flotilla node start`, `flotilla up` and `flotilla down`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from flotilla.nodes.cli.common import (
    EXIT_USAGE,
    load_or_report,
    topology_option,
)


def _remember_stop_signals() -> list[int]:
    """Until a node (or `up`) installs its own handlers: note SIGTERM and SIGINT instead of
    dying by them, so that one signalled while it loads still stops cleanly (exit code 0)."""
    received: list[int] = []

    def remember(signum: int, _frame: object) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, remember)
    signal.signal(signal.SIGINT, remember)
    return received


def cmd_node_start(args: argparse.Namespace) -> int:
    received = _remember_stop_signals()
    from flotilla.nodes.runtime.logs import configure_logging, report_logger
    from flotilla.nodes.runtime.node import NodeRun

    topology = load_or_report(args.topology)
    if topology is None:
        return EXIT_USAGE
    node = args.node or topology.root_node
    if node not in topology.nodes:
        print(f"{topology.source}: no node {node!r} (nodes: {', '.join(topology.nodes)})", file=sys.stderr)
        return EXIT_USAGE
    if args.run_for is not None and args.run_for <= 0:
        print("--run-for must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    os.umask(0o077)  # every file the node writes (journal, logs, keys, sockets) is owner-only
    configure_logging(node, level=args.log_level, fmt=args.log_format)
    run = NodeRun(topology, node)
    tracebacks = args.log_level == "debug" or args.log_format == "json"
    run.system.add_report_listener(report_logger(tracebacks=tracebacks))
    run.install_signal_handlers()
    if received:
        run.request_stop(received[0])
    return run.run(run_for=args.run_for)


def cmd_up(args: argparse.Namespace) -> int:
    received = _remember_stop_signals()
    from flotilla.nodes.runtime.launcher import Launcher
    from flotilla.nodes.security.keys import KeyFileError, keys_dir

    topology = load_or_report(args.topology)
    if topology is None:
        return EXIT_USAGE
    if args.run_for is not None and args.run_for <= 0:
        print("--run-for must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    os.umask(0o077)  # the nodes inherit it: every file they write is owner-only
    try:
        keys_dir(topology)  # generated once, before any node starts
    except KeyFileError as exc:
        print(f"{topology.source}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log_format = args.log_format
    if log_format == "auto":
        log_format = "console" if sys.stdout.isatty() else "json"
    launcher = Launcher(topology, args.topology, log_format=log_format)
    signal.signal(signal.SIGTERM, launcher.request_stop)
    signal.signal(signal.SIGINT, launcher.request_stop)
    if received:
        launcher.request_stop(received[0])
    return launcher.run(run_for=args.run_for)


def cmd_down(args: argparse.Namespace) -> int:
    from flotilla.nodes.runtime.launcher import stop_launcher

    topology = load_or_report(args.topology)
    if topology is None:
        return EXIT_USAGE
    stopped, message = stop_launcher(topology)
    print(message, file=sys.stdout if stopped else sys.stderr)
    return 0 if stopped else 1


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    node = commands.add_parser("node", help="run a node")
    node_commands = node.add_subparsers(dest="node_command", required=True)
    start = node_commands.add_parser("start", help="run a node's part of the tree until stopped")
    topology_option(start)
    start.add_argument("--node", help="node to run (default: the tree's node, else the first node)")
    start.add_argument(
        "--run-for",
        type=float,
        metavar="SECONDS",
        help="stop gracefully after this many seconds (default: run until signalled)",
    )
    start.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    start.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="auto: console on a terminal, JSON lines otherwise",
    )
    start.set_defaults(handler=cmd_node_start)

    up = commands.add_parser("up", help="run every node of the topology on this machine")
    topology_option(up)
    up.add_argument(
        "--run-for",
        type=float,
        metavar="SECONDS",
        help="stop every node after this many seconds (default: until signalled)",
    )
    up.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="the nodes' log format (auto: console on a terminal, JSON lines otherwise)",
    )
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="stop the nodes started by 'flotilla up'")
    topology_option(down)
    down.set_defaults(handler=cmd_down)
