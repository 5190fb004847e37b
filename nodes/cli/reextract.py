"""`flotilla reextract`: apply fixed rules to the captured pages of stored results, fetching nothing.

The intake node reads each result's page from the capture directory (`captures` in the
topology; rule sets with `capture: true` keep their pages there) and applies the rule set as
that node's topology has it — restart the cluster (at least the intake's node) after fixing the
rules. A result whose fields change is updated once, its revision raised by one; running it
again changes nothing more.

Output: a line per result that changed (``changed KEY revision N``) or could not be
re-extracted (``no capture``, ``drifted``, ``failed``, ``no result``, with why), then the
counts. Exit codes: 0 every result was re-extracted (changed or unchanged); 3 some could not
be (no capture, drifted now, failed, no such result); 1 the intake is unavailable or refused;
2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from flotilla.nodes.cli.common import EXIT_USAGE, client_options, load_for_client, with_client

EXIT_NOT_ALL_REEXTRACTED = 3
"""Some results could not be re-extracted (no capture, drifted now, failed, no such result)."""

COUNTED = ("changed", "unchanged", "no capture", "drifted", "failed", "no result")
"""The outcomes the summary counts, in its order."""


def summary(rules: str, counts: Counter[str]) -> str:
    """The last line: how many results had each outcome."""
    words = {"drifted": "drifted now", "no result": "no result"}
    parts = [f"{counts.get(outcome, 0)} {words.get(outcome, outcome)}" for outcome in COUNTED]
    total = sum(counts.values())
    return f"reextract rules {rules}: {total} result{'s' if total != 1 else ''}: " + ", ".join(parts)


def cmd_reextract(args: argparse.Namespace) -> int:
    import json

    import msgspec

    from flotilla.nodes.config.topology import rule_set

    topology = load_for_client(args.topology)
    if topology is None:
        return EXIT_USAGE
    try:
        rules = rule_set(topology, args.rules)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE

    def act(client: Any) -> int:
        counts: Counter[str] = Counter()
        for page in client.reextract_all(rules, args.keys or None, limit=args.page):
            for each in page.keys:
                counts[each.outcome] += 1
                if args.json:
                    print(json.dumps(msgspec.to_builtins(each), sort_keys=True))
                elif each.outcome == "changed":
                    print(f"changed {each.key} revision {each.revision}")
                elif each.outcome != "unchanged":
                    print(f"{each.outcome} {each.key}: {each.detail}")
        print(summary(rules, counts), file=sys.stderr if args.json else sys.stdout)
        problems = sum(counts[outcome] for outcome in COUNTED[2:])
        return EXIT_NOT_ALL_REEXTRACTED if problems else 0

    return with_client(args, act, topology)


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    reextract = commands.add_parser(
        "reextract",
        help="apply the current rules to the captured pages of stored results (no page is fetched)",
    )
    reextract.add_argument("keys", nargs="*", metavar="KEY", help="only these results (default: every one of --rules)")
    reextract.add_argument("--rules", help="the rule set (default: the topology's only one)")
    reextract.add_argument("--json", action="store_true", help="a JSON line per result (the counts on stderr)")
    reextract.add_argument("--page", type=int, default=100, help="results per request to the intake (1 to 1000)")
    client_options(reextract)
    reextract.set_defaults(handler=cmd_reextract)
