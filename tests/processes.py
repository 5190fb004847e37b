"""Real `flotilla` subprocesses for tests, read line by line, always stopped afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def flotilla_command(*args: str) -> list[str]:
    """The `flotilla` CLI run by this interpreter (the venv the tests run in)."""
    return [sys.executable, "-m", "flotilla.nodes.cli", *args]


def run_flotilla(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion and capture its output."""
    return subprocess.run(
        flotilla_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=_env(), check=False
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FLOTILLA_TOPOLOGY", None)
    return env


class FlotillaProcess:
    """A long-running `flotilla` process whose JSON log lines are collected as they come."""

    def __init__(
        self,
        *args: str,
        command: Sequence[str] | None = None,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        """Run `flotilla args...` (by default with this interpreter, from the checkout); or
        `command` followed by `args`, from `cwd` with the environment `env`."""
        self.lines: list[str] = []
        self._changed = threading.Condition()
        argv = [*command, *args] if command is not None else flotilla_command(*args)
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env or _env()
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (other lines are skipped)."""
        with self._changed:
            lines = list(self.lines)
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def wait_for_event(self, name: str, timeout: float = 15.0, count: int = 1, **fields: Any) -> dict[str, Any]:
        """Wait for the `count`-th log event called `name` whose fields include `fields`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [
                    event
                    for event in self.events()
                    if event.get("event") == name and all(event.get(k) == v for k, v in fields.items())
                ]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"no {name} {fields} event (#{count}); output:\n" + "\n".join(self.lines[-40:])
                    )
                self._changed.wait(min(remaining, 0.2))

    def wait_for_event_line(self, pattern: str, timeout: float = 30.0, count: int = 1) -> str:
        """Wait until `count` raw output lines match the regular expression `pattern`;
        return the last of them."""
        import re

        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"no line like {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))
                self._changed.wait(min(remaining, 0.2))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Stop the process whatever its state (used in teardown): SIGTERM first, so that a
        launcher stops its nodes, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)
