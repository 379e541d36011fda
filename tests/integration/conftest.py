"""Shared, real components: the bundled demo slice ingested once per session through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMO_USERS = 8


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run ``python -m knowrec.cli ARGS`` and capture its output."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "knowrec.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``knowrec demo`` on a fresh data dir with the first users of the bundled data; returns (data dir, result)."""
    data_dir = tmp_path_factory.mktemp("demo")
    result = run_cli("demo", "--max-users", str(DEMO_USERS), "--users", "1", "--k", "3", "--data-dir", str(data_dir))
    return data_dir, result


@pytest.fixture(scope="session")
def demo_dir(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    data_dir, result = demo_run
    assert result.returncode == 0, result.stderr
    return data_dir
