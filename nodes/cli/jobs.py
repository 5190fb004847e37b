"""Jobs through the intake: `submit`, `wait`, `job`, `cancel`, `jobs` and `dlq`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.nodes.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_NOT_ALL_STORED,
    EXIT_USAGE,
    EXIT_WAIT_TIMED_OUT,
    client_options,
    intake_client,
    key_options,
    load_for_client,
    topology_option,
    with_client,
)
from flotilla.nodes.config.topology import rule_set

if TYPE_CHECKING:
    from flotilla.nodes.intake.protocol import EndedState


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

    topology = load_for_client(args.topology)
    if topology is None:
        return EXIT_USAGE
    try:
        rules = rule_set(topology, args.rules)
        urls = _urls(args.items)
    except (ValueError, FileNotFoundError, UnicodeDecodeError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    client = intake_client(args, topology)
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
        print(("\n" if progress and done else "") + str(exc), file=sys.stderr)
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
    return with_client(args, lambda client: _wait_for(client, args.batch, args.timeout))


def cmd_job(args: argparse.Namespace) -> int:
    import json

    import msgspec

    from flotilla.actors.pipeline.journal import natural_key
    from flotilla.nodes.intake.client import IntakeError
    from flotilla.nodes.intake.story import story_lines

    topology = load_for_client(args.topology)
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

    return with_client(args, show, topology)


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

    return with_client(args, act)


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

    return with_client(args, show)


def _dead_letter_states(args: argparse.Namespace) -> list[EndedState]:
    """The states a `dlq` command covers: dead (default), parked (--parked), or both (--all)."""
    return ["dead", "parked"] if args.all else ["parked"] if args.parked else ["dead"]


def cmd_dlq(args: argparse.Namespace) -> int:
    states = _dead_letter_states(args)

    def act(client: Any) -> int:
        if args.dlq_command == "list":
            for state in states:
                for job in client.all_jobs(state):
                    shown = f"  {job.state}" if args.all else ""
                    print(f"{job.key}{shown}  attempts {job.attempts}  {job.url}  {job.reason}")
            return 0
        count = client.replay(args.keys or None, states, strict=True)
        print(f"{count} job{'s' if count != 1 else ''} back to pending")
        return 0

    return with_client(args, act)


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
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
    topology_option(wait)
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

    jobs = commands.add_parser("jobs", help="jobs by state (and the jobs in one state)")
    jobs.add_argument("--state", help="list the jobs in this state")
    client_options(jobs)
    jobs.set_defaults(handler=cmd_jobs)

    dlq = commands.add_parser("dlq", help="the dead-letter queue: dead jobs (and, asked for, parked ones)")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list", help="dead jobs with their reasons (--parked: parked ones)")
    dlq_replay = dlq_commands.add_parser(
        "replay",
        help="put dead jobs back to pending (--parked: parked ones); named keys are all replayed or none",
    )
    dlq_replay.add_argument(
        "keys", nargs="*", help="keys to replay (default: every job in the states chosen); each must be in one of them"
    )
    for command in (dlq_list, dlq_replay):
        which = command.add_mutually_exclusive_group()
        which.add_argument("--parked", action="store_true", help="parked jobs (drift: waiting for an operator)")
        which.add_argument("--all", action="store_true", help="dead and parked jobs")
        client_options(command)
        command.set_defaults(handler=cmd_dlq)
