"""The demo site as a real process for tests, on a free loopback port."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.cluster_harness import free_ports

ROOT = Path(__file__).resolve().parent.parent


class DemoSiteProcess:
    """`scripts/demo_site.py` running in its own process; `stop()` ends it."""

    def __init__(self, *options: str) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo_site.py"), "--port",
                                      str(self.port), *options], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == f"ready {self.url}", line

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/__stats", timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
