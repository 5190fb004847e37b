"""Steering the fleet through the intake: `flotilla hold` and `flotilla breakers reset`."""

from __future__ import annotations

import argparse
from typing import Any

from flotilla.nodes.cli.common import (
    client_options,
    with_client,
)


def cmd_hold(args: argparse.Namespace) -> int:
    import time

    def act(client: Any) -> int:
        status = client.hold(args.mode)
        since = f" since {time.strftime('%H:%M:%S', time.localtime(status.since))}" if status.on else ""
        rate = f", success rate {status.success_rate:.0%}" if status.success_rate is not None else ""
        print(
            f"hold {'on' if status.on else 'off'}{since} (mode {status.mode}{rate})"
            + (f": {status.reason}" if status.reason else "")
        )
        return 0

    return with_client(args, act)


def cmd_breakers(args: argparse.Namespace) -> int:
    def act(client: Any) -> int:
        info = client.reset_breaker(args.target)
        before = "it was not open" if info.was == "closed" else f"it was {info.was}"
        print(f"breaker of {info.target} reset: {info.state} ({before})")
        return 0

    return with_client(args, act)


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    breakers = commands.add_parser("breakers", help="the targets' circuit breakers")
    breakers_commands = breakers.add_subparsers(dest="breakers_command", required=True)
    reset = breakers_commands.add_parser("reset", help="close a target's breaker now")
    reset.add_argument("target", help="host:port as 'flotilla shell --exec breakers' shows it, or a URL on it")
    client_options(reset)
    reset.set_defaults(handler=cmd_breakers)

    hold = commands.add_parser("hold", help="the fleet's Hold: show it, force it on or off, or back to auto")
    hold.add_argument("mode", nargs="?", choices=["on", "off", "auto"], help="omit to only show it")
    client_options(hold)
    hold.set_defaults(handler=cmd_hold)
