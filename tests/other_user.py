"""Another local user for security tests: a throwaway account made with `useradd` for the
test session (removed afterwards), running Python scripts with `runuser`, and a directory
every user can traverse to hold topologies and data directories (pytest's own temporary
directories are closed to other users, which would make such tests pass for nothing).

The interpreter the other user runs is a system Python of the same version as the tests'
(the tests' own may live under a home directory that user cannot enter), given the test
environment's site-packages and the repository on PYTHONPATH, both readable by everyone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import ROOT


@dataclass(frozen=True)
class OtherUser:
    """A local user that is not the one running the nodes."""

    name: str
    python: str

    def command(self, script: Path, *args: str) -> list[str]:
        path = os.pathsep.join([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(ROOT)])
        return [
            "runuser",
            "-u",
            self.name,
            "--",
            "env",
            f"PYTHONPATH={path}",
            "PYTHONDONTWRITEBYTECODE=1",
            self.python,
            str(script),
            *args,
        ]

    def run(self, script: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `script` as this user to completion; its output captured."""
        return subprocess.run(
            self.command(script, *args), capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )

    def popen(self, script: Path, *args: str) -> subprocess.Popen[str]:
        """Start `script` as this user; the caller stops it."""
        return subprocess.Popen(
            self.command(script, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
        )


def _system_python() -> str | None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for directory in ("/usr/bin", "/usr/local/bin"):
        candidate = Path(directory) / version
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def other_user() -> Iterator[OtherUser]:
    """A throwaway local user (skips where accounts cannot be made: not root, no useradd)."""
    if os.geteuid() != 0:
        pytest.skip("making a throwaway user needs root (useradd, runuser)")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("useradd and runuser are needed to act as another user")
    python = _system_python()
    if python is None:
        pytest.skip(f"no system python{sys.version_info.major}.{sys.version_info.minor} that another user can run")
    name = f"flt{secrets.token_hex(4)}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    try:
        user = OtherUser(name, python)
        probe = subprocess.run(
            user.command(Path("-c"), "import zmq, msgspec"), capture_output=True, text=True, check=False, timeout=60
        )
        if probe.returncode != 0:
            pytest.skip(f"the other user cannot import pyzmq with {python}: {probe.stderr.strip()[-300:]}")
        yield user
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can traverse (0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="flotilla-shared-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103  the other user must be able to enter it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
