"""Hostile frames for the fuzz tests: random bytes, mutations of valid requests, and bombs.

Every generator takes a `random.Random` (seeded by the test, which prints the seed) and
yields `(kind, parts)`: the ZeroMQ message to send (a list of frames, usually one).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator

import msgspec

from flotilla.nodes.cluster import codec as wire
from flotilla.nodes.intake import protocol as intake
from flotilla.nodes.shell.protocol import ShellRequest

Frames = list[bytes]
_encode = msgspec.msgpack.encode


def random_bytes(rng: random.Random, longest: int = 512) -> bytes:
    return rng.randbytes(rng.randint(0, longest))


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """Flip, insert, delete, truncate or repeat bytes of `frame`."""
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        elif choice == 2 and data:
            del data[position : position + rng.randint(1, 8)]
        elif choice == 3:
            del data[position:]
        else:
            data[position:position] = data[position : position + rng.randint(1, 16)] * rng.randint(2, 50)
    return bytes(data)


def bombs(limit: int) -> list[tuple[str, bytes]]:
    """Frames of at most `limit` bytes that cost a careless decoder time or memory."""
    body = limit - 64
    return [
        ("huge float id", b"\x81\xa2id\xcb" + struct.pack(">d", 1e30)),  # the 13-byte frame
        ("id beyond 64 bits", _encode({"_type": "Counts", "id": 2**64 - 1})[:-1] + b"\xff"),
        ("nested arrays", b"\x91" * body),
        ("nested maps", b"\x81\xa1k" * (body // 3)),
        ("array of empty arrays", b"\xdd" + struct.pack(">I", body) + b"\x90" * body),
        (
            "map of empty arrays",
            b"\x83\xa5_type\xa6Counts\xa2id\x07\xa1x\xdd" + struct.pack(">I", body - 32) + b"\x90" * (body - 32),
        ),
        ("array claiming 4G items", b"\xdd\xff\xff\xff\xff"),
        ("string claiming 4 GB", b"\xdb\xff\xff\xff\xff" + b"x" * 16),
        ("extension type", b"\xc7\x05\x01hello"),
        ("invalid utf-8", b"\x82\xa5_type\xa6Counts\xa2id\xa2\xff\xfe"),
    ]


def _intake_requests(rng: random.Random) -> bytes:
    jobs = [
        intake.JobSpec(f"http://127.0.0.1/{rng.random()}", rng.choice(["product", "nope"]))
        for _ in range(rng.randint(0, 3))
    ]
    request = rng.choice(
        [
            intake.Submit(rng.randint(0, 2**63), jobs, session=rng.choice(["", "s"])),
            intake.Status(rng.randint(0, 99), [f"k{rng.random()}"]),
            intake.Jobs(rng.randint(0, 99), state=rng.choice([None, "dead", "bogus"]), limit=rng.randint(-5, 5000)),
            intake.Results(rng.randint(0, 99), limit=rng.randint(-5, 5000)),
            intake.Counts(rng.randint(0, 99)),
        ]
    )
    return _encode(request)


def _shell_requests(rng: random.Random) -> bytes:
    command = rng.choice(["help", "nodes", "logs", "nosuch", "jobs"])
    args = {"logs": [rng.choice(["3", "9" * 25, "x", "٣"])], "jobs": [rng.choice(["", "lost", "dead"])]}.get(
        command, []
    )
    return _encode(ShellRequest(rng.randint(0, 2**63), command, [a for a in args if a]))


def _envelopes(rng: random.Random) -> bytes:
    body = msgspec.Raw(_encode(rng.choice([None, 1, "x", [1, 2], {"a": 1}])))
    envelope = rng.choice(
        [
            wire.Tell("alpha/root/nowhere", body, False),
            wire.Ask("alpha/root/nowhere", body, False, rng.randint(1, 10**9), 1.0),
            wire.Heartbeat("tester", "boot", "another cluster", 1),
            wire.Monitor("alpha/root/nowhere", rng.randint(1, 10**9)),
            wire.Demonitor(rng.randint(1, 10**9)),
            wire.Reply(rng.randint(1, 10**9), body, False),
        ]
    )
    return _encode(envelope)


VALID: dict[str, Callable[[random.Random], bytes]] = {
    "intake": _intake_requests,
    "shell": _shell_requests,
    "transport": _envelopes,
}


def frames(surface: str, rng: random.Random, count: int, limit: int) -> Iterator[tuple[str, Frames]]:
    """`count` hostile messages for `surface` (intake, shell or transport), none over `limit`
    bytes per frame except the few "oversized" ones (which cost a peer its connection)."""
    valid = VALID[surface]
    bomb_lists = [bombs(size) for size in (limit, limit // 16, 4096)]  # the largest, and cheaper ones
    for index in range(count):
        roll = rng.random()
        if roll < 0.35:
            yield "random", [random_bytes(rng)]
        elif roll < 0.90:
            yield "mutated", [mutate(rng, valid(rng))]
        elif roll < 0.97:
            bomb_list = bomb_lists[index % len(bomb_lists)]
            kind, frame = bomb_list[(index // len(bomb_lists)) % len(bomb_list)]
            yield kind, [frame]
        elif roll < 0.99 or surface == "transport":
            yield "multipart", [valid(rng), random_bytes(rng, 64), valid(rng)]
        else:
            yield "oversized", [b"\x91" * (limit + 1)]
