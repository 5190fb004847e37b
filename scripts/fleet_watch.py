"""What a running node's metrics endpoint shows of the fleet's resilience, for the demo and the
benchmarks: whether the fleet was ever in Hold, and which targets' breakers ever left closed
(as that node's gate saw them), polled in a thread of its own."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]

POLL_INTERVAL_S = 0.25
"""How often the watch reads the metrics. A breaker stays open for seconds, Hold for longer,
so a poll this often sees every one."""


def scrape(address: str) -> Samples:
    """The metrics at `address` (HOST:PORT): sample name -> sorted labels -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def wait_for_fetchers(address: str, timeout: float) -> None:
    """Until the node at `address` reports fetchers (its part of the tree is running); raise
    RuntimeError past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if scrape(address).get("flotilla_fetches_in_flight"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"the node at {address} reported no fetchers within {timeout} s")


class FleetWatch:
    """Polls a node's metrics until stopped: `hold_seen` and `breakers_opened` (targets whose
    breaker was seen half-open or open). Use as a context manager."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.hold_seen = False
        self.breakers_opened: set[str] = set()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-watch", daemon=True)

    def __enter__(self) -> FleetWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                samples = scrape(self.address)
                self.hold_seen |= any(samples.get("flotilla_hold", {}).values())
                for labels, state in samples.get("flotilla_breaker_state", {}).items():
                    if state > 0:
                        self.breakers_opened.add(dict(labels)["target"])
                self.polls += 1
            self._stop.wait(POLL_INTERVAL_S)
