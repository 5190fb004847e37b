"""Credentials in job URLs: refused unless the rule set opts in, and then sealed: never in the
journal, the results, the answers or the logs in clear, and sent only as Basic auth."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flotilla.actors.pipeline.credentials import CredentialError, CredentialSeal, redact
from flotilla.nodes.intake.client import IntakeClient
from flotilla.nodes.intake.protocol import JobSpec
from scripts.harness import free_ports, wait_until
from tests.cluster_harness import LiveCluster, start_with_intake

PASSWORD = "s3cret-pw"  # noqa: S105  the test site's


def test_a_sealed_password_opens_only_with_its_key_and_shows_as_stars(tmp_path: Path) -> None:
    seal = CredentialSeal.in_directory(tmp_path, create=True)
    assert (tmp_path / "credentials.key").stat().st_mode & 0o777 == 0o600
    sealed = seal.seal_url(f"http://u:{PASSWORD}@example.com/x?q=1")
    assert PASSWORD not in sealed and sealed.startswith("http://u:flotilla-sealed.")
    assert seal.open_url(sealed) == ("http://example.com/x?q=1", ("u", PASSWORD))
    assert redact(sealed) == "http://u:***@example.com/x?q=1"
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(CredentialError, match="does not open with this cluster's credentials key"):
        CredentialSeal.in_directory(other, create=True).open_url(sealed)
    with pytest.raises(CredentialError, match="not sealed"):
        seal.open_url(f"http://u:{PASSWORD}@example.com/")


class BasicAuthSite:
    """A page on 127.0.0.1 behind Basic auth; records what each request carried."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append((self.path, self.headers.get("Authorization", "")))
                expected = "Basic " + base64.b64encode(f"u:{PASSWORD}".encode()).decode()
                body = b"<h1 class='title'>members only</h1>"
                self.send_response(200 if self.headers.get("Authorization") == expected else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_ports(1)[0]), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def site() -> Iterator[BasicAuthSite]:
    made = BasicAuthSite()
    yield made
    made.stop()


TREE = """
children:
  - id: router
    actor: router
    args: {fetchers: alpha/root/fetching/fetchers, max_attempts: 2, visibility: 10}
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
rules:
  members:
    credentials: true
    fields: {title: {css: h1.title, required: true}}
  public:
    fields: {title: {css: h1.title, required: true}}
intake: {node: alpha, address: "tcp://127.0.0.1:%d", router: alpha/root/router}
"""


def test_credentials_of_an_opted_in_rule_set_are_sent_as_basic_auth_and_never_kept_in_clear(
    tmp_path: Path, clusters: list[LiveCluster], site: BasicAuthSite
) -> None:
    cluster = start_with_intake(tmp_path, clusters, TREE, EXTRA, ("alpha", "beta"))
    url = f"http://u:{PASSWORD}@127.0.0.1:{site.port}/members"
    with IntakeClient.for_topology(cluster.topology) as client:
        acks = client.submit([JobSpec(url, "members"), JobSpec(url, "public")])
        assert [a.status for a in acks] == ["accepted", "rejected"]
        assert "rule set 'public' does not accept them" in acks[1].reason
        wait_until(lambda: client.counts().states["stored"] == 1, timeout=60, what="the job to be stored")
        shown = f"http://u:***@127.0.0.1:{site.port}/members"
        assert [job.url for job in client.status([acks[0].key])] == [shown]
        assert [result.url for result in client.all_results()] == [shown]
        assert acks[0].key == client.status([acks[0].key])[0].key
    expected = "Basic " + base64.b64encode(f"u:{PASSWORD}".encode()).decode()
    # In the header only, never in the request line. (Fetching is at least once: a lease that
    # came back — e.g. its node was declared down for a moment under load — is fetched again.)
    assert site.seen and set(site.seen) == {("/members", expected)}
    journal_files = list(cluster.topology.node_data_dir("alpha").glob("journal.sqlite*"))
    assert journal_files and not any(PASSWORD.encode() in path.read_bytes() for path in journal_files)
    assert not any(PASSWORD in line for process in cluster.processes.values() for line in process.lines)
