"""What the tests and the benchmarks share: free loopback ports, waiting on a deadline,
percentiles, the demo site and proxy as processes, and the resilience fleet on one node.

A script imports it as `harness` (its own directory is first on the path when it runs); the
tests, which run from the repository's root, as `scripts.harness`. Its modules import only
the installed `flotilla` package, the standard library and each other.
"""

from .fleet import PATIENT, RULES, start_fleet
from .nodes import node_command
from .percentiles import percentile
from .ports import free_ports
from .postgres import PostgresMissing, PostgresServer
from .sites import DemoSiteProcess, ProxyProcess
from .waiting import wait_until

__all__ = [
    "PATIENT",
    "RULES",
    "DemoSiteProcess",
    "PostgresMissing",
    "PostgresServer",
    "ProxyProcess",
    "free_ports",
    "node_command",
    "percentile",
    "start_fleet",
    "wait_until",
]
