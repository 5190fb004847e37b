"""CURVE keys and the ZAP allowlist (ZeroMQ's "Ironhouse": encrypted and authenticated).

`flotilla keys generate DIR --name NODE` writes ``NODE.key`` (public, 0644) and
``NODE.key_secret`` (0600, in a 0700 directory). A node with keys serves CURVE on its
listening socket with a ZAP handler in the same ZeroMQ context that accepts only the public
keys of the topology's nodes, and maps each key to its node name: that name (the ZAP
User-Id) is the peer's identity, never the routing id it claims.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

ZAP_DOMAIN = "flotilla"


class KeyFileError(Exception):
    """A key file is missing, unreadable or exposed."""


def generate_keys(directory: Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a key pair for `name` into `directory` (created 0700); return (public, secret).

    The secret file is created 0600 from the start (pyzmq's own helper leaves it to the
    umask, typically 0644)."""
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a node name (no '/', not hidden)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path, secret_path = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not overwrite and (public_path.exists() or secret_path.exists()):
        raise KeyFileError(f"{public_path} or {secret_path} already exists (use --force to replace)")
    public, secret = zmq.curve_keypair()
    banner = "#   ZeroMQ CURVE {kind} key for flotilla node {name}\n"
    for path in (public_path, secret_path):
        if path.exists():
            path.unlink()
    with open(public_path, "w", encoding="ascii") as out:
        out.write(banner.format(kind="public", name=name))
        out.write(f"metadata\ncurve\n    public-key = \"{public.decode()}\"\n")
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(banner.format(kind="SECRET", name=name))
        out.write(f"metadata\ncurve\n    public-key = \"{public.decode()}\"\n"
                  f"    secret-key = \"{secret.decode()}\"\n")
    return public_path, secret_path


def load_public(directory: Path, name: str) -> bytes:
    """The z85 public key of node `name`."""
    path = directory / f"{name}.key"
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc}") from None
    return public


def load_secret(directory: Path, name: str) -> tuple[bytes, bytes]:
    """The z85 (public, secret) pair of node `name`; refuses a secret readable by others."""
    path = directory / f"{name}.key_secret"
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyFileError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")
        public, secret = zmq.auth.load_certificate(str(path))
    except OSError as exc:
        raise KeyFileError(f"cannot read secret key {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KeyFileError(f"cannot read secret key {path}: {exc}") from None
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key")
    return public, secret


@dataclass(frozen=True)
class CurveKeys:
    """This node's key pair and the public key of every node of the cluster."""

    public: bytes
    secret: bytes
    peers: dict[str, bytes]

    @classmethod
    def load(cls, directory: Path, node: str, nodes: list[str]) -> CurveKeys:
        public, secret = load_secret(directory, node)
        return cls(public=public, secret=secret, peers={n: load_public(directory, n) for n in nodes})


class ClusterAuthenticator(ThreadAuthenticator):
    """ZAP handler: accepts only the cluster's keys; the User-Id is the node's name."""

    def __init__(self, context: zmq.Context, keys: CurveKeys,
                 on_reject: Callable[[str, str], None]) -> None:
        super().__init__(context)
        self._names = {key: name for name, key in keys.peers.items()}
        self._on_reject = on_reject
        self._address = ""

    def start(self) -> None:
        super().start()
        self.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    def callback(self, _domain: str, key: bytes) -> bool:
        """Called by the ZAP handler with the client's z85 key."""
        if key in self._names:
            return True
        self._on_reject(key.decode("ascii", "replace"), self._address)
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._names[zmq.utils.z85.encode(client_public_key)]
