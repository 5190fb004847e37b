"""One job's story as text for people: what `flotilla job` prints.

A header (key, URL, rule set, state, attempts, the reason of its state), then every event
oldest first with its wall-clock time, the seconds since the submission, the attempt it
belongs to and its detail (for an attempt's end, how long after its lease; the outcome, HTTP
status, evidence; why it waited; the content hash of the page it captured), then the stored
result (with its revision once `flotilla reextract` changed it).
"""

from __future__ import annotations

import json
import time

from flotilla.nodes.intake.protocol import JobStory

ATTEMPT_ENDS = ("fetched", "captured", "stored", "failed", "lost", "cancelled")
"""Events that end (or mark the progress of) an attempt: shown with the time since its lease."""


def clock_time(at: float) -> str:
    """`at` (wall clock) as local date and time to the millisecond."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def story_lines(story: JobStory) -> list[str]:
    """The story as lines of text."""
    job = story.job
    lines = [
        f"job {job.key}",
        f"  url      {job.url}",
        f"  rules    {job.rules}",
        f"  state    {job.state} after {job.attempts} attempt{'s' if job.attempts != 1 else ''}",
    ]
    if job.reason:
        lines.append(f"  reason   {job.reason}")
    lines.append("events:")
    first = story.events[0].at if story.events else 0.0
    leased: dict[int, float] = {}
    for index, event in enumerate(story.events):
        attempt = f"#{event.attempt}" if event.attempt is not None else ""
        elapsed = f"+{event.at - first:.3f}s"
        took = ""
        if event.attempt is not None and event.event == "leased":
            leased[event.attempt] = event.at
        elif event.attempt is not None and event.event in ATTEMPT_ENDS and event.attempt in leased:
            took = f"after {event.at - leased[event.attempt]:.3f} s"
        detail = "; ".join(part for part in (took, event.detail) if part)
        lines.append(
            f"  {clock_time(event.at)}  {elapsed:>10}  {event.event:<10} {attempt:>4}"
            + (f"  {detail}" if detail else "")
        )
        if index == 0 and story.omitted:
            lines.append(f"  ... {story.omitted} events left out (a story shows its first and its latest ones)")
    if story.result is not None:
        result = story.result
        lines.append(
            f"result: stored {clock_time(result.stored_at)} after {result.attempts} "
            f"attempt{'s' if result.attempts != 1 else ''}, content hash {result.content_hash[:16]}"
            + (
                f", revision {result.revision} (re-extracted {clock_time(result.extracted_at)})"
                if result.revision
                else ""
            )
        )
        lines.append(f"  {json.dumps(result.fields, sort_keys=True, ensure_ascii=False)}")
    return lines
