"""Actors a topology can name by a short built-in name instead of ``package.module:Class``."""

from __future__ import annotations

import importlib

from flotilla.actors.core.actor import Actor

BUILTIN_ACTORS: dict[str, str] = {
    "flaky": "flotilla.actors.demo.flaky:FlakyWorker",
    "ticker": "flotilla.actors.demo.ticker:Ticker",
    "tally": "flotilla.actors.demo.tally:Tally",
    "fetcher": "flotilla.actors.pipeline.fetcher:Fetcher",
    "extractor": "flotilla.actors.pipeline.extractor:Extractor",
    "router": "flotilla.actors.pipeline.router:Router",
    "alerts": "flotilla.actors.resilience.alerts:AlertSink",
    "breakers": "flotilla.actors.resilience.breakers:BreakerShard",
    "limiter": "flotilla.actors.resilience.limiter:RateLimiter",
    "hold": "flotilla.actors.resilience.hold:HoldMonitor",
    "proxies": "flotilla.actors.resilience.proxies:ProxyPool",
}


class ActorNotFound(Exception):
    """An actor reference names nothing importable, or something that is not an Actor."""


def resolve_actor(reference: str) -> type[Actor]:
    """Turn a built-in name or ``package.module:Class`` into the actor class."""
    target = BUILTIN_ACTORS.get(reference, reference)
    if ":" not in target:
        names = ", ".join(sorted(BUILTIN_ACTORS))
        raise ActorNotFound(
            f"unknown actor {reference!r}: not a built-in ({names}) and not of the form package.module:Class"
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a bad reference
        raise ActorNotFound(f"cannot import {module_name!r}: {exc}") from None
    obj: object = module
    for part in attribute.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ActorNotFound(f"module {module_name!r} has no {attribute!r}")
    if not (isinstance(obj, type) and issubclass(obj, Actor)):
        raise ActorNotFound(f"{target!r} is not a subclass of flotilla.actors.Actor")
    return obj
