"""Who may use the intake socket, and as whom (docs/security.md, "The intake").

The intake is a CURVE server behind a ZAP allowlist: the keys of the topology's `clients`
(role client), of its `operators` and of the local user (role operator). Each key's public
half is ``<name>.key`` in the cluster's key directory: `security.keys` when the topology
sets it, else ``<data_dir>/keys`` (made on first start). The ZAP User-Id of a connection is
the name its key has there, and that name alone says what it may do (see `REQUEST_ROLES` in
nodes/intake/protocol.py): a client submits and reads its own jobs and results; an operator
also steers the fleet and sees every job.

Each intake's key pair is its node's (``<node>.key`` / ``<node>.key_secret``): with several
intakes (one per node) no node holds another's secret, and a client checks each intake
against the public key of the node the topology names for that address (`ClientKey.servers`).

The local user's key is ``local.key_secret`` in the key directory: whoever can read that
directory (the cluster's owner) is an operator without any key step; everyone else needs a
key of their own (`flotilla keys generate DIR --name NAME`, NAME in `clients:`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import zmq

from flotilla.nodes.intake.protocol import Request, Role, required_role
from flotilla.nodes.security.auth_failures import AuthFailures
from flotilla.nodes.security.keys import (
    LOCAL_KEY,
    ClusterAuthenticator,
    CurveKeys,
    KeyFileError,
    ensure_generated_keys,
    generated_keys_dir,
    load_public,
    load_secret,
)

if TYPE_CHECKING:
    from flotilla.nodes.config.topology import Topology

LOCAL_USER = LOCAL_KEY
"""The name of the local user's key pair in the key directory (an operator of the intake)."""

KEY_WAIT_POLL = 0.05
"""Seconds between looks for a key file that a starting cluster has not written yet."""

_log = structlog.get_logger("flotilla.intake")


def key_directory(topology: Topology) -> Path:
    """Where the cluster's keys are: `security.keys` if the topology sets it, else
    ``<data_dir>/keys`` (generated on first start, nodes/security/keys.py)."""
    return topology.security.keys if topology.security.keys is not None else generated_keys_dir(topology)


def ensure_intake_keys(topology: Topology) -> None:
    """Without `security.keys`, make sure the generated key directory holds the node keys and
    the local user's (made under its lock if they are not there yet). The intake is CURVE
    even when the node links opted into plaintext. With `security.keys` the operator
    provides them."""
    if topology.security.keys is None and topology.intakes:
        ensure_generated_keys(generated_keys_dir(topology), list(topology.nodes))


@dataclass(frozen=True)
class IntakeAccess:
    """The intake's own key pair and the role of every name whose key it accepts."""

    keys: CurveKeys
    roles: dict[str, Role]

    @classmethod
    def load(cls, topology: Topology, node: str) -> IntakeAccess:
        """The key pair of the intake on `node` (the node's own), and the public keys of the
        operators, the local user (if its key exists) and the clients; raises `KeyFileError`
        naming a missing file."""
        if topology.intake_on(node) is None:
            raise ValueError(f"{topology.source}: no intake on node {node}")
        directory = key_directory(topology)
        public, secret = load_secret(directory, node)
        roles: dict[str, Role] = {name: "client" for name in topology.security.clients}
        roles.update({name: "operator" for name in topology.security.operators})
        if (directory / f"{LOCAL_USER}.key").is_file():
            roles[LOCAL_USER] = "operator"
        peers = {name: load_public(directory, name) for name in roles}
        return cls(CurveKeys(public=public, secret=secret, peers=peers), roles)

    def refusal(self, user: str, request: Request) -> str | None:
        """Why `user` may not send `request`, or None if it may."""
        role = self.roles.get(user)
        if role is None:
            return f"{user or 'an unauthenticated peer'} is not a client of this intake"
        if required_role(request) == "operator" and role != "operator":
            return f"{type(request).__name__} needs an operator key; {user} is a client"
        return None

    def scope(self, user: str) -> str | None:
        """Whose jobs `user` sees: its own (a client), or everyone's (None: an operator)."""
        return None if self.roles.get(user) == "operator" else user


