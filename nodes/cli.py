"""The `flotilla` command line.

    flotilla check [--no-import] [TOPOLOGY]
    flotilla node start [--topology T] [--node N] [--run-for SECONDS]
    flotilla up [--topology T] [--run-for SECONDS]      every node, as child processes
    flotilla down [--topology T]                        stop what 'up' started
    flotilla keys generate DIR --name NODE [--name ...]
    flotilla submit URLS_FILE|URL... [--rules R] [--jsonl] [--wait [--wait-timeout S]]
    flotilla wait BATCH [--timeout S]          flotilla job KEY|URL [--rules R] [--json]
    flotilla cancel KEY...|--batch B           flotilla breakers reset TARGET
    flotilla jobs | results | dlq | hold | shell     (see docs/cli.md)

Exit codes: 0 success; 1 the tree failed (a root that gave up or could not start), or the
intake is unavailable or refused; 2 bad usage or an invalid topology (every problem is printed
to stderr); 3 some jobs were rejected or did not end stored; 4 a wait timed out; 130 a wait
was interrupted (Ctrl-C; the jobs go on).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flotilla.actors.core.child_spec import Backoff, ChildSpec, PoolSpec, Spec, SupervisorFlags, SupervisorSpec
from flotilla.nodes.config.import_path import put_project_first
from flotilla.nodes.config.topology import DEFAULT_TOPOLOGY, Topology, TopologyError, load_topology, rule_set

EXIT_USAGE = 2
EXIT_NOT_ALL_STORED = 3
EXIT_WAIT_TIMED_OUT = 4
EXIT_INTERRUPTED = 130


def _default_topology() -> str:
    return os.environ.get("FLOTILLA_TOPOLOGY", DEFAULT_TOPOLOGY)


def _seconds(value: float | str) -> str:
    return f"{value:g}s" if isinstance(value, (int, float)) else str(value)


def _flags_text(flags: SupervisorFlags) -> str:
    text = f"intensity {flags.intensity} in {flags.period:g}s"
    backoff: Backoff | None = flags.backoff
    if backoff is not None:
        text += f", backoff {backoff.min:g}-{backoff.max:g}s"
    return text


def _describe(spec: Spec) -> str:
    if isinstance(spec, ChildSpec):
        return f"worker {spec.actor_name} ({spec.restart}, shutdown {_seconds(spec.shutdown)})"
    if isinstance(spec, PoolSpec):
        w = spec.worker
        return (
            f"pool x{spec.size} of {w.actor_name} ({spec.restart}; replicas {w.restart}, "
            f"shutdown {_seconds(w.shutdown)}; {_flags_text(spec.flags)})"
        )
    return f"supervisor {spec.flags.strategy} ({spec.restart}; {_flags_text(spec.flags)})"


def render_tree(topology: Topology, node: str) -> list[str]:
    """The tree as indented lines, one per child, with each subtree's node."""
    placement = topology.subtree_nodes()
    lines = [f"{node}/{topology.tree.id}  {_describe(topology.tree)}"]

    def walk(spec: SupervisorSpec, prefix: str, path: str) -> None:
        for index, child in enumerate(spec.children):
            last = index == len(spec.children) - 1
            child_path = f"{path}/{child.id}"
            where = placement.get(child_path)
            on_node = f"  [node {where}]" if where and where != placement[path] else ""
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{child.id}  {_describe(child)}{on_node}")
            if isinstance(child, SupervisorSpec):
                walk(child, prefix + ("   " if last else "│  "), child_path)

    walk(topology.tree, "", topology.tree.id)
    return lines


def _load_or_report(path: str, import_actors: bool = True) -> Topology | None:
    """The topology at `path`, or None after printing every problem to stderr. Its actor
    references import from the topology's directory, then the working directory."""
    if import_actors:
        put_project_first(path)
    try:
        return load_topology(path, import_actors=import_actors)
    except TopologyError as exc:
        for problem in exc.problems:
            print(problem.format(exc.source), file=sys.stderr)
        count = len(exc.problems)
        print(f"{exc.source}: {count} problem{'s' if count != 1 else ''}; the topology is not valid", file=sys.stderr)
        return None


