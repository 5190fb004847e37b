"""Part 6 of scripts/bench: what the everyday features cost where they run.

In one process, on the demo site's pages:
  * extraction with field processors (`type: price`, `urljoin` on links) against the same
    rules without them, on a product page and on a page of 1,000 links (`all: true`);
  * page capture (gzip, written under the body's hash) against extracting the same page;
and through real `flotilla` subprocesses:
  * a client command's answer when no cluster runs, against `flotilla --version` (the
    interpreter and the CLI's imports: the floor of any command).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flotilla.actors.pipeline.captures import PageStore
from flotilla.actors.pipeline.rules import FieldRule, RuleSet, apply_rules

from demo_site import product

LINKS = 1000
"""Links on the link-heavy page (half `<a href>`, half `<img src>`, root-relative)."""


def _links_page() -> str:
    half = LINKS // 2
    anchors = "".join(f'<a href="/product/{n}">p{n}</a>' for n in range(half))
    images = "".join(f'<img src="/img/{n}.jpg">' for n in range(half))
    return f"<html><body><h1>Links</h1>{anchors}{images}</body></html>"


def _per_call(action: Callable[[], Any], *, seconds: float) -> float:
    """Seconds per call of `action`: the fastest of 5 rounds of about `seconds` / 5 each."""
    calls = 1
    while True:  # calibrate: enough calls for a round to take a measurable time
        began = time.perf_counter()
        for _ in range(calls):
            action()
        took = time.perf_counter() - began
        if took >= seconds / 25:
            break
        calls *= 2
    per_round = max(1, int(calls * (seconds / 5) / took))
    rounds = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(per_round):
            action()
        rounds.append((time.perf_counter() - began) / per_round)
    return min(rounds)


def _rules(name: str, **fields: FieldRule) -> RuleSet:
    return RuleSet(name, dict(fields))


def extraction(seconds: float) -> dict[str, float]:
    """Microseconds per page: plain rules, with processors, and the link-heavy page."""
    page = product(7).encode()
    url = "http://127.0.0.1:8800/product/7"
    plain = _rules("plain", title=FieldRule("h1", required=True), price=FieldRule(".price"))
    typed = _rules("typed", title=FieldRule("h1", required=True), price=FieldRule(".price", type="price"))
    links = _links_page().encode()
    joined = _rules(
        "joined",
        hrefs=FieldRule("a", attr="href", all=True),
        srcs=FieldRule("img", attr="src", all=True),
    )
    unjoined = _rules(
        "unjoined",
        hrefs=FieldRule("a", attr="href", all=True, urljoin=False),
        srcs=FieldRule("img", attr="src", all=True, urljoin=False),
    )
    return {
        "plain_us": _per_call(lambda: apply_rules(page, plain, url=url), seconds=seconds) * 1e6,
        "price_us": _per_call(lambda: apply_rules(page, typed, url=url), seconds=seconds) * 1e6,
        "links_unjoined_us": _per_call(lambda: apply_rules(links, unjoined, url=url), seconds=seconds) * 1e6,
        "links_joined_us": _per_call(lambda: apply_rules(links, joined, url=url), seconds=seconds) * 1e6,
    }


def capture(seconds: float) -> dict[str, float]:
    """Microseconds to capture a 10 KB page the first time (a new file) and again (there
    already), against extracting it."""
    body = (product(11) + "<p>" + "lorem ipsum dolor sit amet " * 370 + "</p>").encode()
    rules = _rules("plain", title=FieldRule("h1", required=True), price=FieldRule(".price"))
    with tempfile.TemporaryDirectory() as directory:
        store = PageStore(Path(directory) / "pages")
        serial = iter(range(10**9))

        def fresh() -> None:  # a different body each call: a new file each time
            store.put(body + str(next(serial)).encode())

        return {
            "page_bytes": len(body),
            "extract_us": _per_call(lambda: apply_rules(body, rules), seconds=seconds) * 1e6,
            "capture_new_us": _per_call(fresh, seconds=seconds) * 1e6,
            "capture_again_us": _per_call(lambda: store.put(body), seconds=seconds) * 1e6,
        }


def _wall(command: list[str], runs: int) -> float:
    """The median wall time of `runs` runs of `command`."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)  # noqa: S603 - our own CLI
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def no_cluster(runs: int) -> dict[str, float]:
    """Seconds for `flotilla jobs` to say that no cluster runs, against `flotilla --version`."""
    with tempfile.TemporaryDirectory() as directory:
        topology = Path(directory) / "t.yaml"
        topology.write_text(
            "nodes: {alpha: {address: 'tcp://127.0.0.1:7'}}\n"
            "rules: {shop: {fields: {t: {css: h1}}}}\n"
            "intake: {address: 'tcp://127.0.0.1:9', router: alpha/root/router}\n"
            "tree: {children: [{id: router, actor: router, args: {fetchers: alpha/root/f}},"
            " {id: x, actor: extractor}, {id: f, pool: {actor: fetcher, args: {extractor: alpha/root/x}}}]}\n",
            encoding="utf-8",
        )
        cli = [sys.executable, "-m", "flotilla.nodes.cli"]
        keys = subprocess.run(  # noqa: S603 - our own CLI
            [*cli, "keys", "generate", f"{directory}/data/keys", "--name", "local", "--name", "alpha"],
            capture_output=True,
            check=False,
        )
        if keys.returncode != 0:
            raise RuntimeError(keys.stderr.decode())
        floor = _wall([*cli, "--version"], runs)
        answer = _wall([*cli, "jobs", "--topology", str(topology)], runs)
    return {"version_s": floor, "no_cluster_s": answer}


def run(quick: bool) -> dict[str, Any]:
    seconds, runs = (0.5, 3) if quick else (2.0, 7)
    return {"extraction": extraction(seconds), "capture": capture(seconds), "cli": no_cluster(runs)}


def report(results: dict[str, Any]) -> None:
    e, c, cli = results["extraction"], results["capture"], results["cli"]
    print("Part 6: the everyday features")
    print(
        f"  product page: plain rules {e['plain_us']:.0f} µs, with type: price {e['price_us']:.0f} µs "
        f"({e['price_us'] / e['plain_us']:.2f}x)"
    )
    print(
        f"  {LINKS} root-relative links: urljoin off {e['links_unjoined_us']:.0f} µs, on (the default for "
        f"href/src) {e['links_joined_us']:.0f} µs ({e['links_joined_us'] / e['links_unjoined_us']:.2f}x)"
    )
    print(
        f"  capture of a {c['page_bytes'] / 1024:.1f} KB page: new {c['capture_new_us']:.0f} µs, kept already "
        f"{c['capture_again_us']:.0f} µs; extracting it {c['extract_us']:.0f} µs "
        f"(capture adds {c['capture_new_us'] / c['extract_us']:.2f}x of extraction)"
    )
    print(
        f"  'flotilla jobs' with no cluster: {cli['no_cluster_s']:.2f} s (goal < 1 s); "
        f"'flotilla --version': {cli['version_s']:.2f} s"
    )
