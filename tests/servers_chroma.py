"""A real Chroma server for the tests: ``chroma run`` from this venv, or ``KNOWREC_TEST_CHROMA_URL``.

A server the tests need but cannot get is a failure, never a skip: CI must not go green without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def heartbeat(url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET {url}/api/v2/heartbeat`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=timeout) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def chroma_executable() -> Path:
    """The ``chroma`` script installed next to this interpreter (the venv's bin)."""
    return Path(sys.executable).parent / "chroma"


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"(no log: {exc})"


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running Chroma server (``http://127.0.0.1:PORT``), shared by the session.

    ``KNOWREC_TEST_CHROMA_URL`` points at an existing server; otherwise one is started with ``chroma run`` on a free
    port and a temporary folder, and stopped at the end of the session. Tests use their own collection names.
    """
    given = os.environ.get("KNOWREC_TEST_CHROMA_URL", "").strip().rstrip("/")
    if given:
        if not heartbeat(given, timeout=5.0):
            pytest.fail(f"KNOWREC_TEST_CHROMA_URL={given} does not answer GET /api/v2/heartbeat", pytrace=False)
        yield given
        return

    exe = chroma_executable()
    if not exe.exists():
        pytest.fail(f"no `chroma` executable at {exe}: install chromadb in this environment", pytrace=False)
    root = tmp_path_factory.mktemp("chroma-server")
    log_path = root / "chroma.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
    cmd = [str(exe), "run", "--path", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not heartbeat(url, timeout=1.0):
            if proc.poll() is not None:
                pytest.fail(
                    f"`chroma run` exited with code {proc.returncode} before answering on {url}; "
                    f"log tail:\n{_tail(log_path)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"`chroma run` did not answer GET {url}/api/v2/heartbeat within {STARTUP_TIMEOUT_S:.0f} s; "
                    f"log tail:\n{_tail(log_path)}",
                    pytrace=False,
                )
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
