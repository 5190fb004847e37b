"""`flotilla results`: the stored results as JSON lines or CSV."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flotilla.nodes.cli.common import (
    client_options,
    with_client,
)


def cmd_results(args: argparse.Namespace) -> int:
    import csv
    import json

    import msgspec

    def show(client: Any) -> int:
        if args.format == "jsonl":
            for result in client.all_results():
                print(json.dumps(msgspec.to_builtins(result), sort_keys=True))
        else:
            writer = csv.writer(sys.stdout)
            writer.writerow(["key", "url", "rules", "fields", "content_hash", "attempts", "stored_at"])
            for r in client.all_results():
                writer.writerow(
                    [
                        r.key,
                        r.url,
                        r.rules,
                        json.dumps(r.fields, sort_keys=True),
                        r.content_hash,
                        r.attempts,
                        r.stored_at,
                    ]
                )
        if client.stale_notice:
            print(f"stale: {client.stale_notice}", file=sys.stderr)
        return 0

    return with_client(args, show)


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    results = commands.add_parser("results", help="stored results")
    results.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    client_options(results)
    results.set_defaults(handler=cmd_results)
