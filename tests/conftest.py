"""Shared fixtures, and the isolation guard of the tests that are not marked ``integration``.

``python -m pytest -m "not integration"`` needs no server, no store on disk and no model: every test (and every
doctest) without the ``integration`` marker runs under :func:`isolation_guard`, which catches it reaching out:

- ``sqlite3.connect`` of anything but an in-memory database (``:memory:``, ``file:...?mode=memory``);
- ``chromadb.PersistentClient`` / ``HttpClient`` / ``AsyncHttpClient`` / ``CloudClient`` (an in-memory
  ``chromadb.EphemeralClient`` is allowed);
- a socket ``connect`` anywhere but a loopback port that this test process bound itself (a stdlib fake server in
  the test is fine; Neo4j, ``chroma run``, a llama.cpp/vLLM server or the Docker daemon are not);
- starting a subprocess (``docker compose``, ``chroma run``, ``python -m knowrec.cli``, ...) or ``os.system``
  (the library probes of ``ctypes.util.find_library``, ``ldconfig -p`` and the like, are let through);
- loading the bundled (or any real) LLM or embedding model: ``LlamaCppClient``, ``TorchClient``,
  ``SentenceTransformerEmbedder`` (their "file not found" errors still work).

``KNOWREC_TEST_ISOLATION`` says what a violation does:

- ``strict`` (the default): it raises :class:`IsolationError`, which derives from ``BaseException`` so that package
  code catching ``Exception`` (and turning it into a fallback or a ``StoreUnavailable``) cannot hide it; a violation
  swallowed anyway still fails the test;
- ``warn``: the call goes ahead and the test gets an :class:`IsolationWarning`, listed in the warnings summary;
- ``off``: nothing is patched.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import warnings
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from knowrec.kg_store.base import GraphBatch
from knowrec.types import Fact, Interaction, Item
from tests.servers_chroma import chroma_server  # noqa: F401  (session fixture: a real `chroma run`)
from tests.servers_llm import llm_server  # noqa: F401
from tests.servers_neo4j import neo4j_server  # noqa: F401  (session fixture: a real Neo4j 5.26)


def _tiny_kg() -> GraphBatch:
    """Six films, eight entities, twenty facts, three users, nine interactions.

    Entity degrees (items linked): p:d1 2, p:d2 2, p:a1 3, p:a2 2, p:a3 2, genre:Comedy 5, genre:Drama 2,
    p:w1 2 (``p:w1`` is the head of its facts: ``p:w1 —wrote→ m3``, ``p:w1 —wrote→ m6``).
    """
    titles = {"m1": "Alpha", "m2": "Beta", "m3": "Gamma", "m4": "Delta", "m5": "Epsilon", "m6": "Zeta"}
    labels = {
        "p:d1": "Dir One",
        "p:d2": "Dir Two",
        "p:a1": "Actor One",
        "p:a2": "Actor Two",
        "p:a3": "Actor Three",
        "genre:Comedy": "Comedy",
        "genre:Drama": "Drama",
        "p:w1": "Writer W",
    }
    links = {
        "m1": [("director", "p:d1"), ("actor", "p:a1"), ("actor", "p:a2"), ("genre", "genre:Comedy")],
        "m2": [("director", "p:d1"), ("actor", "p:a1"), ("genre", "genre:Comedy")],
        "m3": [("director", "p:d2"), ("actor", "p:a2"), ("genre", "genre:Drama")],
        "m4": [("actor", "p:a1"), ("actor", "p:a3"), ("genre", "genre:Comedy"), ("genre", "genre:Drama")],
        "m5": [("director", "p:d2"), ("actor", "p:a3"), ("genre", "genre:Comedy")],
        "m6": [("genre", "genre:Comedy")],
    }
    items = [Item(id=i, title=t, text=f"{t} is a film.", attributes={"year": "199" + i[1]}) for i, t in titles.items()]
    facts = [
        Fact(head=item, relation=rel, tail=ent, head_label=titles[item], tail_label=labels[ent])
        for item, pairs in links.items()
        for rel, ent in pairs
    ]
    facts += [
        Fact(head="p:w1", relation="wrote", tail=item, head_label=labels["p:w1"], tail_label=titles[item])
        for item in ("m3", "m6")
    ]
    interactions = [
        Interaction(user_id="u1", item_id="m1", rating=5.0, timestamp=100),
        Interaction(user_id="u1", item_id="m2", rating=4.0, timestamp=200),
        Interaction(user_id="u1", item_id="m4", rating=3.0, timestamp=200),
        Interaction(user_id="u1", item_id="m3"),
        Interaction(user_id="u2", item_id="m1", rating=4.0, timestamp=50),
        Interaction(user_id="u2", item_id="m5", rating=2.0, timestamp=60),
        Interaction(user_id="u3", item_id="m1", timestamp=10),
        Interaction(user_id="u3", item_id="m2", rating=5.0, timestamp=20),
        Interaction(user_id="u3", item_id="m6", rating=1.0, timestamp=30),
    ]
    return GraphBatch(items=items, facts=facts, interactions=interactions)


@pytest.fixture
def tiny_kg() -> GraphBatch:
    """A small hand-made knowledge graph (see :func:`_tiny_kg`); a fresh copy per test."""
    return _tiny_kg()


# -- doctests -----------------------------------------------------------------------------------------------------
# Doctest examples that load the bundled LLM or embedding model: they run in the full suite (CI) as integration and
# slow tests, never under ``-m "not integration"``.
MODEL_DOCTEST_MARKS = ("bundled_llm_path(", "bundled_embedder_path(")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from _pytest.doctest import DoctestItem

    for item in items:
        if isinstance(item, DoctestItem) and item.dtest is not None:
            source = "".join(example.source for example in item.dtest.examples)
            if any(mark in source for mark in MODEL_DOCTEST_MARKS):
                item.add_marker(pytest.mark.integration)
                item.add_marker(pytest.mark.slow)


# -- the isolation guard ------------------------------------------------------------------------------------------
class IsolationError(BaseException):
    """A test that is not marked ``integration`` reached for a server, a store on disk, a subprocess or a model."""


HINT = (
    "mark the test `pytest.mark.integration`, or use the in-memory fakes of knowrec.testing / tests.fakes "
    "(see docs/testing.md)"
)
_LOOPBACK = {"127.0.0.1", "::1", "localhost", "::ffff:127.0.0.1"}
# what ``ctypes.util.find_library`` and ``platform`` run to find a shared library (importing torch does): no server
LIBRARY_PROBES = {"ldconfig", "gcc", "cc", "ld", "objdump", "uname"}


class IsolationWarning(UserWarning):
    """What :class:`IsolationError` would have said, in ``KNOWREC_TEST_ISOLATION=warn`` mode."""


def isolation_mode() -> str:
    """``strict``, ``warn`` or ``off``, from ``KNOWREC_TEST_ISOLATION`` (``1`` means strict, ``0`` off; unset or empty:
    strict)."""
    mode = os.environ.get("KNOWREC_TEST_ISOLATION", "strict").strip().lower()
    return {"1": "strict", "0": "off", "": "strict"}.get(mode, mode)


# loopback ports bound in this process (a test's own fake server, perhaps module-scoped): kept for the session
_OWN_PORTS: set[int] = set()


class _Guard:
    def __init__(self, strict: bool) -> None:
        self.violations: list[str] = []
        self.own_ports = _OWN_PORTS
        self.strict = strict

    def refuse(self, what: str) -> None:
        """Raise :class:`IsolationError` (strict), or warn and let the caller go ahead."""
        message = f"{what}: a test not marked integration must not do this; {HINT}"
        if self.strict:
            self.violations.append(message)
            raise IsolationError(message)
        warnings.warn(IsolationWarning(message), stacklevel=3)


def _in_memory(database: Any, uri: bool) -> bool:
    name = os.fsdecode(database) if isinstance(database, (str, bytes, os.PathLike)) else str(database)
    return name == ":memory:" or (uri and name.startswith("file:") and "mode=memory" in name)


@contextmanager
def isolation_guard(strict: bool = True) -> Iterator[_Guard]:
    """Patch the ways out of the process (see the module docstring) for the duration of one test."""
    import chromadb

    from knowrec.agent.llm.llama_cpp import LlamaCppClient
    from knowrec.agent.llm.torch_engine import TorchClient
    from knowrec.kg_store.embedder import SentenceTransformerEmbedder

    guard = _Guard(strict)
    real_system = os.system
    real_connect = sqlite3.connect
    real_sock_connect = socket.socket.connect
    real_sock_connect_ex = socket.socket.connect_ex
    real_bind = socket.socket.bind
    real_embed_load = SentenceTransformerEmbedder._load
    real_llama_load = LlamaCppClient._load
    real_torch_read = TorchClient._read
    real_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if not _in_memory(database, bool(kwargs.get("uri"))):
            guard.refuse(f"sqlite3.connect({database!r}) opens a database on disk")
        return real_connect(database, *args, **kwargs)

    def chroma_client(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            guard.refuse(f"chromadb.{name}({', '.join(map(repr, args))}{', ' if args and kwargs else ''}...)")
            return real(*args, **kwargs)

        return refuse

    def allowed(sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        host, port = address[0], int(address[1])
        return host in _LOOPBACK and port in guard.own_ports

    def sock_connect(self: socket.socket, address: Any) -> None:
        if not allowed(self, address):
            guard.refuse(f"socket connect to {address!r} (a server outside the test)")
        return real_sock_connect(self, address)

    def sock_connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(self, address):
            guard.refuse(f"socket connect to {address!r} (a server outside the test)")
        return real_sock_connect_ex(self, address)

    def bind(self: socket.socket, address: Any) -> None:
        real_bind(self, address)
        if self.family in (socket.AF_INET, socket.AF_INET6):
            guard.own_ports.add(int(self.getsockname()[1]))

    def execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if os.path.basename(os.fsdecode(argv[0]).split()[0]) not in LIBRARY_PROBES:
            guard.refuse(f"subprocess {args!r}")
        return real_execute_child(self, args, *rest, **kwargs)

    def system(command: str) -> int:
        guard.refuse(f"os.system({command!r})")
        return real_system(command)

    def embed_load(self: SentenceTransformerEmbedder) -> Any:
        if self._model is None and self.model_path.is_dir():
            guard.refuse(f"loading the embedding model {self.model_path}")
        return real_embed_load(self)

    def llama_load(self: LlamaCppClient) -> Any:
        if self._llm is None and self.model_path.is_file():
            guard.refuse(f"loading the LLM {self.model_path} (llama.cpp)")
        return real_llama_load(self)

    def torch_read(self: TorchClient) -> Any:
        if self.model_path.exists():
            guard.refuse(f"loading the LLM {self.model_path} (torch)")
        return real_torch_read(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", connect)
        for name in ("PersistentClient", "HttpClient", "AsyncHttpClient", "CloudClient"):
            if hasattr(chromadb, name):
                mp.setattr(chromadb, name, chroma_client(name, getattr(chromadb, name)))
        mp.setattr(socket.socket, "connect", sock_connect)
        mp.setattr(socket.socket, "connect_ex", sock_connect_ex)
        mp.setattr(socket.socket, "bind", bind)
        mp.setattr(subprocess.Popen, "_execute_child", execute_child)
        mp.setattr(os, "system", system)
        mp.setattr(SentenceTransformerEmbedder, "_load", embed_load)
        mp.setattr(LlamaCppClient, "_load", llama_load)
        mp.setattr(TorchClient, "_read", torch_read)
        yield guard


def pytest_configure(config: pytest.Config) -> None:
    if isolation_mode() not in ("strict", "warn", "off"):
        raise pytest.UsageError(f"KNOWREC_TEST_ISOLATION={isolation_mode()!r}: use strict, warn or off")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Every item without the ``integration`` marker, doctests of ``knowrec`` included, runs guarded (its setup and
    teardown too); in strict mode a test that swallowed an :class:`IsolationError` still fails."""
    mode = isolation_mode()
    if item.get_closest_marker("integration") is not None or mode == "off":
        return (yield)
    with isolation_guard(strict=mode == "strict") as guard:
        runtest = item.runtest

        def checked() -> None:
            runtest()
            if guard.violations:
                raise IsolationError("swallowed by the code under test: " + " | ".join(guard.violations))

        item.runtest = checked  # type: ignore[method-assign]
        try:
            return (yield)
        finally:
            item.runtest = runtest  # type: ignore[method-assign]
