"""Following a batch until every job of it is finished: what `flotilla submit --wait` and
`flotilla wait BATCH` show.

While waiting, a live progress bar on stderr (rich) when stderr is a terminal, else a plain
line whenever the number of finished jobs changed (at most one every `PLAIN_EVERY` seconds).
At the end, closing figures in the manner of Scrapy's stats: stored, dead and parked by
reason, duration, pages/s and retries.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from flotilla.nodes.intake.protocol import BatchInfo

POLL_EVERY = 0.5
"""Seconds between two questions to the intake about the batch."""
PLAIN_EVERY = 5.0
"""Least seconds between two plain progress lines (when stderr is not a terminal)."""
FINISHED = ("stored", "dead", "parked")
WAITING = ("pending", "fetching", "extracting", "retrying")


def finished(info: BatchInfo) -> int:
    return sum(info.states.get(state, 0) for state in FINISHED)


def progress_text(info: BatchInfo) -> str:
    """The batch's counts in one line: ``stored 120, dead 2, parked 1, waiting 377``."""
    waiting = sum(info.states.get(state, 0) for state in WAITING)
    return ", ".join(f"{state} {info.states.get(state, 0)}" for state in FINISHED) + f", waiting {waiting}"


def follow(client: Any, batch: str, timeout: float | None, stream: TextIO) -> tuple[BatchInfo, bool]:
    """Ask about `batch` until it is done or `timeout` seconds passed, showing progress on
    `stream`; the last answer and whether the batch is done."""
    deadline = None if timeout is None else time.monotonic() + timeout
    info: BatchInfo = client.batch(batch)
    if stream.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("batch {task.fields[batch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(file=stream), transient=False) as bar:
            task = bar.add_task(progress_text(info), total=info.total, completed=finished(info), batch=batch[:12])
            while not info.done and (deadline is None or time.monotonic() < deadline):
                time.sleep(POLL_EVERY)  # the pace of a progress display, not a synchronisation
                info = client.batch(batch)
                bar.update(task, total=info.total, completed=finished(info), description=progress_text(info))
        return info, info.done
    last_line, shown = -1, 0.0
    while True:
        now = time.monotonic()
        if finished(info) != last_line and (now - shown >= PLAIN_EVERY or info.done or last_line < 0):
            print(
                f"batch {batch}: {finished(info)}/{info.total} finished ({progress_text(info)})",
                file=stream,
                flush=True,
            )
            last_line, shown = finished(info), now
        if info.done or (deadline is not None and now >= deadline):
            return info, info.done
        time.sleep(POLL_EVERY)  # the pace of a progress display, not a synchronisation
        info = client.batch(batch)


def summary_lines(info: BatchInfo, now: float | None = None) -> list[str]:
    """Closing figures: jobs by final state with the reasons of the dead and parked ones,
    duration (first submission to the last change, or to `now` while not done), pages/s
    (stored per second of that duration), attempts and retries (attempts beyond one per
    finished job)."""
    end = info.last_change if info.done else (now if now is not None else time.time())
    duration = max(0.0, end - info.started_at)
    stored = info.states.get("stored", 0)
    done = finished(info)
    head = "all finished" if info.done else f"{done} finished, {info.total - done} still waiting"
    lines = [f"batch {info.batch}: {info.total} job{'s' if info.total != 1 else ''}, {head} in {duration:.1f} s"]
    width = min(70, max([len(reason.partition(" ")[2]) for reason in info.reasons] + [24]))
    for state in (*FINISHED, *WAITING):
        count = info.states.get(state, 0)
        if state in WAITING and not count:
            continue
        lines.append(f"  {state:<{width + 2}} {count:>7}")
        for reason, n in sorted(info.reasons.items(), key=lambda item: (-item[1], item[0])):
            kind, _, text = reason.partition(" ")
            if kind == state:
                lines.append(f"    {text:<{width}} {n:>7}")
    rate = stored / duration if duration > 0 else 0.0
    lines.append(f"  {'pages/s':<{width + 2}} {rate:>7.2f}")
    lines.append(f"  {'attempts':<{width + 2}} {info.attempts:>7}")
    lines.append(f"  {'retries':<{width + 2}} {max(0, info.attempts - done):>7}")
    return lines
