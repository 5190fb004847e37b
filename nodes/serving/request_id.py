"""The id of a request that was refused, read without a second generic decode.

A frame that fails its typed decoding is answered with an error that repeats its `id`, so
the client can match it. The id is read by one more *typed* decoding against a struct that
has only `id`: msgspec skips every other field without building it, a frame that is not a
map fails at its first byte, and an id that is not a 64-bit integer (`1e30`, a string) reads
as 0. Nothing in the frame is ever turned into generic Python objects, so a refused frame
costs no more memory than its own bytes.
"""

from __future__ import annotations

import msgspec


class _Identified(msgspec.Struct):
    id: int = 0


_decoder = msgspec.msgpack.Decoder(_Identified)


def request_id(frame: bytes | memoryview) -> int:
    """The request's `id` if the frame is a map with an integer `id`, else 0."""
    try:
        return _decoder.decode(frame).id
    except Exception:  # noqa: BLE001 - anything undecodable has no id
        return 0
