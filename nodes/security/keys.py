"""CURVE keys and the ZAP allowlist (ZeroMQ's "Ironhouse": encrypted and authenticated).

`flotilla keys generate DIR --name NODE` writes ``NODE.key`` (public, 0644) and
``NODE.key_secret`` (0600, in a 0700 directory). A topology without `security.keys` gets
its keys generated on first start into ``<data_dir>/keys/`` (`ensure_generated_keys`), one
pair per node plus ``local.key`` for the local user's client and operator. A node serves
CURVE on its listening socket with a ZAP handler in the same ZeroMQ context that accepts
only the public keys of the topology's nodes, and maps each key to its node name: that name
(the ZAP User-Id) is the peer's identity, never the routing id it claims.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

if TYPE_CHECKING:
    from flotilla.nodes.config.topology import Topology

ZAP_DOMAIN = "flotilla"

GENERATED_KEYS = "keys"
"""The folder of ``<data_dir>`` where keys are generated when the topology names none."""
LOCAL_KEY = "local"
"""The name of the generated key pair of the local user (``local.key``, ``local.key_secret``):
the default client and operator key of whoever can read the data directory. No node may
have this name while keys are generated."""
_LOCK_FILE = ".lock"


class KeyFileError(Exception):
    """A key file or a private directory is missing, unreadable, exposed or not ours."""


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
        out.write(f'metadata\ncurve\n    public-key = "{public.decode()}"\n')
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(banner.format(kind="SECRET", name=name))
        out.write(f'metadata\ncurve\n    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n')
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


def private_directory(path: Path) -> Path:
    """Create `path` (and missing parents) owner-only (0700) before anything is put in it;
    refuse one that another user owns or that others can enter (KeyFileError)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise KeyFileError(f"{path} is not a directory")
    if info.st_uid != os.geteuid():
        raise KeyFileError(
            f"{path} belongs to uid {info.st_uid}, not to this user: another user may have "
            "planted it; remove it or choose another data_dir"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)  # ours: close it before anything is written into it
    return path


def make_data_dir(path: Path) -> Path:
    """Create the topology's data directory 0700 if it does not exist (an existing one keeps
    its mode: what is inside is owner-only on its own)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def ensure_generated_keys(directory: Path, nodes: list[str]) -> Path:
    """Make sure `directory` (0700, ours) holds a key pair for every node in `nodes` and for
    `LOCAL_KEY`; existing pairs are kept. Runs under an exclusive lock on the directory, so
    that nodes started at the same time agree on one set. Returns `directory`."""
    if LOCAL_KEY in nodes:
        raise KeyFileError(
            f"a node is called {LOCAL_KEY!r}, the name of the local user's generated key: "
            "rename the node or set security.keys"
        )
    make_data_dir(directory.parent)
    private_directory(directory)
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for name in [*nodes, LOCAL_KEY]:
            public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
            if secret.exists():
                if not public.exists():
                    raise KeyFileError(f"{secret} has no {public.name}: restore it or remove both to make new keys")
                continue
            if public.exists():
                raise KeyFileError(f"{public} has no {secret.name}: restore it or remove both to make new keys")
            generate_keys(directory, name)
    finally:
        os.close(fd)  # releases the lock
    return directory


def generated_keys_dir(topology: Topology) -> Path:
    """Where keys are generated for a topology without `security.keys`."""
    return topology.data_dir / GENERATED_KEYS


def keys_dir(topology: Topology) -> Path | None:
    """The topology's key directory: `security.keys`, else the generated one (made now if
    need be); None only for a topology that opted into plaintext."""
    if topology.security.keys is not None:
        return topology.security.keys
    if topology.security.plaintext:
        return None
    return ensure_generated_keys(generated_keys_dir(topology), list(topology.nodes))


def local_user_keys(topology: Topology) -> tuple[bytes, bytes] | None:
    """The (public, secret) z85 pair of the local user (`LOCAL_KEY`) if this user can read
    it: from `security.keys`, else from the generated keys (made now if need be; None for a
    plaintext topology or where the data directory is not ours)."""
    try:
        directory = keys_dir(topology)
        if directory is None or not (directory / f"{LOCAL_KEY}.key_secret").exists():
            return None
        return load_secret(directory, LOCAL_KEY)
    except KeyFileError:
        return None


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

    @classmethod
    def for_node(cls, topology: Topology, node: str) -> CurveKeys | None:
        """Node `node`'s keys and its peers' (generated on first start when the topology
        names no key directory); None for a plaintext topology. Raises KeyFileError."""
        directory = keys_dir(topology)
        return None if directory is None else cls.load(directory, node, list(topology.nodes))


class ClusterAuthenticator(ThreadAuthenticator):
    """ZAP handler: accepts only the cluster's keys; the User-Id is the node's name."""

    def __init__(self, context: zmq.Context, keys: CurveKeys, on_reject: Callable[[str, str], None]) -> None:
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
