"""The demo site and the demo forward proxy as real processes, on free loopback ports."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from .ports import free_ports

SCRIPTS = Path(__file__).resolve().parent.parent


class _ScriptProcess:
    """A script of `scripts/` serving HTTP on a free port; ready once it prints `ready URL`."""

    def __init__(self, script: str, *options: str) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / script), "--port", str(self.port), *options],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == f"ready {self.url}", line

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.load(response)

    def _post(self, path: str) -> None:
        request = urllib.request.Request(f"{self.url}{path}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class DemoSiteProcess(_ScriptProcess):
    """`scripts/demo_site.py` running in its own process; `stop()` ends it."""

    def __init__(self, *options: str) -> None:
        super().__init__("demo_site.py", *options)

    def stats(self) -> dict:
        return self._get("/__stats")

    def reset(self) -> None:
        """Clear the site's counters."""
        self._post("/__reset")

    def switch(self, status: int) -> None:
        """Make /switch/N answer `status` from now on (200: the page)."""
        self._post(f"/__switch?status={status}")


class ProxyProcess(_ScriptProcess):
    """`scripts/demo_proxy.py` in its own process: a forward proxy whose requests leave from
    `source` (a loopback address of its own, so the site can tell it apart and block it)."""

    def __init__(self, source: str, *options: str) -> None:
        super().__init__("demo_proxy.py", "--source", source, *options)
        self.source = source

    def forwarded(self) -> int:
        return int(self._get("/__stats")["forwarded"])
