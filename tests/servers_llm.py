"""A real OpenAI-compatible LLM server for the tests: ``python -m llama_cpp.server`` with the bundled SmolLM2 GGUF
(the CPU stand-in for vLLM), or ``KNOWREC_TEST_LLM_URL`` (an API root ending in ``/v1``).

A server the tests need but cannot get is a failure, never a skip: CI must not go green without it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 120.0
MODEL_ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def models_ok(base_url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET {base_url}/models`` answers 200 with a model list."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as resp:
            return int(resp.status) == 200 and isinstance(json.loads(resp.read()).get("data"), list)
    except (OSError, ValueError):
        return False


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"(no log: {exc})"


@dataclass
class LLMServerProcess:
    """A ``llama_cpp.server`` child process and its API root."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    startup_s: float = 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: the abrupt death the fault tests need."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_llm_server(workdir: Path, *, n_ctx: int = 4096, alias: str = MODEL_ALIAS) -> LLMServerProcess:
    """Start ``python -m llama_cpp.server`` on a free port and wait until ``GET /v1/models`` answers.

    Calls ``pytest.fail`` (never skip) when it cannot start.
    """
    from knowrec.agent.llm.llama_cpp import bundled_llm_path

    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"llama_cpp.server cannot be imported ({exc}): pip install 'knowrec[dev]' (llama-cpp-python[server])",
            pytrace=False,
        )
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"llama-server-{time.monotonic_ns()}.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(bundled_llm_path()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--model_alias",
        alias,
    ]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LLMServerProcess(proc, base_url, log_path)
    deadline = started + STARTUP_TIMEOUT_S
    while not models_ok(base_url, timeout=1.0):
        if proc.poll() is not None:
            pytest.fail(
                f"llama_cpp.server exited with code {proc.returncode} before answering on {base_url}; "
                f"log tail:\n{_tail(log_path)}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(
                f"llama_cpp.server did not answer GET {base_url}/models within {STARTUP_TIMEOUT_S:.0f} s; "
                f"log tail:\n{_tail(log_path)}",
                pytrace=False,
            )
        time.sleep(0.2)
    server.startup_s = time.monotonic() - started
    return server


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API root (``http://127.0.0.1:PORT/v1``) of a running OpenAI-compatible server, shared by the session.

    ``KNOWREC_TEST_LLM_URL`` points at an existing server; otherwise ``python -m llama_cpp.server`` serves the bundled
    SmolLM2 GGUF as model ``smollm2`` on a free port and is stopped at the end of the session.
    """
    given = os.environ.get("KNOWREC_TEST_LLM_URL", "").strip().rstrip("/")
    if given:
        if not models_ok(given, timeout=5.0):
            pytest.fail(f"KNOWREC_TEST_LLM_URL={given} does not answer GET /models", pytrace=False)
        yield given
        return
    server = start_llm_server(tmp_path_factory.mktemp("llm-server"))
    print(f"\nllama_cpp.server ready at {server.base_url} in {server.startup_s:.1f} s")
    try:
        yield server.base_url
    finally:
        server.stop()
