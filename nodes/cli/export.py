"""`flotilla export`: write the stored results to rotating JSONL or CSV files in a directory,
resumably — each run writes only the results no earlier run wrote.

Results are taken in the order they were stored (``(stored_at, key)``; the intake's `Results`
request with a cursor) and written to ``results-000001.jsonl``, ``results-000002.jsonl``, ...
(``.csv``), at most `--max-lines` results a file; a run's last file may be shorter, and the
next run starts a new one. A file is written under a hidden temporary name and renamed when
complete, so a reader never sees half a file. Before the rename the state file
``.flotilla-export.json`` (written atomically) records the file as pending, with the cursor it
ends at; after it, the cursor — the last result written — and the next file's number. A run
killed at any point (even with SIGKILL) leaves at most a temporary file, which the next run
removes, and a pending file: the next run accepts it as written if it is in place (its cursor
and number taken as recorded), and writes it anew if the rename had not happened. Nothing is
lost and nothing is written twice.

Only results stored at least `--settle` seconds ago are taken (a result stored later waits for
the next run), so that one whose transaction committed late is never passed over: `stored_at`
is read from the storing node's clock when its transaction begins, so settle must exceed the
longest write transaction (a SQLite writer waits up to its 30 s busy timeout) plus the clock
skew between the router nodes and the intake.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from flotilla.nodes.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, client_options, with_client
from flotilla.nodes.cli.results import json_line, raw_csv_option, result_record, write_csv

STATE_FILE = ".flotilla-export.json"
LOCK_FILE = ".flotilla-export.lock"
DEFAULT_MAX_LINES = 100_000
DEFAULT_SETTLE = 30.0
"""Seconds: SQLite's busy timeout (30 s), the longest a store waits for the write lock after
reading its clock."""
MIN_SETTLE = 1.0
"""Seconds: below this even a store that waits for no lock could commit after an export passed
its time (and clocks a second apart are common)."""


class ExportRefused(Exception):
    """The output directory cannot take this export (another format, another rule set, or
    another export running in it)."""


@dataclass
class ExportState:
    """How far the exports into one directory got."""

    format: str
    rules: str | None
    stored_at: float = 0.0
    key: str = ""
    """The cursor: the last result written (0.0 and "": none yet)."""
    next_file: int = 1
    exported: int = 0
    pending: dict[str, Any] | None = None
    """The file being renamed into place: ``{"file", "stored_at", "key", "lines"}`` (None: none)."""

    @classmethod
    def load(cls, directory: Path, format: str, rules: str | None) -> ExportState:  # noqa: A002  the option's name
        """The directory's state, or a fresh one; raises `ExportRefused` if its exports were of
        another format or rule set."""
        path = directory / STATE_FILE
        if not path.exists():
            return cls(format, rules)
        state = cls._read(path)
        if (state.format, state.rules) != (format, rules):
            was = f"{state.format}" + (f" of rules {state.rules}" if state.rules else "")
            raise ExportRefused(f"{directory} holds an export as {was}: export there with the same options")
        return state

    @classmethod
    def _read(cls, path: Path) -> ExportState:
        """The state in `path`; raises `ExportRefused` naming it if it is not an export's state."""
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExportRefused(f"{path}: cannot read the export state: {exc}") from None
        if not isinstance(recorded, dict):
            raise ExportRefused(f"{path}: not an export state (a JSON object is expected)")
        if unknown := sorted(set(recorded) - {field.name for field in fields(cls)}):
            raise ExportRefused(f"{path}: not an export state of this version (unknown keys: {', '.join(unknown)})")
        try:
            return cls(**recorded)
        except TypeError:
            missing = ", ".join(sorted({"format", "rules"} - set(recorded)))
            raise ExportRefused(f"{path}: not an export state (missing keys: {missing})") from None

    def settle_pending(self, directory: Path) -> None:
        """Finish what a run killed while renaming a file left: the pending file is accepted as
        written if it is in place (the cursor and file number advance past it), forgotten if
        not (it is written anew from the cursor)."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        if (directory / pending["file"]).exists():
            self.stored_at, self.key = pending["stored_at"], pending["key"]
            self.next_file += 1
            self.exported += pending["lines"]
        self.save(directory)

    def save(self, directory: Path) -> None:
        """Write the state atomically (a temporary file, synced, renamed over the old one)."""
        _write_atomically(directory / STATE_FILE, lambda out: out.write(json.dumps(asdict(self), indent=1) + "\n"))


def _write_atomically(path: Path, write: Any) -> None:
    """`write(file)` into a temporary file beside `path`, synced, then renamed to `path`."""
    temporary = path.with_name(f".{path.name}.part")
    with open(temporary, "w", encoding="utf-8", newline="") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold the directory's export lock; raises `ExportRefused` if another export holds it."""
    import fcntl

    with open(directory / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportRefused(f"another flotilla export is writing to {directory}") from None
        yield


class Exporter:
    """Writes results to the directory's files, one complete file at a time."""

    def __init__(self, directory: Path, state: ExportState, max_lines: int, *, raw_csv: bool = False) -> None:
        self.directory = directory
        self.state = state
        self.max_lines = max_lines
        self.raw_csv = raw_csv
        self.written: list[str] = []
        self._spool: IO[str] | None = None
        self._lines = 0
        self._last: tuple[float, str] | None = None

    def file_name(self, number: int) -> str:
        return f"results-{number:06d}.{self.state.format}"

    def remove_leftovers(self) -> None:
        """Remove the temporary files of an export that was killed."""
        for path in self.directory.glob(".results-*.part"):
            path.unlink()

    def add(self, result: Any) -> None:
        if self._spool is None:
            self._spool = open(self._spool_path(), "w", encoding="utf-8")  # noqa: SIM115  closed in _complete
            self._lines = 0
        self._spool.write(json_line(result_record(result)) + "\n")
        self._lines += 1
        self._last = (result.stored_at, result.key)
        if self._lines >= self.max_lines:
            self.complete()

    def _spool_path(self) -> Path:
        return self.directory / f".{self.file_name(self.state.next_file)}.spool.part"

    def complete(self) -> None:
        """Finish the file being written (if any): rename it into place, then record it."""
        if self._spool is None or self._last is None:
            return
        spool, self._spool = self._spool, None
        name = self.file_name(self.state.next_file)
        final = self.directory / name
        self.state.pending = {"file": name, "stored_at": self._last[0], "key": self._last[1], "lines": self._lines}
        self.state.save(self.directory)
        if self.state.format == "jsonl":
            spool.flush()
            os.fsync(spool.fileno())
            spool.close()
            os.replace(self._spool_path(), final)
            _sync_directory(self.directory)
        else:
            spool.close()
            with open(self._spool_path(), encoding="utf-8") as lines:
                _write_atomically(
                    final, lambda out: write_csv((json.loads(line) for line in lines), out, raw=self.raw_csv)
                )
            self._spool_path().unlink()
        self.state.settle_pending(self.directory)
        self.written.append(name)


def cmd_export(args: argparse.Namespace) -> int:
    if args.max_lines < 1 or args.page < 1 or not args.settle >= MIN_SETTLE:
        print(f"--max-lines and --page must be at least 1, --settle at least {MIN_SETTLE:g}", file=sys.stderr)
        return EXIT_USAGE
    directory = Path(args.output)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{directory}: cannot make the output directory: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE

    def export(client: Any) -> int:
        try:
            with _exclusive(directory):
                state = ExportState.load(directory, args.format, args.rules)
                before = state.exported
                exporter = Exporter(directory, state, args.max_lines, raw_csv=args.raw_csv)
                exporter.remove_leftovers()
                state.settle_pending(directory)
                for result in client.results_since((state.stored_at, state.key), args.rules, args.settle, args.page):
                    exporter.add(result)
                exporter.complete()
        except ExportRefused as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(
                f"\nexport stopped; the files complete in {directory} are recorded (the next run goes on from there)",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        new = state.exported - before
        files = f" ({', '.join(exporter.written)})" if exporter.written else ""
        print(f"{new} new result{'s' if new != 1 else ''} exported to {directory}{files}; {state.exported} in all")
        if client.stale_notice:
            print(f"stale: {client.stale_notice}", file=sys.stderr)
        return 0

    return with_client(args, export)


def add_commands(commands: Any) -> None:
    """Add this module's commands to `commands` (the parser's subcommands)."""
    export = commands.add_parser(
        "export",
        help="write the results not exported yet to rotating JSONL or CSV files in a directory (resumable)",
    )
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--output", required=True, metavar="DIR", help="the directory of the files and their state")
    export.add_argument(
        "--max-lines",
        type=int,
        default=DEFAULT_MAX_LINES,
        metavar="N",
        help=f"results per file at most (default {DEFAULT_MAX_LINES:,})",
    )
    export.add_argument("--rules", help="only the results of this rule set")
    export.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE,
        metavar="SECONDS",
        help=(
            f"leave the results stored in the last SECONDS for the next run (default {DEFAULT_SETTLE:g}, at least"
            f" {MIN_SETTLE:g}): more than the longest write transaction plus the clock skew between nodes"
        ),
    )
    raw_csv_option(export)
    export.add_argument("--page", type=int, default=1000, help="results asked from the intake per request")
    client_options(export)
    export.set_defaults(handler=cmd_export)
