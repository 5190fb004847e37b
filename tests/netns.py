"""Hosts in network namespaces, for partition tests.

A `Network` makes one network namespace per host and a "switch" namespace holding a bridge;
each host has one veth pair: ``eth0`` inside the host, its other end a port of the bridge.
Hosts get addresses of a private /24 (``10.213.N.0/24``) that exists only inside these
namespaces: nothing is routed out of them, and the machine's own interfaces never see it.
Every namespace has ``lo`` up, so a host also reaches its own 127.0.0.1.

`cut(host)` sets the host's port on the bridge down: its packets are dropped from then on
(TCP connections stall, nothing is refused or reset), as when a cable is pulled; `heal(host)`
sets it up again. Processes run inside a host with ``ip netns exec`` (which execs the program
itself, so signals reach it) and are collected as `FlotillaProcess`es: log lines read as they
come, waits with deadlines. `close()` kills every process started here, then any left in the
namespaces, and deletes the namespaces; the fixtures call it whatever the test's outcome.
Unix sockets and files are shared across namespaces: the shell's IPC socket and a database's
socket directory are reachable from the test process itself.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.processes import ROOT, FlotillaProcess, _env, flotilla_command

SUBNET = "10.213"
"""The first two octets of the hosts' /24 (the third is drawn per network)."""
COMMAND_TIMEOUT = 20.0
"""Longest wait for one `ip` command."""


class NamespaceError(RuntimeError):
    """An `ip` command that sets up or changes the network failed."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


@functools.cache
def namespaces_unavailable() -> str | None:
    """Why this machine cannot run the partition tests (None: it can). Tries for real: a
    namespace with a veth pair, made and deleted."""
    if sys.platform != "linux":
        return "network namespaces are a Linux feature"
    if shutil.which("ip") is None:
        return "no `ip` command (install iproute2)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    probe = f"flt-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
        try:
            _ip("link", "add", "probe0", "netns", probe, "type", "veth", "peer", "name", "probe1", "netns", probe)
        finally:
            _ip("netns", "delete", probe)
    except (NamespaceError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace with a veth pair here: {exc}"
    return None


@dataclass(frozen=True)
class Host:
    """One machine of the network."""

    name: str
    namespace: str
    address: str
    port: str
    """Its veth end in the switch namespace (a port of the bridge)."""


class Network:
    """Hosts in namespaces around one bridge; see the module's docstring."""

    def __init__(self, hosts: Sequence[str]) -> None:
        suffix = secrets.token_hex(3)
        self.subnet = f"{SUBNET}.{secrets.randbelow(250) + 1}"
        self.switch = f"flt-{suffix}-switch"
        self.hosts: dict[str, Host] = {}
        self.processes: list[FlotillaProcess] = []
        self._at_close: list[Callable[[], None]] = []
        self._namespaces: list[str] = []
        self._cut: set[str] = set()
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for index, name in enumerate(hosts):
                self._add_host(name, index, f"flt-{suffix}-{name}")
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def _add_host(self, name: str, index: int, namespace: str) -> None:
        host = Host(name, namespace, f"{self.subnet}.{index + 2}", f"port{index}")
        self._add_namespace(namespace)
        _ip("link", "add", host.port, "netns", self.switch, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/24"

    def address(self, host: str) -> str:
        return self.hosts[host].address

    def command(self, host: str, *argv: str) -> list[str]:
        """`argv` run inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.hosts[host].namespace, *argv]

    def run(self, host: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `host` to completion (from the checkout, the tests' environment)."""
        return subprocess.run(
            self.command(host, *argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=_env(),
            check=False,
        )

    def run_flotilla(self, host: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """The `flotilla` CLI run to completion inside `host`."""
        return self.run(host, *flotilla_command(*args), timeout=timeout)

    def start(self, host: str, *argv: str) -> FlotillaProcess:
        """A long-running `argv` inside `host`, its output collected; killed by `close()`."""
        process = FlotillaProcess(command=self.command(host, *argv))
        self.processes.append(process)
        return process

    def start_flotilla(self, host: str, *args: str) -> FlotillaProcess:
        """A long-running `flotilla args...` inside `host`."""
        return self.start(host, *flotilla_command(*args))

    def get_json(self, host: str, url: str, timeout: float = 10.0) -> object:
        """GET `url` from inside `host` and decode its JSON answer."""
        code = (
            "import sys, urllib.request\n"
            "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:\n"
            "    sys.stdout.write(r.read().decode())\n"
        )
        done = self.run(host, sys.executable, "-c", code, url, str(timeout), timeout=timeout + 10)
        assert done.returncode == 0, f"GET {url} from {host}: {done.stderr}"
        return json.loads(done.stdout)

    def cut(self, host: str) -> None:
        """Pull `host`'s cable: its port on the bridge goes down, every packet to or from it is
        dropped (connections stall; nothing is refused)."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "down")
        self._cut.add(host)

    def heal(self, host: str) -> None:
        """Plug `host` back in."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "up")
        self._cut.discard(host)

    def is_cut(self, host: str) -> bool:
        return host in self._cut

    def at_close(self, cleanup: Callable[[], None]) -> None:
        """Call `cleanup` in `close()`, once the processes are stopped (last added, first called)."""
        self._at_close.append(cleanup)

    def close(self) -> None:
        """Kill every process started here (SIGTERM, then SIGKILL), then any other left in
        the namespaces, and delete the namespaces (their veth pairs and the bridge go with them)."""
        for process in reversed(self.processes):  # the last started may depend on the first
            try:
                process.kill()
            except (OSError, subprocess.TimeoutExpired):
                pass
        while self._at_close:
            self._at_close.pop()()
        for namespace in reversed(self._namespaces):
            for pid in _pids(namespace):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                _ip("netns", "delete", namespace)
            except (NamespaceError, subprocess.TimeoutExpired):
                pass
        self._namespaces.clear()


def _pids(namespace: str) -> list[int]:
    """The processes still inside `namespace` (all of them started by the test)."""
    done = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    return [int(pid) for pid in done.stdout.split()]
