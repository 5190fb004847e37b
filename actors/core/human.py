"""Durations and wall-clock times as people read them (shell tables, alert texts).

Durations: ``850 µs``, ``42 ms``, ``4.2s``, ``42s``, ``3m 12s``, ``2h 05m``, ``3d 04h`` — two
units at most, the smaller one zero-padded. Times: UTC, ``2026-12-02 05:31:07 UTC`` (with
milliseconds when asked), as the nodes' own log lines are in UTC.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

_MINUTE, _HOUR, _DAY = 60, 3600, 86400


def human_duration(seconds: float) -> str:
    """`seconds` in one or two units; a negative duration is written with a minus sign."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return f"-{human_duration(-seconds)}"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < _MINUTE:
        return f"{whole}s"
    if whole < _HOUR:
        return f"{whole // _MINUTE}m {whole % _MINUTE:02d}s"
    if whole < _DAY:
        return f"{whole // _HOUR}h {whole % _HOUR // _MINUTE:02d}m"
    return f"{whole // _DAY}d {whole % _DAY // _HOUR:02d}h"


def human_time(epoch: float, *, precise: bool = False) -> str:
    """The wall-clock time `epoch` (seconds since 1970) in UTC, to the second or (`precise`)
    to the millisecond."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if precise:
        text += f".{moment.microsecond // 1000:03d}"
    return f"{text} UTC"
