"""Who may use the intake socket, and as whom (docs/security.md, "The intake").

The intake is a CURVE server behind a ZAP allowlist: the keys of the topology's `clients`
(role client), of its `operators` and of the local user (role operator). Each key's public
half is ``<name>.key`` in the cluster's key directory: `security.keys` when the topology
sets it, else ``<data_dir>/keys`` (made on first start). The ZAP User-Id of a connection is
the name its key has there, and that name alone says what it may do (see `REQUEST_ROLES` in
nodes/intake/protocol.py): a client submits and reads its own jobs and results; an operator
also steers the fleet and sees every job.

The local user's key is ``local.key_secret`` in the key directory: whoever can read that
directory (the cluster's owner) is an operator without any key step; everyone else needs a
key of their own (`flotilla keys generate DIR --name NAME`, NAME in `clients:`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
    if topology.security.keys is None and topology.intake is not None:
        ensure_generated_keys(generated_keys_dir(topology), list(topology.nodes))


@dataclass(frozen=True)
class IntakeAccess:
    """The intake's own key pair and the role of every name whose key it accepts."""

    keys: CurveKeys
    roles: dict[str, Role]

    @classmethod
    def load(cls, topology: Topology) -> IntakeAccess:
        """The intake node's key pair, and the public keys of the operators, the local user
        (if its key exists) and the clients; raises `KeyFileError` naming a missing file."""
        if topology.intake is None:
            raise ValueError(f"{topology.source}: no intake section")
        directory = key_directory(topology)
        public, secret = load_secret(directory, topology.intake.node)
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
    """What a client needs for the intake's CURVE handshake: its own key pair and the
    intake's public key."""

    public: bytes
    secret: bytes
    server: bytes


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
    topology: Topology, key_file: Path | None = None, server_key_file: Path | None = None, wait: float = 0.0
) -> ClientKey:
    """The key a client of `topology`'s intake connects with: `key_file`, else the local
    user's (readable only by the cluster's owner). The intake's public key is
    `server_key_file`, else ``<intake node>.key`` in the key directory. Waits up to `wait`
    seconds for key files a starting cluster is still writing; raises `KeyFileError` saying
    which file is missing or unreadable."""
    if topology.intake is None:
        raise ValueError(f"{topology.source}: no intake section: this cluster takes no jobs")
    directory = key_directory(topology)
    secret_path = key_file or directory / f"{LOCAL_USER}.key_secret"
    server_path = server_key_file or directory / f"{topology.intake.node}.key"
    deadline = time.monotonic() + wait
    while not (_present(secret_path) and _present(server_path)) and time.monotonic() < deadline:
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
    try:
        server, _ = (
            load_secret_file(server_path)
            if server_path.name.endswith(".key_secret")
            else (load_public(server_path.parent, server_path.name.removesuffix(".key")), None)
        )
    except KeyFileError as exc:
        raise KeyFileError(
            f"{exc}; pass --server-key FILE (the intake node's public key, {topology.intake.node}.key)"
        ) from None
    return ClientKey(public, secret, server)
