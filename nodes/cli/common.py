"""What every command shares: exit codes, the topology option and loading, intake clients."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.nodes.config.import_path import put_project_first
from flotilla.nodes.config.topology import DEFAULT_TOPOLOGY, Topology, TopologyError, load_topology

if TYPE_CHECKING:
    from flotilla.nodes.intake.client import IntakeClient

EXIT_USAGE = 2
EXIT_NOT_ALL_STORED = 3
EXIT_WAIT_TIMED_OUT = 4
EXIT_INTERRUPTED = 130


def default_topology() -> str:
    """The topology file commands use unless told: $FLOTILLA_TOPOLOGY, else the default."""
    return os.environ.get("FLOTILLA_TOPOLOGY", DEFAULT_TOPOLOGY)


def load_or_report(path: str, import_actors: bool = True, *, import_builtins: bool = True) -> Topology | None:
    """The topology at `path`, or None after printing every problem to stderr. Its actor
    references import from the topology's directory, then the working directory
    (`import_actors`, `import_builtins`: see `parse_topology`)."""
    if import_actors:
        put_project_first(path)
    try:
        return load_topology(path, import_actors=import_actors, import_builtins=import_builtins)
    except TopologyError as exc:
        for problem in exc.problems:
            print(problem.format(exc.source), file=sys.stderr)
        count = len(exc.problems)
        print(f"{exc.source}: {count} problem{'s' if count != 1 else ''}; the topology is not valid", file=sys.stderr)
        return None


def load_for_client(path: str) -> Topology | None:
    """The topology at `path` as a client of a running cluster needs it (or None, problems
    printed): no actor module imported, built-ins included, as a client runs no actor, so it
    starts fast (and answers "no cluster" within a second)."""
    return load_or_report(path, import_actors=False, import_builtins=False)


def intake_client(args: argparse.Namespace, topology: Topology | None = None) -> IntakeClient | None:
    """A client of every intake of the topology (failing over between them) with the key of
    --key, else the local user's. Its first request fails at once ("no cluster at ...: start
    it with flotilla up") when nothing listens at any intake address, unless a `flotilla up`
    of this topology runs (its intake's node may be restarting: then the usual tries wait
    for it)."""
    from flotilla.nodes.intake.client import IntakeClient
    from flotilla.nodes.security.keys import KeyFileError

    topology = topology or load_for_client(args.topology)
    if topology is None:
        return None
    if not topology.intakes:
        print(f"{topology.source}: no intake section: this cluster takes no jobs", file=sys.stderr)
        return None
    try:
        return IntakeClient.for_topology(
            topology,
            Path(args.key) if args.key else None,
            [Path(file) for file in args.server_key or ()],
            timeout=getattr(args, "intake_timeout", None) or args.timeout,
            fail_fast=not _launcher_runs(topology),
        )
    except (KeyFileError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return None


def _launcher_runs(topology: Topology) -> bool:
    """Whether a `flotilla up` of this topology holds its pid file on this machine."""
    from flotilla.nodes.runtime.cluster_status import pid_file
    from flotilla.nodes.runtime.pidlock import holder

    try:
        return holder(pid_file(topology)) is not None
    except OSError:
        return False


def with_client(args: argparse.Namespace, body: Any, topology: Topology | None = None) -> int:
    """Run `body(client)` against the topology's intake; intake errors exit 1."""
    from flotilla.nodes.intake.client import IntakeError, IntakeUnavailable

    client = intake_client(args, topology)
    if client is None:
        return EXIT_USAGE
    try:
        with client:
            return int(body(client))
    except (IntakeUnavailable, IntakeError) as exc:
        print(str(exc), file=sys.stderr)
        return 1


def topology_option(command: argparse.ArgumentParser) -> None:
    """`--topology FILE`, defaulting to `default_topology()`."""
    command.add_argument(
        "--topology",
        default=default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )


def key_options(command: argparse.ArgumentParser) -> None:
    """`--key` and `--server-key`: the client's key and the intakes' public keys."""
    command.add_argument(
        "--key",
        metavar="FILE",
        help="your client key, NAME.key_secret (default: the local user's, local.key_secret "
        "in the key directory, if you can read it)",
    )
    command.add_argument(
        "--server-key",
        metavar="FILE",
        action="append",
        help="the intake node's public key (default: NODE.key in the key directory); with several "
        "intakes, once for each, in the topology's order",
    )


def client_options(command: argparse.ArgumentParser) -> None:
    """The options of every intake client command: topology, timeout, keys."""
    topology_option(command)
    command.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for an intake before the next one is asked (each is asked up to 4 times)",
    )
    key_options(command)
