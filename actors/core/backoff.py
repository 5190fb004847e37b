"""Exponential backoff: a delay that doubles up to a cap, stretched by random jitter.

One formula serves every "wait longer each time" in Flotilla — a supervisor's restart
backoff, the router's retry of a transient failure and its pause when jobs come back, a
breaker's open time, the launcher's restart of a node process:

    delay = min(cap, base * 2**doublings) * (1 + U(0, 1) * jitter)

`U(0, 1)` is one `rng.random()` draw, taken whenever an `rng` is given (even with
`jitter` 0, so a seeded stream advances the same way whatever the jitter); with no `rng`
the delay has no jitter. The delay is therefore in ``[capped, capped * (1 + jitter)]``.
"""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 1023
"""Past this, ``2.0**n`` overflows a float; `base * 2**1023` already exceeds any cap."""


def backoff_delay(
    base: float, cap: float, doublings: int, *, jitter: float = 0.0, rng: random.Random | None = None
) -> float:
    """Seconds to wait: `base` doubled `doublings` times (negative counts as 0), at most
    `cap`, times ``1 + rng.random() * jitter`` when `rng` is given."""
    capped = min(cap, base * 2.0 ** min(max(0, doublings), _MAX_DOUBLINGS))
    if rng is None:
        return capped
    return capped * (1 + rng.random() * jitter)
