"""Running nodes: `flotilla node start`, `flotilla up` (in the foreground or `--detach`ed)
and `flotilla down`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from flotilla.nodes.cli.common import (
    EXIT_USAGE,
    load_or_report,
    topology_option,
)

EXIT_ALREADY_RUNNING = 1
"""`flotilla up` refused: another `flotilla up` holds the data directory's pid file."""
DETACH_TIMEOUT = 60.0
"""Longest wait, with `up --detach`, for the launcher in the background to take its pid file."""


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
    color = {"always": True, "never": False}.get(args.log_color)
    configure_logging(node, level=args.log_level, fmt=args.log_format, color=color)
    run = NodeRun(topology, node)
    tracebacks = args.log_level == "debug" or args.log_format == "json"
    run.system.add_report_listener(report_logger(tracebacks=tracebacks))
    run.install_signal_handlers()
    if received:
        run.request_stop(received[0])
    return run.run(run_for=args.run_for)


def cmd_up(args: argparse.Namespace) -> int:
    received = _remember_stop_signals()
    from flotilla.nodes.runtime.launcher import Launcher, pid_file
    from flotilla.nodes.runtime.pidlock import AlreadyRunning, PidLock
    from flotilla.nodes.security.keys import KeyFileError, keys_dir

    topology = load_or_report(args.topology)
    if topology is None:
        return EXIT_USAGE
    if args.run_for is not None and args.run_for <= 0:
        print("--run-for must be > 0 seconds", file=sys.stderr)
        return EXIT_USAGE
    os.umask(0o077)  # the nodes inherit it: every file they write is owner-only
    if args.detach:
        return _detach(args, topology)
    try:
        lock = PidLock.acquire(pid_file(topology))
    except AlreadyRunning as exc:
        print(f"{topology.source}: {exc}: stop it with flotilla down", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:
        keys_dir(topology)  # generated once, before any node starts
    except KeyFileError as exc:
        lock.release()
        print(f"{topology.source}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log_format = args.log_format
    if log_format == "auto":
        log_format = "console" if sys.stdout.isatty() else "json"
    color = log_format == "console" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    launcher = Launcher(topology, args.topology, log_format=log_format, color=color, lock=lock)
    signal.signal(signal.SIGTERM, launcher.request_stop)
    signal.signal(signal.SIGINT, launcher.request_stop)
    if received:
        launcher.request_stop(received[0])
    return launcher.run(run_for=args.run_for)


def _detach(args: argparse.Namespace, topology: Any) -> int:
    """Start `flotilla up` in the background (a session of its own, its output appended to
    ``<data_dir>/up.log``); return once it holds the pid file, printing its pid and the log."""
    from flotilla.nodes.runtime.launcher import log_path, pid_file
    from flotilla.nodes.runtime.pidlock import holder

    running = holder(pid_file(topology))
    if running is not None:
        print(
            f"{topology.source}: 'flotilla up' is already running for this data directory "
            f"(pid {running}, holds {pid_file(topology)}): stop it with flotilla down",
            file=sys.stderr,
        )
        return EXIT_ALREADY_RUNNING
    log = log_path(topology)
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    offset = os.lseek(fd, 0, os.SEEK_END)
    command = [sys.executable, "-m", "flotilla.nodes.cli", "up", "--topology", args.topology]
    command += ["--log-format", "console" if args.log_format == "console" else "json"]
    if args.run_for is not None:
        command += ["--run-for", str(args.run_for)]
    try:
        launcher = subprocess.Popen(  # noqa: S603  our own interpreter and arguments
            command, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + DETACH_TIMEOUT
    while holder(pid_file(topology)) != launcher.pid:
        code = launcher.poll()
        if code is not None or time.monotonic() >= deadline:
            if code is None:
                launcher.terminate()
                why = f"did not take {pid_file(topology)} within {DETACH_TIMEOUT:g} s: stopped"
            else:
                why = f"exited with code {code} as it started"
            print(f"'flotilla up' (pid {launcher.pid}) {why}; its output ({log}):", file=sys.stderr)
            with open(log, encoding="utf-8", errors="replace") as output:
                output.seek(offset)
                for line in output.read().splitlines()[-20:]:
                    print(f"  {line}", file=sys.stderr)
            return code or 1
        time.sleep(0.05)
    print(f"flotilla up running in the background: pid {launcher.pid}, log {log}")
    return 0


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
    start.add_argument(
        "--log-color",
        default="auto",
        choices=["auto", "always", "never"],
        help="colour console lines (auto: when stdout is a terminal; `flotilla up` passes its own terminal's answer)",
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
    up.add_argument(
        "--detach",
        action="store_true",
        help="run in the background (output appended to <data_dir>/up.log); return once it runs",
    )
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="stop the nodes started by 'flotilla up'")
    topology_option(down)
    down.set_defaults(handler=cmd_down)
