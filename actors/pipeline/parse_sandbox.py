"""Pages parsed under a time budget, in a process of their own that is killed when it overruns.

lexbor, the HTML parser behind selectolax, has inputs whose parse time grows with the square
of their size or worse: 20,000 unclosed `<div>` tags (100 KB) take about 10 s, one tag with
20,000 attributes about 6 s, a `<select>` with 10,000 options about 2 s, and a 2 MB page of
such markup minutes. A parse cannot be interrupted inside the C library, so the extractor
hands each page larger than `IN_PROCESS_BYTES` to a worker process of its own (this module
run with `python -m`, fed over a pipe) and waits at most `PARSE_TIMEOUT` seconds; a worker
that overruns is killed (the next page starts a fresh one) and the page is `Unparseable` (its job ends HARD with the
evidence). A page of at most `IN_PROCESS_BYTES` cannot hold enough markup to take long, and
is parsed in the extractor's thread without the round trip, unless its rule set has a field
with a `regex`: Python's regular expressions cannot be interrupted either, and a pattern that
backtracks catastrophically (``(a+)+$``) takes minutes on a 30-character value, so every page of
such a rule set is parsed in the worker, under the same time limit.
"""

from __future__ import annotations

import pickle
import select
import struct
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flotilla.actors.pipeline.rules import Blocked, Drift, Extracted, RuleSet, apply_rules

PARSE_TIMEOUT = 5.0
"""Default seconds one page may take to parse and extract (an extractor's `parse_timeout`);
a normal 2 MB page takes well under one."""
MAX_PARSE_TIMEOUT = 60.0
"""Largest `parse_timeout` an extractor accepts: a longer parse holds a lease for minutes."""
IN_PROCESS_BYTES = 4096
"""Pages up to this size are parsed in the extractor's own thread: the worst markup of that
size parses in about 20 ms (measured: 800 nested tags, 1,000 attributes, 400 options)."""
WORKER_START_TIMEOUT = 10.0
"""Extra seconds a fresh worker process gets for its first page (it imports the parser
first: about 0.2 s on an idle machine)."""


@dataclass(frozen=True)
class Unparseable:
    """A page that could not be parsed within the budget (or crashed the parser)."""

    reason: str


Parsed = Extracted | Drift | Blocked | Unparseable

_LENGTH = struct.Struct("!I")


def _write(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("the other end closed the pipe")
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other end closed the pipe")
    return pickle.loads(data)  # noqa: S301 - both ends are this module, over a private pipe


def serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The worker: parse each (body, rules, headers, url) it reads and write the result back,
    until the extractor closes its end."""
    while True:
        try:
            body, rules, headers, url = _read(source)
        except (EOFError, OSError):
            return
        _write(sink, _applied(body, rules, headers, url))


def _applied(body: bytes, rules: RuleSet, headers: Mapping[str, str] | None, url: str | None) -> Parsed:
    """`apply_rules`, with any exception it raises made an `Unparseable` page (a page must never
    crash the process that parses it)."""
    try:
        return apply_rules(body, rules, headers, url)
    except Exception as exc:  # noqa: BLE001 - reported as an unparseable page
        return Unparseable(f"the parser failed: {type(exc).__name__}: {exc}"[:300])


class ParseSandbox:
    """One worker process for one extractor, started when first needed, replaced when killed."""

    def __init__(self, timeout: float = PARSE_TIMEOUT) -> None:
        self.timeout = timeout
        self.killed = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._first = True  # the first page may wait for the worker's imports

    def apply(
        self, body: bytes, rules: RuleSet, headers: Mapping[str, str] | None = None, url: str | None = None
    ) -> Parsed:
        """`apply_rules(body, rules, headers, url)` within the time budget."""
        if len(body) <= IN_PROCESS_BYTES and not rules.has_regex:
            return _applied(body, rules, headers, url)
        fresh = self._process is None or self._first
        self._first = False
        process = self._process or self._start()
        assert process.stdin is not None and process.stdout is not None  # noqa: S101  started with pipes
        try:
            _write(process.stdin, (body, rules, dict(headers or {}), url))
            ready, _, _ = select.select(
                [process.stdout], [], [], self.timeout + (WORKER_START_TIMEOUT if fresh else 0.0)
            )
            if ready:
                return _read(process.stdout)
        except (EOFError, OSError) as exc:
            self._stop()
            return Unparseable(f"the parser process ended ({type(exc).__name__})")
        self._stop()
        self.killed += 1
        return Unparseable(f"parsing took longer than {self.timeout:g} s")

    def start(self) -> None:
        """Start the worker now (it imports the parser while nothing waits for it)."""
        if self._process is None:
            self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "flotilla.actors.pipeline.parse_sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=_ROOT,
            start_new_session=True,
        )
        return self._process

    def _stop(self) -> None:
        """Kill the worker (a parse cannot be interrupted otherwise); the next page starts one."""
        process, self._process = self._process, None
        self._first = True
        if process is not None:
            process.kill()
            process.wait(5)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()

    def close(self) -> None:
        self._stop()


_ROOT = str(Path(__file__).resolve().parent.parent)

if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
