"""`flotilla results`: the stored results as JSON lines or CSV, and how a result is written in
either format (`flotilla export` writes them the same way).

JSON lines: one object per result, ``{key, url, rules, fields, content_hash, attempts,
stored_at, revision, extracted_at}``, the times in ISO 8601 UTC. CSV: a header, then one row
per result with one column per field — the union of the field names of the results written,
sorted — between ``key, url, rules`` and ``content_hash, attempts, stored_at, revision,
extracted_at``; a field named like one of those eight is the column ``fields.NAME``. A cell
holds a text field as it is, nothing for a missing field or null, and JSON for anything else
(numbers, true/false, lists, objects). Text that a spreadsheet would take for a formula — a
cell beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return — gets a leading
``'`` (OWASP's advice against CSV injection: page text is hostile) unless ``--raw-csv`` asks
for the text as it is (for programs that read the CSV).
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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""How a cell a spreadsheet evaluates as a formula begins."""


def spreadsheet_safe(text: str) -> str:
    """`text`, with a leading ``'`` if a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def cell(value: Any, *, raw: bool = True) -> Any:
    """A value in a CSV cell: text as is (made `spreadsheet_safe` unless `raw`), "" for null,
    a number as it is, and JSON for a field's true/false, list or object."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value if raw else spreadsheet_safe(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def write_csv(records: Iterable[dict[str, Any]], out: IO[str], *, raw: bool = False) -> int:
    """Write `records` (as `result_record` makes them) to `out` as CSV, one column per field
    of any of them: they are spooled (in memory, then a temporary file) until every field
    name is known. Text cells are made `spreadsheet_safe` unless `raw`. Returns how many rows
    were written."""
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
                    *(cell(record[name], raw=raw) for name in LEADING),
                    *(cell(record["fields"].get(name), raw=raw) for name in fields),
                    *(cell(record[name], raw=raw) for name in TRAILING),
                ]
            )
            count += 1
    return count


def raw_csv_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--raw-csv``: CSV text cells as they are, not made spreadsheet-safe."""
    parser.add_argument(
        "--raw-csv",
        action="store_true",
        help="CSV: write text cells as they are (by default one a spreadsheet would run as a formula gets a leading ')",
    )


def records(results: Iterable[Any]) -> Iterator[dict[str, Any]]:
    return (result_record(result) for result in results)


def cmd_results(args: argparse.Namespace) -> int:
    def show(client: Any) -> int:
        if args.format == "jsonl":
            for record in records(client.all_results()):
                print(json_line(record))
        else:
            write_csv(records(client.all_results()), sys.stdout, raw=args.raw_csv)
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
    raw_csv_option(results)
    client_options(results)
    results.set_defaults(handler=cmd_results)
