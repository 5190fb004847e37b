"""The pipeline with the resilience actors asked for, on one node: what the resilience tests and
part 4 of the benchmarks run against the demo site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flotilla.actors import ActorSystem, ChildSpec, PoolSpec, SupervisorFlags, SupervisorSpec
from flotilla.actors.pipeline.extractor import Extractor
from flotilla.actors.pipeline.fetcher import Fetcher
from flotilla.actors.pipeline.journal import Journal
from flotilla.actors.pipeline.router import Router
from flotilla.actors.pipeline.rules import ExtractionRules, FieldRule, RuleSet
from flotilla.actors.resilience.alerts import AlertSink
from flotilla.actors.resilience.breakers import BreakerShard
from flotilla.actors.resilience.gate import Gate
from flotilla.actors.resilience.hold import HoldMonitor
from flotilla.actors.resilience.limiter import RateLimiter
from flotilla.actors.resilience.proxies import ProxyPool

RULES = {
    "product": RuleSet(
        "product", {"title": FieldRule("h1.title", required=True), "price": FieldRule(".price", required=True)}
    )
}
PATIENT = {"max_attempts": 1000, "transient_base": 0.05, "transient_cap": 0.2, "blocked_delay": 0.1, "visibility": 10.0}


def start_fleet(
    system: ActorSystem,
    data: Path,
    *,
    breakers: dict[str, Any] | None = None,
    limiter: dict[str, Any] | None = None,
    hold: dict[str, Any] | None = None,
    proxies: dict[str, Any] | None = None,
    fetchers: int = 2,
    policy: dict[str, Any] | None = None,
    fetcher_args: dict[str, Any] | None = None,
) -> Journal:
    """The pipeline on one node with the resilience actors asked for, and the node's gate."""
    system.extensions.put(ExtractionRules(RULES))
    system.data_dir = data
    control: list[Any] = []
    gate: dict[str, Any] = {"interval": 0.05}
    if breakers is not None:
        control.append(
            PoolSpec("breakers", ChildSpec("b", BreakerShard, {"alerts": "t/root/alerts", **breakers}), size=2)
        )
        gate.update(breakers="t/root/breakers", shards=2)
    if limiter is not None:
        control.append(ChildSpec("limiter", RateLimiter, limiter))
        gate["limiter"] = "t/root/limiter"
    if hold is not None:
        control.append(ChildSpec("hold", HoldMonitor, {"alerts": "t/root/alerts", **hold}))
        gate["hold"] = "t/root/hold"
    if proxies is not None:
        control.append(ChildSpec("proxies", ProxyPool, {"alerts": "t/root/alerts", **proxies}))
        gate["proxies"] = "t/root/proxies"
    children = (
        ChildSpec("alerts", AlertSink),
        *control,
        PoolSpec("extractors", ChildSpec("x", Extractor), size=2),
        PoolSpec(
            "fetchers",
            ChildSpec(
                "f",
                Fetcher,
                {"extractor": "t/root/extractors", "timeout": 5.0, "slot_wait": 2.0, **(fetcher_args or {})},
            ),
            size=fetchers,
        ),
        ChildSpec("router", Router, {"fetchers": "t/root/fetchers", "alerts": "t/root/alerts", **(policy or PATIENT)}),
    )
    system.start(SupervisorSpec("root", children=children, flags=SupervisorFlags(intensity=10)))
    system.start_services(SupervisorSpec("services", (ChildSpec("gate", Gate, gate),)))
    return Journal(data / "journal.sqlite")