def describe_journal(topology: Topology) -> str:
    """Where the topology's jobs are kept, and where the password comes from (never itself)."""
    journal = topology.journal
    if journal is None:
        return f"SQLite in {topology.data_dir}/<node>/journal.sqlite"
    if journal.path is not None:
        return f"SQLite in {journal.path}"
    secret = (
        f"password from ${journal.password_env}"
        if journal.password_env
        else f"password from {journal.password_file}"
        if journal.password_file
        else "no password"
    )
    return f"PostgreSQL at {journal.where} ({secret}); routers are woken by NOTIFY"


def cmd_check(args: argparse.Namespace) -> int:
    topology = _load_or_report(args.topology, import_actors=not args.no_import)
    if topology is None:
        return EXIT_USAGE
    nodes = ", ".join(topology.nodes)
    print(
        f"{topology.source}: valid; cluster {topology.cluster}, "
        f"{len(topology.nodes)} node{'s' if len(topology.nodes) != 1 else ''} ({nodes})"
    )
    for node in topology.nodes.values():
        print(f"  node {node.name}" + (f": {node.description}" if node.description else ""))
    security = topology.security
    if security.plaintext:
        print("node links: PLAINTEXT (security.plaintext): any local user can pose as a node")
    else:
        where = security.keys or f"{topology.data_dir / 'keys'} (generated on first start)"
        print(f"node links: CURVE, keys in {where}")
    for line in render_tree(topology, topology.root_node):
        print(line)
    failover = topology.failover
    if failover is not None:
        print(
            f"singletons: owned by one of {', '.join(failover.candidates)} at a time (lease {failover.lease:g} s, "
            f"failback {failover.failback})"
        )
    if topology.intakes:
        clients = ", ".join(topology.security.clients) or "none"
        operators = ", ".join([*topology.security.operators, "the local user"])
        served = ", ".join(f"{intake.address} on {intake.node}" for intake in topology.intakes)
        print(f"intake: {served}, CURVE; clients: {clients}; operators: {operators}")
    print(f"journal: {describe_journal(topology)}")
    allowed = ", ".join(topology.egress.allow)
    print("egress: public addresses only, never the cluster's own" + (f"; also {allowed}" if allowed else ""))
    resilience = topology.resilience
    if resilience is not None:
        parts = [
            f"breakers {resilience.breakers} ({resilience.shards} shards)" if resilience.breakers else "",
            f"limiter {resilience.limiter}" if resilience.limiter else "",
            f"hold {resilience.hold}" if resilience.hold else "",
            f"proxies {resilience.proxies}" if resilience.proxies else "direct connections",
        ]
        print(
            f"resilience: {', '.join(p for p in parts if p)}; every node runs a gate "
            f"(<node>/services/gate, reporting every {resilience.interval:g} s)"
        )
    return 0


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

    topology = _load_or_report(args.topology)
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

    topology = _load_or_report(args.topology)
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

    topology = _load_or_report(args.topology)
    if topology is None:
        return EXIT_USAGE
    stopped, message = stop_launcher(topology)
    print(message, file=sys.stdout if stopped else sys.stderr)
    return 0 if stopped else 1


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


