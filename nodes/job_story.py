"""One job's story as text for people: what `flotilla job` prints.

A header (key, URL, rule set, state, attempts, the reason of its state), then every event
oldest first with its wall-clock time, the seconds since the submission, the attempt it
belongs to and its detail (outcome, HTTP status, timing, evidence, why it waited), then the
stored result.
"""

from __future__ import annotations

import json
import time

from nodes.intake_protocol import JobStory


def clock_time(at: float) -> str:
    """`at` (wall clock) as local date and time to the millisecond."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def story_lines(story: JobStory) -> list[str]:
    """The story as lines of text."""
    job = story.job
    lines = [f"job {job.key}", f"  url      {job.url}", f"  rules    {job.rules}",
             f"  state    {job.state} after {job.attempts} attempt{'s' if job.attempts != 1 else ''}"]
    if job.reason:
        lines.append(f"  reason   {job.reason}")
    lines.append("events:")
    first = story.events[0].at if story.events else 0.0
    for index, event in enumerate(story.events):
        attempt = f"#{event.attempt}" if event.attempt is not None else ""
        elapsed = f"+{event.at - first:.3f}s"
        lines.append(f"  {clock_time(event.at)}  {elapsed:>10}  {event.event:<10} {attempt:>4}"
                     + (f"  {event.detail}" if event.detail else ""))
        if index == 0 and story.omitted:
            lines.append(f"  ... {story.omitted} events left out (a story shows its first and its latest ones)")
    if story.result is not None:
        result = story.result
        lines.append(f"result: stored {clock_time(result.stored_at)} after {result.attempts} "
                     f"attempt{'s' if result.attempts != 1 else ''}, content hash {result.content_hash[:16]}")
        lines.append(f"  {json.dumps(result.fields, sort_keys=True, ensure_ascii=False)}")
    return lines