class IntakeGuard:
    """The ZAP handler of the intake's ZeroMQ context: lets in only `access`'s keys, and
    counts the handshakes it refuses in `failures` (logged throttled, alerted past a rate —
    nodes/security/auth_failures.py — so a key-spraying peer cannot flood the log)."""

    socket = "intake"
    """The socket's name in logs and metrics."""

    def __init__(self, context: zmq.Context, access: IntakeAccess) -> None:
        self.failures = AuthFailures(self.socket, event="intake.key_rejected")
        self._authenticator = ClusterAuthenticator(context, access.keys, self.failures.record)

    @property
    def rejected(self) -> int:
        """Handshakes refused so far."""
        return self.failures.total

    def start(self) -> None:
        self._authenticator.start()

    def stop(self) -> None:
        self._authenticator.stop()


@dataclass(frozen=True)
class ClientKey:
    """What a client needs for the intakes' CURVE handshakes: its own key pair and each
    intake's public key."""

    public: bytes
    secret: bytes
    server: bytes
    """The intake's public key: of every address not in `servers`."""
    servers: Mapping[str, bytes] = field(default_factory=dict)
    """The public key of the intake at each of these addresses (each intake has its node's)."""

    def server_at(self, address: str) -> bytes:
        """The public key the intake at `address` must prove it holds."""
        return self.servers.get(address, self.server)


def load_secret_file(path: Path) -> tuple[bytes, bytes]:
    """The (public, secret) pair in a ``NAME.key_secret`` file; refuses one others can read."""
    if not path.name.endswith(".key_secret"):
        raise KeyFileError(f"{path}: a client key is a NAME.key_secret file made by 'flotilla keys generate'")
    return load_secret(path.parent, path.name.removesuffix(".key_secret"))


def _present(path: Path) -> bool:
    """Whether `path` exists as far as this user can tell (False where it may not look)."""
    try:
        return path.exists()
    except OSError:
        return False


def client_key(
    topology: Topology,
    key_file: Path | None = None,
    server_key_files: Sequence[Path] = (),
    wait: float = 0.0,
) -> ClientKey:
    """The key a client of `topology`'s intakes connects with: `key_file`, else the local
    user's (readable only by the cluster's owner). Each intake's public key is
    ``<intake node>.key`` in the key directory, or the file of `server_key_files` at its
    place (one per intake, in the topology's order). Waits up to `wait` seconds for key files
    a starting cluster is still writing; raises `KeyFileError` saying which file is missing or
    unreadable, and ValueError if the topology has no intake or `server_key_files` does not
    match its intakes."""
    intakes = topology.intakes
    if not intakes:
        raise ValueError(f"{topology.source}: no intake section: this cluster takes no jobs")
    if server_key_files and len(server_key_files) != len(intakes):
        raise ValueError(
            f"{len(server_key_files)} server key(s) for {len(intakes)} intakes: give --server-key once per "
            f"intake, in the topology's order ({', '.join(f'{i.node}.key' for i in intakes)})"
        )
    directory = key_directory(topology)
    secret_path = key_file or directory / f"{LOCAL_USER}.key_secret"
    server_paths = list(server_key_files) or [directory / f"{intake.node}.key" for intake in intakes]
    deadline = time.monotonic() + wait
    while not (_present(secret_path) and all(map(_present, server_paths))) and time.monotonic() < deadline:
        time.sleep(KEY_WAIT_POLL)
    try:
        public, secret = load_secret_file(secret_path)
    except KeyFileError as exc:
        if key_file is not None:
            raise
        raise KeyFileError(
            f"no client key: {exc}. Pass --key FILE (a NAME.key_secret made by 'flotilla keys "
            "generate DIR --name NAME', with NAME in the topology's clients:)"
        ) from None
    servers = {
        intake.address: _server_key(path, intake.node) for intake, path in zip(intakes, server_paths, strict=True)
    }
    return ClientKey(public, secret, servers[intakes[0].address], servers)


def _server_key(path: Path, node: str) -> bytes:
    """The public key in `path` (a ``NAME.key``, or the public half of a ``NAME.key_secret``)."""
    try:
        if path.name.endswith(".key_secret"):
            return load_secret_file(path)[0]
        return load_public(path.parent, path.name.removesuffix(".key"))
    except KeyFileError as exc:
        raise KeyFileError(f"{exc}; pass --server-key FILE (the intake node's public key, {node}.key)") from None
