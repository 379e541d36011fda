"""A real Neo4j 5.26 for the tests: ``scripts/neo4j/neo4j-dev`` (Maven Central jars, Java 17), or
``KNOWREC_TEST_NEO4J_URI``.

A server the tests need but cannot get is a failure, never a skip: CI must not go green without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NEO4J_DEV = Path(__file__).resolve().parents[1] / "scripts" / "neo4j" / "neo4j-dev"
FETCH_TIMEOUT_S = 900.0
STARTUP_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bolt_answers(uri: str, timeout: float = 5.0) -> str | None:
    """``None`` when a Bolt server at ``uri`` (no auth) answers a query, else why not."""
    import neo4j

    try:
        with neo4j.GraphDatabase.driver(uri, auth=None, connection_timeout=timeout) as driver:
            driver.verify_connectivity()
            driver.execute_query("RETURN 1")
    except Exception as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"(no log: {exc})"


def fetch_neo4j() -> None:
    """``neo4j-dev fetch`` (quick when the jars are already in the cache); ``pytest.fail`` if it fails."""
    try:
        done = subprocess.run(
            [str(NEO4J_DEV), "fetch"], capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"`{NEO4J_DEV} fetch` failed: {exc}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"`{NEO4J_DEV} fetch` exited {done.returncode}:\n{done.stderr[-3000:]}", pytrace=False)


class Neo4jProcess:
    """A Neo4j started with ``neo4j-dev run PORT DIR`` in the foreground; it exits when its stdin closes."""

    def __init__(self, port: int, data_dir: Path, log_path: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.uri = f"bolt://127.0.0.1:{port}"
        self._log_start = log_path.stat().st_size if log_path.exists() else 0
        env = {**os.environ, "KNOWREC_NEO4J_WATCH_STDIN": "1"}
        env.pop("KNOWREC_NEO4J_PASSWORD", None)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(NEO4J_DEV), "run", str(port), str(data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE,
                env=env,
            )

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Wait until Bolt answers; ``pytest.fail`` with the log tail if Neo4j exits or does not answer in time."""
        deadline = time.monotonic() + timeout
        why: str | None = "not started"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"Neo4j exited with code {self.proc.returncode} before answering on {self.uri}; "
                    f"log tail:\n{_tail(self.log_path)}",
                    pytrace=False,
                )
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                ready = b"neo4j ready" in log.read()
            if ready:
                why = bolt_answers(self.uri, timeout=2.0)
                if why is None:
                    return
            time.sleep(0.5)
        self.kill()
        pytest.fail(
            f"Neo4j did not answer on {self.uri} within {timeout:.0f}s ({why}); log tail:\n{_tail(self.log_path)}",
            pytrace=False,
        )

    def stop(self, timeout: float = 60.0) -> None:
        """Stop cleanly (stdin closed, then SIGTERM), killing it if it takes longer than ``timeout``."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=timeout / 2)
                except subprocess.TimeoutExpired:
                    self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, no checkpoint."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()


def start_neo4j(root: Path, port: int | None = None) -> Neo4jProcess:
    """Fetch (if needed) and start a Neo4j with its data in ``root/data``; returns once Bolt answers."""
    fetch_neo4j()
    server = Neo4jProcess(port or free_port(), root / "data", root / "neo4j.log")
    server.wait_ready()
    return server


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bolt URI of a running Neo4j 5.26 without authentication, shared by the session.

    ``KNOWREC_TEST_NEO4J_URI`` points at an existing server (its default database is wiped by the tests!);
    otherwise one is started with ``scripts/neo4j/neo4j-dev`` on a free port and a temporary folder, and stopped at
    the end of the session.
    """
    given = os.environ.get("KNOWREC_TEST_NEO4J_URI", "").strip()
    if given:
        why = bolt_answers(given, timeout=10.0)
        if why is not None:
            pytest.fail(f"KNOWREC_TEST_NEO4J_URI={given} does not answer: {why}", pytrace=False)
        yield given
        return
    server = start_neo4j(tmp_path_factory.mktemp("neo4j-server"))
    try:
        yield server.uri
    finally:
        server.stop()


def wipe(uri: str) -> None:
    """Delete every node and relationship of the default database (constraints and indexes stay)."""
    import neo4j

    with neo4j.GraphDatabase.driver(uri, auth=None) as driver:
        driver.execute_query("MATCH (n) DETACH DELETE n")
