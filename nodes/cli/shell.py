"""`flotilla shell`: a shell on a running node, over IPC or an operator's CURVE TCP socket."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flotilla.nodes.cli.common import (
    EXIT_USAGE,
    load_for_client,
    topology_option,
)


def cmd_shell(args: argparse.Namespace) -> int:
    from flotilla.nodes.shell.client import ShellClient, ShellUnavailable, interactive, missing_socket, run_line
    from flotilla.nodes.shell.protocol import shell_address

    if args.target and args.target.startswith(("ipc://", "tcp://")):
        missing = missing_socket(args.target)
        if missing is not None:
            print(f"no node running at {args.target} ({missing})", file=sys.stderr)
            return 1
        client, node = ShellClient(args.target, timeout=args.timeout), args.target
    else:
        topology = load_for_client(args.topology)
        if topology is None:
            return EXIT_USAGE
        node = args.node or args.target or topology.root_node
        if node not in topology.nodes:
            print(f"{topology.source}: no node {node!r} (nodes: {', '.join(topology.nodes)})", file=sys.stderr)
            return EXIT_USAGE
        if args.operator is None:
            missing = missing_socket(shell_address(topology.node_data_dir(node)))
            if missing is not None:
                print(f"no node {node} running ({missing}): start it with flotilla up", file=sys.stderr)
                return 1
        made = _shell_client(topology, node, args)
        if made is None:
            return EXIT_USAGE
        client = made
    try:
        if args.exec is not None:
            return 0 if run_line(client, args.exec, as_json=args.json) else 1
        return interactive(client, node)
    except ShellUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        client.close()


def _shell_client(topology: Any, node: str, args: argparse.Namespace):  # noqa: ANN202
    """The node's IPC shell, or with --operator its TCP shell under that operator's key."""
    from flotilla.nodes.security.keys import KeyFileError, load_public, load_secret
    from flotilla.nodes.shell.client import ShellClient
    from flotilla.nodes.shell.protocol import shell_address

    if args.operator is None:
        return ShellClient(shell_address(topology.node_data_dir(node)), timeout=args.timeout)
    tcp, keys = topology.nodes[node].shell, topology.security.keys
    if tcp is None or keys is None:
        print(f"{topology.source}: node {node} has no TCP shell (nodes.{node}.shell)", file=sys.stderr)
        return None
    secret_file = Path(args.operator_key or Path.home() / ".flotilla" / f"{args.operator}.key_secret")
    try:
        public, secret = load_secret(secret_file.parent, secret_file.name.removesuffix(".key_secret"))
        return ShellClient(tcp, timeout=args.timeout, curve=(public, secret, load_public(keys, node)))
    except KeyFileError as exc:
        print(str(exc), file=sys.stderr)
        return None


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    shell = commands.add_parser("shell", help="a shell on a running node: inspect and steer its supervisors")
    shell.add_argument(
        "target",
        nargs="?",
        metavar="NODE|ADDRESS",
        help="a node of the topology (default: the root's) or a shell address (ipc://...)",
    )
    shell.add_argument("--node", help="the node to attach to")
    shell.add_argument("--exec", metavar="CMD", help="run one command and exit (1 if it fails)")
    shell.add_argument("--json", action="store_true", help="with --exec: print the raw answer as JSON")
    shell.add_argument("--operator", metavar="NAME", help="attach over the node's TCP shell as this operator")
    shell.add_argument(
        "--operator-key",
        metavar="FILE",
        help="the operator's secret key (default ~/.flotilla/NAME.key_secret; never deploy it "
        "with the nodes, which refuse to start a TCP shell if it is in security.keys)",
    )
    topology_option(shell)
    shell.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for an answer")
    shell.set_defaults(handler=cmd_shell)
