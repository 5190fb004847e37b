"""`flotilla results`: the stored results as JSON lines or CSV, and how a result is written in
either format (`flotilla export` writes them the same way).

JSON lines: one object per result, ``{key, url, rules, fields, content_hash, attempts,
stored_at, revision, extracted_at}``, the times in ISO 8601 UTC. CSV: a header, then one row
per result with one column per field — the union of the field names of the results written,
sorted — between ``key, url, rules`` and ``content_hash, attempts, stored_at, revision,
extracted_at``; a field named like one of those eight is the column ``fields.NAME``. A cell
holds a text field as it is, nothing for a missing field or null, and JSON for anything else
(numbers, true/false, lists, objects).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

from flotilla.nodes.cli.common import (
    client_options,
    with_client,
)

LEADING = ("key", "url", "rules")
TRAILING = ("content_hash", "attempts", "stored_at", "revision", "extracted_at")
SPOOL_IN_MEMORY = 8 * 1024 * 1024
"""Bytes of results a CSV keeps in memory while it learns their fields (then a temporary file)."""


def iso_time(seconds: float) -> str:
    """`seconds` since the epoch as ISO 8601 UTC, to the microsecond: ``2026-05-04T10:20:30.123456Z``."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def result_record(result: Any) -> dict[str, Any]:
    """A result as written: its fields as they are, its times in ISO 8601 UTC (`extracted_at`:
    when `flotilla reextract` last changed its fields, else when it was stored)."""
    return {
        "key": result.key,
        "url": result.url,
        "rules": result.rules,
        "fields": result.fields,
        "content_hash": result.content_hash,
        "attempts": result.attempts,
        "stored_at": iso_time(result.stored_at),
        "revision": result.revision,
        "extracted_at": iso_time(result.extracted_at or result.stored_at),
    }


def json_line(record: dict[str, Any]) -> str:
    """One record as a JSON line (keys sorted, no newline)."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def field_column(name: str) -> str:
    """The CSV column of field `name` (``fields.NAME`` if it is a fixed column's name)."""
    return f"fields.{name}" if name in LEADING or name in TRAILING else name


def cell(value: Any) -> str:
    """A field's value in a CSV cell: text as is, "" for null, JSON for anything else."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def write_csv(records: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write `records` (as `result_record` makes them) to `out` as CSV, one column per field
    of any of them: they are spooled (in memory, then a temporary file) until every field
    name is known. Returns how many rows were written."""
    import csv
    import tempfile

    names: set[str] = set()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, mode="w+", encoding="utf-8") as spool:
        for record in records:
            names.update(record["fields"])
            spool.write(json_line(record) + "\n")
        fields = sorted(names)
        writer = csv.writer(out)
        writer.writerow([*LEADING, *(field_column(name) for name in fields), *TRAILING])
        spool.seek(0)
        count = 0
        for line in spool:
            record = json.loads(line)
            writer.writerow(
                [
                    *(record[name] for name in LEADING),
                    *(cell(record["fields"].get(name)) for name in fields),
                    *(record[name] for name in TRAILING),
                ]
            )
            count += 1
    return count


def records(results: Iterable[Any]) -> Iterator[dict[str, Any]]:
    return (result_record(result) for result in results)


def cmd_results(args: argparse.Namespace) -> int:
    def show(client: Any) -> int:
        if args.format == "jsonl":
            for record in records(client.all_results()):
                print(json_line(record))
        else:
            write_csv(records(client.all_results()), sys.stdout)
        if client.stale_notice:
            print(f"stale: {client.stale_notice}", file=sys.stderr)
        return 0

    return with_client(args, show)


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    results = commands.add_parser(
        "results", help="stored results, by key: JSON lines, or CSV with a column per field (docs/cli.md)"
    )
    results.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    client_options(results)
    results.set_defaults(handler=cmd_results)
