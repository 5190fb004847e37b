"""The alert sink: logs and counts every alert and forwards it to a real local webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import structlog

from flotilla.actors import ActorSystem, ChildSpec, SupervisorSpec
from flotilla.actors.resilience.alerts import AlertSink
from flotilla.actors.resilience.hold import HoldMonitor
from flotilla.actors.resilience.messages import Alert, HoldCommand
from scripts.harness import wait_until


class Webhook:
    """A real HTTP server on loopback that records what is POSTed to it."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def test_alerts_are_counted_and_forwarded_to_the_webhook(system: ActorSystem, webhook: Webhook) -> None:
    system.start(SupervisorSpec("root", children=(ChildSpec("alerts", AlertSink, {"webhook": webhook.url}),)))
    sink = system.ref("t/root/alerts")
    sink.tell(Alert("warning", "t/root/router", "layout drift: job parked", "k1: missing price", 1.0))
    sink.tell(Alert("critical", "t/root/hold", "fleet on Hold", "success rate 41 %", 2.0))
    wait_until(lambda: len(webhook.received) == 2, what="both alerts at the webhook")
    assert webhook.received[0] == {
        "_type": "Alert",
        "severity": "warning",
        "source": "t/root/router",
        "title": "layout drift: job parked",
        "detail": "k1: missing price",
        "at": 1.0,
    }
    actor = system.registry.lookup("t/root/alerts").actor
    assert actor.inspect().counts == {"warning:t/root/router": 1, "critical:t/root/hold": 1}


def test_a_failing_webhook_is_counted_and_never_crashes_the_sink(system: ActorSystem) -> None:
    from scripts.harness import free_ports

    dead = f"http://127.0.0.1:{free_ports(1)[0]}/nobody"
    system.start(SupervisorSpec("root", children=(ChildSpec("alerts", AlertSink, {"webhook": dead, "timeout": 1}),)))
    system.ref("t/root/alerts").tell(Alert("info", "test", "hello"))
    actor = system.registry.lookup("t/root/alerts").actor
    wait_until(lambda: actor.forward_failures == 1, what="the failed forward to be counted")
    assert system.supervisor("t/root").which_children()[0].incarnation == 1


def test_a_part_without_a_sink_logs_each_alert_once_at_its_severity(system: ActorSystem) -> None:
    with structlog.testing.capture_logs() as logged:  # before the start: actors bind their logger then
        system.start(SupervisorSpec("root", children=(ChildSpec("hold", HoldMonitor),)))
        system.ask("t/root/hold", HoldCommand("on"), timeout=5)
        system.ask("t/root/hold", HoldCommand("off"), timeout=5)
    alerts = [(e["event"], e["log_level"], e["source"], e["title"]) for e in logged if e["event"].startswith("alert")]
    assert alerts == [
        ("alert", "critical", "t/root/hold", "fleet in Hold: fresh fetches paused"),
        ("alert", "info", "t/root/hold", "fleet out of Hold: fetching resumed"),
    ]


def test_a_webhook_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="must be an http or https URL"):
        AlertSink(webhook="file:///etc/passwd")


def test_an_alert_whose_sink_is_not_alive_is_logged_by_the_part_that_raised_it(system: ActorSystem) -> None:
    with structlog.testing.capture_logs() as logged:
        system.start(SupervisorSpec("root", children=(ChildSpec("hold", HoldMonitor, {"alerts": "t/root/gone"}),)))
        system.ask("t/root/hold", HoldCommand("on"), timeout=5)
    alerts = [(e["event"], e["log_level"], e["title"]) for e in logged if e["event"].startswith("alert")]
    assert alerts == [("alert", "critical", "fleet in Hold: fresh fetches paused")]  # not lost as a dead letter
