"""The repository's scripts (run as files: ``python scripts/bench.py``) and `scripts.harness`,
the harness that the tests and the benchmarks share. Not part of the installed package."""
