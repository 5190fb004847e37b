"""The egress policy: which addresses fetchers may connect to (docs/security.md, "Egress").

A job's URL comes from a client, so without a policy a fetch could reach inside the network:
cloud metadata, the nodes' own ports, services on private ranges. By default a fetch is
refused when its host is, or resolves to, an address that is not public — loopback,
private, link-local, multicast, reserved, unspecified, shared (CGNAT) — or a cloud metadata
address or name, and always when it is one of the cluster's own endpoints. The topology
allows ranges or host names explicitly (`egress: {allow: [...]}`).

The check runs where it cannot be dodged (actors/pipeline/egress_hooks.py): host names are checked on
the addresses the resolver returns, right before aiohttp connects to them (so a name that
resolves differently a second time changes nothing); literal addresses, which aiohttp does
not resolve, and every redirect's target are checked by a trace hook. IPv4
addresses written as IPv6 (``::ffff:a.b.c.d``, ``::a.b.c.d``, 6to4 and NAT64 forms) are judged
as the IPv4 address they carry; user info in a URL (``user:pass@``) is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yarl import URL

    from flotilla.actors.core.system import ActorSystem

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
"""Cloud metadata services (AWS, ECS, GCP and Azure share the first; AWS over IPv6; Alibaba)."""

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"})
"""Host names of cloud metadata services, refused even when an allowed range would cover them."""

NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class EgressRefused(Exception):
    """A fetch the egress policy does not allow; the message says why."""


def normalise(address: Address) -> Address:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64_PREFIX:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, the deprecated compatible form
            return ipaddress.IPv4Address(int(address))
    return address


def why_not_public(address: Address) -> str | None:
    """What kind of non-public address `address` is, or None if it is public."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind.replace('_', '-')} address"
    if not address.is_global:
        return "not a public address"
    return None


def host_key(host: str) -> str:
    """A host name as compared: lower case, no trailing dot, no IPv6 brackets."""
    return host.lower().rstrip(".").strip("[]")


@dataclass(frozen=True)
class EgressPolicy:
    """Public addresses only, except the `allow`ed networks and host names; never the
    cluster's `endpoints` (address, port)."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()
    endpoints: frozenset[tuple[Address, int]] = field(default_factory=frozenset)

    @classmethod
    def of(cls, system: ActorSystem) -> EgressPolicy:
        """The policy `system` holds (the topology's `egress`, put there by the node runtime;
        without one: public addresses only)."""
        return system.extensions.setdefault(cls, cls)

    @classmethod
    def from_config(cls, allow: Iterable[str] = (), endpoints: Iterable[str] = ()) -> EgressPolicy:
        """A policy from the topology's `egress.allow` entries (CIDRs or host names) and the
        cluster's own endpoints (``tcp://HOST:PORT`` or ``HOST:PORT``; names are resolved now)."""
        networks: list[Network] = []
        hosts: set[str] = set()
        for entry in allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(host_key(entry))
        own: set[tuple[Address, int]] = set()
        for endpoint in endpoints:
            host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
            for address in _addresses_of(host.strip("[]")):
                own.add((normalise(address), int(port)))
        return cls(tuple(networks), frozenset(hosts), frozenset(own))

    def address_refusal(self, host: str, address: Address, port: int) -> str | None:
        """Why connecting to `address`:`port` (for `host`) is refused, or None."""
        address = normalise(address)
        if (address, port) in self.endpoints:
            return f"{host} ({address}) port {port} is one of the cluster's own endpoints"
        if host_key(host) in self.hosts or any(address in network for network in self.networks):
            return None
        why = why_not_public(address)
        if why is None:
            return None
        shown = host if host_key(host) == str(address) else f"{host} ({address})"
        return f"{shown} is {why}; allow it in the topology's egress section to fetch from it"

    def url_refusal(self, url: URL) -> str | None:
        """Why fetching `url` is refused on its face (scheme, user info, a metadata host name
        or a literal address), or None; names are checked once resolved (`EgressResolver`)."""
        if url.scheme not in ("http", "https"):
            return f"scheme {url.scheme or '(none)'!r}: only http and https are fetched"
        if url.raw_user is not None or url.raw_password is not None:
            return "the url carries credentials (user:password@)"
        host = host_key(url.raw_host or "")
        if not host:
            return "the url has no host"
        if host in METADATA_HOSTS and host not in self.hosts:
            return f"{host} is a cloud metadata host"
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return None
        return self.address_refusal(host, address, url.port or 0)


def _addresses_of(host: str) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
