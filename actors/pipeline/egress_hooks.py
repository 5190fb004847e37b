"""The egress policy (actors/pipeline/egress.py) wired into aiohttp: a resolver that checks every
address a host name resolves to, and a trace that checks the URL of a request and of each
redirect. Both raise `EgressRefused`, which the fetcher turns into a HARD failure."""

from __future__ import annotations

import ipaddress
import socket
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from flotilla.actors.pipeline.egress import EgressPolicy, EgressRefused, host_key


class EgressResolver(AbstractResolver):
    """aiohttp's resolver, with every address it returns checked against the policy; raises
    `EgressRefused` instead of returning a refused one. Host names in `trusted` (the proxies
    the topology configures) are resolved without the check."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or aiohttp.DefaultResolver()
        self.trusted: set[str] = set()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if host_key(host) in self.trusted:
            return found
        for result in found:
            reason = self.policy.address_refusal(host, ipaddress.ip_address(result["host"].partition("%")[0]), port)
            if reason is not None:
                raise EgressRefused(reason)
        return found

    async def close(self) -> None:
        await self.inner.close()


def egress_trace(policy: EgressPolicy) -> aiohttp.TraceConfig:
    """A trace that refuses a request whose URL, or any redirect's target, the policy
    refuses on its face (`EgressPolicy.url_refusal`)."""

    async def on_start(_session: Any, _context: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
        reason = policy.url_refusal(params.url)
        if reason is not None:
            raise EgressRefused(reason)

    async def on_redirect(_session: Any, _context: SimpleNamespace, params: aiohttp.TraceRequestRedirectParams) -> None:
        location = params.response.headers.get("Location") or params.response.headers.get("URI")
        if location is None:
            return
        try:
            target = params.response.url.join(URL(location))
        except ValueError as exc:
            raise EgressRefused(f"redirect to an invalid url {location[:200]!r}: {exc}") from None
        reason = policy.url_refusal(target)
        if reason is not None:
            raise EgressRefused(f"redirect to {str(target)[:200]}: {reason}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.on_request_redirect.append(on_redirect)
    return trace
