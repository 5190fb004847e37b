"""The journal alone, on each engine: submit N jobs (requests of 100, durable, as the intake
does), then lease and store them (batches of 256, as the router does: one report per job), and
report jobs per second for each phase. PostgreSQL runs on a throwaway local server
(harness/postgres.py; fsync off there, so the figures show the engines' overheads, not a disk).

    .venv/bin/python scripts/bench_journal.py [--jobs 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from flotilla.actors.pipeline.journal import Journal, NewJob, natural_key, open_journal

from harness.postgres import PostgresMissing, PostgresServer

REQUEST = 100
BATCH = 256


def run(intake: Journal, router: Journal, jobs: int) -> dict[str, float]:
    urls = [f"http://127.0.0.1:8000/product/{n}" for n in range(jobs)]
    started = time.perf_counter()
    for start in range(0, jobs, REQUEST):
        intake.submit([NewJob(natural_key(u, "p"), u, "p") for u in urls[start : start + REQUEST]])
    submitted = time.perf_counter()
    stored = 0
    while stored < jobs:
        leases = router.lease(BATCH, 60)
        with router.batch():
            for lease in leases:
                router.store(lease.key, lease.token, {"title": lease.url}, "h")
        stored += len(leases)
    done = time.perf_counter()
    assert router.result_count() == jobs
    return {"submit": jobs / (submitted - started), "lease+store": jobs / (done - submitted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    jobs = parser.parse_args().jobs
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        intake, router = open_journal(path), open_journal(path, durable=False)
        print("sqlite    ", {k: round(v) for k, v in run(intake, router, jobs).items()}, "jobs/s")
        intake.close()
        router.close()
    try:
        server = PostgresServer()
    except PostgresMissing as exc:
        print(f"postgresql skipped: {exc}")
        return
    try:
        url = server.url(server.create_database())
        intake, router = open_journal(url), open_journal(url, durable=False)
        print("postgresql", {k: round(v) for k, v in run(intake, router, jobs).items()}, "jobs/s")
        intake.close()
        router.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
