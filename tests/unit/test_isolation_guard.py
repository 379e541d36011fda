"""The isolation guard of tests/conftest.py: what a test not marked ``integration`` may not do, it cannot do."""

from __future__ import annotations

import ctypes.util
import socket
import socketserver
import sqlite3
import subprocess
import threading
from pathlib import Path

import chromadb
import pytest

from knowrec.agent.llm.llama_cpp import LlamaCppClient
from knowrec.agent.llm.torch_engine import TorchClient
from knowrec.errors import ConfigError
from knowrec.kg_store.chroma_index import ChromaItemIndex
from knowrec.kg_store.embedder import SentenceTransformerEmbedder
from knowrec.kg_store.sqlite import SQLiteGraphStore
from tests.conftest import IsolationError, IsolationWarning, _Guard, isolation_guard
from tests.fakes import HashEmbedder


def test_a_database_file_is_refused_and_an_in_memory_one_is_not(tmp_path: Path):
    with isolation_guard():
        with pytest.raises(IsolationError, match="opens a database on disk"):
            sqlite3.connect(tmp_path / "x.sqlite")
        sqlite3.connect(":memory:").close()
        sqlite3.connect("file:shared?mode=memory&cache=shared", uri=True).close()
        # the store's own error handling (StoreUnavailable) does not swallow it
        with pytest.raises(IsolationError):
            SQLiteGraphStore(tmp_path / "graph.sqlite").stats()
        assert SQLiteGraphStore(":memory:").stats()["items"] == 0
    assert not (tmp_path / "x.sqlite").exists() and not (tmp_path / "graph.sqlite").exists()


def test_chroma_on_disk_or_on_a_server_is_refused(tmp_path: Path):
    with isolation_guard():
        with pytest.raises(IsolationError, match="PersistentClient"):
            chromadb.PersistentClient(path=str(tmp_path / "chroma"))
        with pytest.raises(IsolationError, match="HttpClient"):
            chromadb.HttpClient(host="127.0.0.1", port=8000)
        with pytest.raises(IsolationError):  # not turned into StoreUnavailable by the index
            ChromaItemIndex(HashEmbedder(), path=tmp_path / "chroma").count()


def test_sockets_reach_only_this_process_s_own_servers():
    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(self.request.recv(16))

    with isolation_guard():
        with socketserver.TCPServer(("127.0.0.1", 0), Echo) as server:
            thread = threading.Thread(target=server.handle_request, daemon=True)
            thread.start()
            with socket.create_connection(server.server_address, timeout=5) as conn:
                conn.sendall(b"ping")
                assert conn.recv(16) == b"ping"
            thread.join(5)
        with pytest.raises(IsolationError, match="socket connect"):
            socket.create_connection(("127.0.0.1", 1), timeout=1)  # nobody of ours listens there
        with pytest.raises(IsolationError, match="socket connect"):
            socket.create_connection(("192.0.2.1", 7687), timeout=1)  # a server elsewhere (TEST-NET-1)


def test_subprocesses_are_refused_but_library_probes_are_not():
    with isolation_guard():
        with pytest.raises(IsolationError, match="subprocess"):
            subprocess.run(["docker", "compose", "version"], check=False)
        with pytest.raises(IsolationError, match="subprocess"):
            subprocess.run("echo hi", shell=True, check=False)
        ctypes.util.find_library("dl")  # runs `ldconfig -p`: allowed


def test_loading_a_model_is_refused_and_a_missing_model_is_still_a_config_error(tmp_path: Path):
    model_dir = tmp_path / "embedder"
    model_dir.mkdir()
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with isolation_guard():
        with pytest.raises(IsolationError, match="embedding model"):
            SentenceTransformerEmbedder(model_dir).embed(["x"])
        with pytest.raises(IsolationError, match=r"llama\.cpp"):
            LlamaCppClient(gguf).verify()
        with pytest.raises(IsolationError, match="torch"):
            TorchClient(gguf).verify()
        with pytest.raises(ConfigError, match="not found"):
            SentenceTransformerEmbedder(tmp_path / "missing").embed(["x"])
        with pytest.raises(ConfigError, match="not found"):
            LlamaCppClient(tmp_path / "missing.gguf").verify()


def test_warn_mode_warns_instead_of_raising():
    guard = _Guard(strict=False)
    with pytest.warns(IsolationWarning, match="sqlite3.connect"):
        guard.refuse("sqlite3.connect('x.sqlite') opens a database on disk")
    assert guard.violations == []
    with pytest.raises(IsolationError):
        _Guard(strict=True).refuse("anything")


def test_the_guard_is_lifted_afterwards(tmp_path: Path):
    before = (sqlite3.connect, socket.socket.connect, subprocess.Popen._execute_child)  # type: ignore[attr-defined]
    with isolation_guard():
        assert sqlite3.connect is not before[0]
    assert (sqlite3.connect, socket.socket.connect, subprocess.Popen._execute_child) == before  # type: ignore[attr-defined]
