"""`flotilla keys generate`: CURVE key pairs for nodes, operators and clients."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flotilla.nodes.cli.common import (
    EXIT_USAGE,
)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from flotilla.nodes.security.keys import KeyFileError, generate_keys

    names = args.name or []
    if not names:
        print("name the node(s) to make keys for: --name NODE (repeatable)", file=sys.stderr)
        return EXIT_USAGE
    for name in names:
        try:
            public, secret = generate_keys(Path(args.directory), name, overwrite=args.force)
        except KeyFileError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
        print(f"{name}: public key {public}, secret key {secret} (mode 600)")
    return 0


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    keys = commands.add_parser("keys", help="CURVE keys for the cluster")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser("generate", help="write NODE.key and NODE.key_secret (0600)")
    generate.add_argument("directory", help="key directory (created 0700)")
    generate.add_argument("--name", action="append", help="a node, operator or client name; repeatable")
    generate.add_argument("--force", action="store_true", help="replace existing keys")
    generate.set_defaults(handler=cmd_keys_generate)