def _intake_client(args: argparse.Namespace, topology: Topology | None = None):  # noqa: ANN202
    """A client of every intake of the topology (failing over between them) with the key of
    --key, else the local user's."""
    from flotilla.nodes.intake.client import IntakeClient
    from flotilla.nodes.security.keys import KeyFileError

    topology = topology or _load_or_report(args.topology)
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
        )
    except (KeyFileError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return None


def _urls(items: list[str]) -> list[str]:
    urls: list[str] = []
    for item in items:
        if "://" in item:
            urls.append(item)
            continue
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{item}: neither a URL nor a readable file of URLs")
        urls.extend(
            line.strip()
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )
    return urls


def cmd_submit(args: argparse.Namespace) -> int:
    import json
    import uuid

    from flotilla.nodes.intake.client import IntakeError, IntakeUnavailable
    from flotilla.nodes.intake.protocol import JobSpec

    topology = _load_or_report(args.topology)
    if topology is None:
        return EXIT_USAGE
    try:
        rules = rule_set(topology, args.rules)
        urls = _urls(args.items)
    except (ValueError, FileNotFoundError, UnicodeDecodeError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    client = _intake_client(args, topology)
    if client is None:
        return EXIT_USAGE
    batch = uuid.uuid4().hex
    totals = {"accepted": 0, "duplicate": 0, "rejected": 0}
    done = 0
    progress = sys.stderr.isatty() and not args.jsonl
    try:
        with client:
            for acks in client.submit_all((JobSpec(url, rules) for url in urls), batch=500, batch_id=batch):
                for ack in acks:
                    totals[ack.status] += 1
                    url = urls[done + ack.index]
                    if args.jsonl:
                        print(
                            json.dumps(
                                {
                                    "status": ack.status,
                                    "key": ack.key,
                                    "url": url,
                                    "batch": batch,
                                    **({"reason": ack.reason} if ack.reason else {}),
                                }
                            )
                        )
                    else:
                        print(f"{ack.status:<9} {ack.key or '-'}  {url}" + (f"  {ack.reason}" if ack.reason else ""))
                done += len(acks)
                if progress:
                    print(f"\rsubmitted {done}/{len(urls)}", end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
            print(
                f"{len(urls)} jobs: {totals['accepted']} accepted, {totals['duplicate']} duplicates, "
                f"{totals['rejected']} rejected; batch {batch}",
                file=sys.stderr if args.jsonl else sys.stdout,
                flush=True,
            )
            code = 0 if not totals["rejected"] else EXIT_NOT_ALL_STORED
            if not args.wait or totals["accepted"] + totals["duplicate"] == 0:
                return code
            waited = _wait_for(client, batch, args.wait_timeout)
            return waited if waited != 0 else code
    except (IntakeUnavailable, IntakeError) as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1


def _wait_for(client: Any, batch: str, timeout: float | None) -> int:
    """Follow `batch` until every job of it is finished (or `timeout`), then print the closing
    summary; 0 if every job was stored, 3 if some were not, 4 on timeout."""
    from flotilla.nodes.intake.progress import WAITING, follow, summary_lines

    try:
        info, done = follow(client, batch, timeout, sys.stderr)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the jobs go on ('flotilla wait {batch}' follows them again)", file=sys.stderr)
        return EXIT_INTERRUPTED
    for line in summary_lines(info):
        print(line)
    if not done:
        waiting = ", ".join(f"{info.states[s]} {s}" for s in WAITING if info.states.get(s))
        print(
            f"timed out after {timeout:g} s; still waiting: {waiting or 'none'} "
            f"(see 'flotilla jobs --state pending' and 'flotilla job KEY')",
            file=sys.stderr,
        )
        return EXIT_WAIT_TIMED_OUT
    return 0 if info.states.get("stored", 0) == info.total else EXIT_NOT_ALL_STORED


def cmd_wait(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: _wait_for(client, args.batch, args.timeout))


def cmd_job(args: argparse.Namespace) -> int:
    import json

    import msgspec

    from flotilla.actors.pipeline.journal import natural_key
    from flotilla.nodes.intake.client import IntakeError
    from flotilla.nodes.intake.story import story_lines

    topology = _load_or_report(args.topology)
    if topology is None:
        return EXIT_USAGE
    key, asked = args.job, args.job
    if "://" in args.job:
        try:
            rules = rule_set(topology, args.rules)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
        key = natural_key(args.job, rules)
        asked = f"{args.job} with rules {rules} (key {key})"

    def show(client: Any) -> int:
        try:
            story = client.job(key)
        except IntakeError as exc:
            print(f"{asked}: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(msgspec.to_builtins(story), sort_keys=True))
        else:
            print("\n".join(story_lines(story)))
        return 0

    return _with_client(args, show, topology)


def cmd_cancel(args: argparse.Namespace) -> int:
    if bool(args.keys) == bool(args.batch):
        print("cancel takes job keys or --batch BATCH (not both)", file=sys.stderr)
        return EXIT_USAGE

    def act(client: Any) -> int:
        count = client.cancel(keys=args.keys or None, batch=args.batch)
        print(
            f"{count} job{'s' if count != 1 else ''} cancelled (dead: cancelled by an operator; "
            "'flotilla dlq replay KEY' brings one back)"
        )
        return 0

    return _with_client(args, act)


def cmd_breakers(args: argparse.Namespace) -> int:
    def act(client: Any) -> int:
        info = client.reset_breaker(args.target)
        before = "it was not open" if info.was == "closed" else f"it was {info.was}"
        print(f"breaker of {info.target} reset: {info.state} ({before})")
        return 0

    return _with_client(args, act)


def _with_client(args: argparse.Namespace, body: Any, topology: Topology | None = None) -> int:
    """Run `body(client)` against the topology's intake; intake errors exit 1."""
    from flotilla.nodes.intake.client import IntakeError, IntakeUnavailable

    client = _intake_client(args, topology)
    if client is None:
        return EXIT_USAGE
    try:
        with client:
            return int(body(client))
    except (IntakeUnavailable, IntakeError) as exc:
        print(str(exc), file=sys.stderr)
        return 1


def cmd_jobs(args: argparse.Namespace) -> int:
    def show(client: Any) -> int:
        counts = client.counts()
        print("  ".join(f"{state} {n}" for state, n in counts.states.items()) + f"  (results {counts.results})")
        if args.state:
            for job in client.all_jobs(args.state):
                print(
                    f"{job.key}  {job.state:<10} attempts {job.attempts}  {job.url}"
                    + (f"  {job.reason}" if job.reason else "")
                )
        return 0

    return _with_client(args, show)


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

    return _with_client(args, show)


def cmd_dlq(args: argparse.Namespace) -> int:
    def act(client: Any) -> int:
        if args.dlq_command == "list":
            for job in client.all_jobs("dead"):
                print(f"{job.key}  attempts {job.attempts}  {job.url}  {job.reason}")
        else:
            count = client.replay(args.keys or None)
            print(f"{count} job{'s' if count != 1 else ''} back to pending")
        return 0

    return _with_client(args, act)


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

    return _with_client(args, act)


def cmd_shell(args: argparse.Namespace) -> int:
    from flotilla.nodes.shell.client import ShellClient, ShellUnavailable, interactive, run_line

    if args.target and args.target.startswith(("ipc://", "tcp://")):
        client, node = ShellClient(args.target, timeout=args.timeout), args.target
    else:
        topology = _load_or_report(args.topology)
        if topology is None:
            return EXIT_USAGE
        node = args.node or args.target or topology.root_node
        if node not in topology.nodes:
            print(f"{topology.source}: no node {node!r} (nodes: {', '.join(topology.nodes)})", file=sys.stderr)
            return EXIT_USAGE
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flotilla", description="Fault-tolerant worker fleets.")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="validate a topology and print its tree")
    check.add_argument(
        "topology",
        nargs="?",
        default=_default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
    check.add_argument(
        "--no-import",
        action="store_true",
        help="check actors named package.module:Class by form only, without importing their "
        "modules (so none of their code runs); their args are then not checked",
    )
    check.set_defaults(handler=cmd_check)

    node = commands.add_parser("node", help="run a node")
    node_commands = node.add_subparsers(dest="node_command", required=True)
    start = node_commands.add_parser("start", help="run a node's part of the tree until stopped")
    start.add_argument(
        "--topology",
        default=_default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
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
    up.add_argument(
        "--topology",
        default=_default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
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
    down.add_argument(
        "--topology",
        default=_default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
    down.set_defaults(handler=cmd_down)

    def key_options(command: argparse.ArgumentParser) -> None:
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
        command.add_argument(
            "--topology",
            default=_default_topology(),
            help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
        )
        command.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help="seconds to wait for an intake before the next one is asked (each is asked up to 4 times)",
        )
        key_options(command)

    rules_help = "rule set (default: the topology's only one; required when it has several)"
    submit = commands.add_parser("submit", help="submit jobs to the cluster's intake; prints each job's key")
    submit.add_argument("items", nargs="+", metavar="URLS_FILE|URL", help="URLs, or files with one URL a line")
    submit.add_argument("--rules", help=rules_help)
    submit.add_argument(
        "--jsonl",
        action="store_true",
        help="one JSON object per job on stdout (status, key, url, batch, reason); summary on stderr",
    )
    submit.add_argument(
        "--wait", action="store_true", help="follow the batch until every job is finished, then print its summary"
    )
    submit.add_argument(
        "--wait-timeout", type=float, metavar="SECONDS", help="with --wait: give up waiting after this long (exit 4)"
    )
    client_options(submit)
    submit.set_defaults(handler=cmd_submit)

    wait = commands.add_parser("wait", help="follow a batch until every job of it is finished, then summarise it")
    wait.add_argument("batch", help="the batch id 'flotilla submit' printed")
    wait.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 4)")
    wait.add_argument("--intake-timeout", type=float, default=10.0, help="seconds to wait for each intake answer")
    wait.add_argument(
        "--topology",
        default=_default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
    key_options(wait)
    wait.set_defaults(handler=cmd_wait)

    job = commands.add_parser("job", help="one job's story: every attempt, wait and state change, and its result")
    job.add_argument("job", metavar="KEY|URL", help="the job's key, or its URL (the key is computed with --rules)")
    job.add_argument("--rules", help=rules_help + "; used for a URL")
    job.add_argument("--json", action="store_true", help="the story as one JSON object")
    client_options(job)
    job.set_defaults(handler=cmd_job)

    cancel = commands.add_parser("cancel", help="end unfinished jobs: dead, cancelled by an operator")
    cancel.add_argument("keys", nargs="*", metavar="KEY", help="keys of the jobs to cancel")
    cancel.add_argument("--batch", help="cancel every unfinished job of this batch")
    client_options(cancel)
    cancel.set_defaults(handler=cmd_cancel)

    breakers = commands.add_parser("breakers", help="the targets' circuit breakers")
    breakers_commands = breakers.add_subparsers(dest="breakers_command", required=True)
    reset = breakers_commands.add_parser("reset", help="close a target's breaker now")
    reset.add_argument("target", help="host:port as 'flotilla shell --exec breakers' shows it, or a URL on it")
    client_options(reset)
    reset.set_defaults(handler=cmd_breakers)

    jobs = commands.add_parser("jobs", help="jobs by state (and the jobs in one state)")
    jobs.add_argument("--state", help="list the jobs in this state")
    client_options(jobs)
    jobs.set_defaults(handler=cmd_jobs)

    results = commands.add_parser("results", help="stored results")
    results.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    client_options(results)
    results.set_defaults(handler=cmd_results)

    dlq = commands.add_parser("dlq", help="the dead-letter queue")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list", help="dead jobs with their reasons")
    client_options(dlq_list)
    dlq_list.set_defaults(handler=cmd_dlq)
    dlq_replay = dlq_commands.add_parser("replay", help="put dead (and parked) jobs back to pending")
    dlq_replay.add_argument("keys", nargs="*", help="keys to replay (default: all)")
    client_options(dlq_replay)
    dlq_replay.set_defaults(handler=cmd_dlq)

    hold = commands.add_parser("hold", help="the fleet's Hold: show it, force it on or off, or back to auto")
    hold.add_argument("mode", nargs="?", choices=["on", "off", "auto"], help="omit to only show it")
    client_options(hold)
    hold.set_defaults(handler=cmd_hold)

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
    shell.add_argument(
        "--topology",
        default=_default_topology(),
        help=f"topology file (default: $FLOTILLA_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
    shell.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for an answer")
    shell.set_defaults(handler=cmd_shell)

    keys = commands.add_parser("keys", help="CURVE keys for the cluster")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser("generate", help="write NODE.key and NODE.key_secret (0600)")
    generate.add_argument("directory", help="key directory (created 0700)")
    generate.add_argument("--name", action="append", help="a node, operator or client name; repeatable")
    generate.add_argument("--force", action="store_true", help="replace existing keys")
    generate.set_defaults(handler=cmd_keys_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flotilla` console script. Ctrl-C (SIGINT) stops every command the
    same way, even one started with SIGINT ignored (as `flotilla ... &` in a script is):
    following commands (`wait`, `submit --wait`, `shell ... logs --follow`) end cleanly, and
    `node start` and `up` install their own graceful-stop handlers on top."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
