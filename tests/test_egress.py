"""The egress policy: fetches that would reach inside the network end HARD with the reason,
and nothing reaches the servers they aimed at."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from yarl import URL

from flotilla.actors.pipeline.egress import EgressPolicy, EgressRefused, normalise
from flotilla.actors.pipeline.egress_hooks import EgressResolver
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import free_ports, wait_until
from tests.cluster_harness import LiveCluster, start_with_intake

POLICY = EgressPolicy.from_config(["127.0.0.1"], ["tcp://127.0.0.1:7101"])


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://127.0.0.2/", "127.0.0.2 is a loopback address"),
        ("http://[::ffff:169.254.169.254]/", "a cloud metadata address"),
        ("http://[::ffff:a9fe:a9fe]/latest/meta-data/", "a cloud metadata address"),
        ("http://169.254.169.254/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/", "a cloud metadata address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a cloud metadata host"),
        ("http://METADATA.google.internal./", "a cloud metadata host"),
        ("http://[64:ff9b::7f00:2]/", "a loopback address"),  # NAT64 form of 127.0.0.2
        ("http://[2002:a00:1::]/", "a private address"),  # 6to4 form of 10.0.0.1
        ("http://[::127.0.0.2]/", "a loopback address"),
        ("http://0.0.0.0/", "an unspecified address"),
        ("http://10.1.2.3/", "a private address"),
        ("http://192.168.0.1/", "a private address"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://224.0.0.1/", "a multicast address"),
        ("http://[fe80::1]/", "a link-local address"),
        ("http://127.0.0.1:7101/", "one of the cluster's own endpoints"),
        ("http://user:pw@example.com/", "carries credentials"),
        ("ftp://example.com/", "only http and https"),
    ],
)
def test_the_policy_refuses_inside_addresses_in_any_notation(url: str, why: str) -> None:
    reason = POLICY.url_refusal(URL(url))
    assert reason is not None and why in reason, reason


def test_public_and_explicitly_allowed_addresses_pass() -> None:
    assert POLICY.url_refusal(URL("http://93.184.215.14/")) is None
    assert POLICY.url_refusal(URL("http://example.com/")) is None  # names are judged once resolved
    assert POLICY.url_refusal(URL("http://127.0.0.1:8800/")) is None  # allowed by this topology
    assert POLICY.url_refusal(URL("http://[::ffff:127.0.0.1]:8800/")) is None
    ranged = EgressPolicy.from_config(["10.1.0.0/16", "intranet.example"])
    assert ranged.url_refusal(URL("http://10.1.200.3/")) is None
    assert ranged.url_refusal(URL("http://10.2.0.1/")) is not None
    assert normalise(ipaddress.ip_address("::ffff:10.1.0.1")) == ipaddress.ip_address("10.1.0.1")


def test_names_are_checked_on_the_addresses_they_resolve_to() -> None:
    async def resolve(policy: EgressPolicy) -> list:
        resolver = EgressResolver(policy)
        try:
            return await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    with pytest.raises(EgressRefused, match=r"localhost \(127\.0\.0\.1\) is a loopback address"):
        asyncio.run(resolve(EgressPolicy()))
    assert asyncio.run(resolve(EgressPolicy.from_config(["localhost"])))


class CountingServer:
    """An HTTP server of the test's own on `host`: counts every request; `/to?url=U`
    redirects to U, anything else is a product page."""

    def __init__(self, host: str) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                parts = urlsplit(self.path)
                if parts.path == "/to":
                    self.send_response(302)
                    self.send_header("Location", parse_qs(parts.query)["url"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"<h1 class='title'>inside</h1><p class='price'>1</p>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, free_ports(1)[0]), Handler)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def servers() -> Iterator[dict[str, CountingServer]]:
    made = {host: CountingServer(host) for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3")}
    yield made
    for server in made.values():
        server.stop()


TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_in_flight: 50, max_attempts: 3, visibility: 10}
  - id: fetching
    node: beta
    supervisor:
      children:
        - id: extractors
          pool: {actor: extractor, size: 1}
        - id: fetchers
          pool: {actor: fetcher, size: 1, args: {extractor: alpha/root/fetching/extractors, timeout: 2.0}}
"""

EXTRA = """
egress: {allow: [127.0.0.1]}
rules:
  product:
    fields:
      title: {css: h1.title, required: true}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
"""


def test_fetches_aimed_inside_end_hard_with_the_reason_and_reach_nothing(
    tmp_path: Path, clusters: list[LiveCluster], servers: dict[str, CountingServer]
) -> None:
    cluster = start_with_intake(tmp_path, clusters, TREE, EXTRA, ("alpha", "beta"))
    allowed, second, third = servers["127.0.0.1"].url, servers["127.0.0.2"].url, servers["127.0.0.3"].url
    port2, port3 = second.rsplit(":", 1)[1], third.rsplit(":", 1)[1]
    alpha_port = cluster.topology.nodes["alpha"].address.rsplit(":", 1)[1]
    refused = {
        f"{second}/direct": "127.0.0.2 is a loopback address",
        f"{allowed}/to?url={third}/redirected": "redirect to http://127.0.0.3",
        f"http://[::ffff:127.0.0.2]:{port2}/mapped": "is a loopback address",
        f"http://[::ffff:7f00:3]:{port3}/mapped-hex": "is a loopback address",
        f"{allowed}/to?url=http://[::ffff:127.0.0.3]:{port3}/redirect-mapped": "is a loopback address",
        f"{allowed}/to?url=http://u:p@127.0.0.1:{allowed.rsplit(':', 1)[1]}/creds": "carries credentials",
        f"http://127.0.0.1:{alpha_port}/": "one of the cluster's own endpoints",
    }
    with IntakeClient.for_topology(cluster.topology) as client:
        acks = client.submit(
            [JobSpec(url, "product") for url in refused]
            + [
                JobSpec(f"{allowed}:1@127.0.0.3:{port3}/userinfo-trick", "product"),
                JobSpec(f"{allowed}/fine", "product"),
            ]
        )
        assert [a.status for a in acks] == ["accepted"] * len(refused) + ["rejected", "accepted"]
        assert acks[-2].reason.startswith("url carries credentials")

        def settled() -> bool:
            states = client.counts().states
            return states["dead"] == len(refused) and states["stored"] == 1

        wait_until(settled, timeout=60, what="every refused job dead and the allowed one stored")
        dead = {job.url: job.reason or "" for job in client.all_jobs("dead")}
    for url, why in refused.items():
        assert dead[url].startswith("HARD: egress refused: ") and why in dead[url], (url, dead[url])
    assert servers["127.0.0.2"].requests == 0 and servers["127.0.0.3"].requests == 0
    # /fine and the three redirects it answered (again if a lease came back while beta seemed down)
    assert servers["127.0.0.1"].requests >= 4
