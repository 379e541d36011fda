"""knowrec against a real Chroma server (``chroma run``, see ``tests/servers_chroma.py``)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from knowrec import Recommender, Settings
from knowrec.errors import ConfigError, StoreUnavailable
from knowrec.kg_store.chroma_index import ChromaItemIndex
from tests.fakes import HashEmbedder
from tests.unit.test_ingest_pipeline import dataset

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung or firewalled service)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join(timeout=2)
    for c in accepted:
        c.close()
    sock.close()


def test_unreachable_url_fails_fast_naming_the_url():
    url = f"http://127.0.0.1:{_closed_port()}"
    idx = ChromaItemIndex(HashEmbedder(), url=url)  # no I/O yet
    assert idx.location == url
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        idx.verify()
    assert time.monotonic() - t0 < 3.0
    message = str(info.value)
    assert url in message and "Chroma" in message
    assert "\n" not in message
    with pytest.raises(StoreUnavailable, match=url):  # the first real use says the same
        idx.count()


def test_server_that_never_answers_times_out(silent_server: str):
    idx = ChromaItemIndex(HashEmbedder(), url=silent_server, connect_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match=silent_server):
        idx.verify()
    assert time.monotonic() - t0 < 5.0


def test_recommender_verify_names_an_unreachable_chroma(tmp_path: Path):
    url = f"http://127.0.0.1:{_closed_port()}"
    rec = Recommender(
        Settings(data_dir=tmp_path, chroma_url=url, llm={"backend": "none"}, progress=False), embedder=HashEmbedder()
    )
    with pytest.raises(StoreUnavailable, match=url):
        rec.verify()
    rec.close()


def test_url_forms_and_arguments():
    emb = HashEmbedder()
    assert ChromaItemIndex(emb, url="http://chroma:8000/").location == "http://chroma:8000"
    assert ChromaItemIndex(emb, url="http://chroma").location == "http://chroma:8000"
    assert ChromaItemIndex(emb, url="https://vectors.example.com").location == "https://vectors.example.com:443"
    assert ChromaItemIndex(emb, url="http://user:secret@h:9000").location == "http://h:9000"  # no credentials
    assert ChromaItemIndex(emb, host="h", port=9001).location == "http://h:9001"
    for bad in ({}, {"url": "http://h:1", "host": "h"}, {"path": Path("x"), "url": "http://h:1"}):
        with pytest.raises(ConfigError):
            ChromaItemIndex(emb, **bad)
    with pytest.raises(ConfigError):
        ChromaItemIndex(emb, url="chroma:8000")


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """An HTTP server that records (path, Authorization) of each request; heartbeat 200, anything else 500."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            ok = self.path.endswith("/heartbeat")
            body = json.dumps({"nanosecond heartbeat": 1} if ok else {"error": "boom", "message": "boom"}).encode()
            self.send_response(200 if ok else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_token_is_sent_as_bearer_header(recording_server: tuple[str, list[tuple[str, str | None]]]):
    url, seen = recording_server
    idx = ChromaItemIndex(HashEmbedder(), url=url, token="s3cret")
    with pytest.raises(StoreUnavailable, match=url) as info:
        idx.verify()  # the fake answers only the heartbeat
    assert "s3cret" not in str(info.value)
    assert seen[0] == ("/api/v2/heartbeat", "Bearer s3cret")  # our probe
    assert len(seen) > 1  # chromadb's own client got as far as the server...
    assert all(auth == "Bearer s3cret" for _, auth in seen)  # ...and sent the token on every request


def test_token_against_a_real_server(chroma_server: str):
    # an open server ignores the header; the client still works and keeps it out of the location
    idx = ChromaItemIndex(HashEmbedder(), url=chroma_server, token="s3cret", collection=f"kr-{uuid.uuid4().hex}")
    assert idx.upsert(["a"], ["a document"]) == 1
    assert "s3cret" not in idx.location
    idx._client.delete_collection(idx.collection_name)


def test_host_and_port_still_work(chroma_server: str):
    host, port = chroma_server.removeprefix("http://").split(":")
    idx = ChromaItemIndex(HashEmbedder(), host=host, port=int(port), collection=f"kr-{uuid.uuid4().hex}")
    assert idx.upsert(["a"], ["a document"]) == 1 and idx.count() == 1
    idx._client.delete_collection(idx.collection_name)


def test_lost_server_is_store_unavailable(tmp_path: Path):
    """A server that goes away after the collection was opened: the next call names the URL."""
    import os
    import subprocess

    from tests.servers_chroma import _free_port, chroma_executable, heartbeat

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(chroma_executable()), "run", "--path", str(tmp_path / "d"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    try:
        deadline = time.monotonic() + 60
        while not heartbeat(url):
            assert proc.poll() is None and time.monotonic() < deadline, "chroma run did not start"
            time.sleep(0.2)
        idx = ChromaItemIndex(HashEmbedder(), url=url)
        idx.upsert(["a"], ["a document"])
        idx.verify()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    with pytest.raises(StoreUnavailable, match=url):
        idx.count()
    with pytest.raises(StoreUnavailable, match=url):  # verify() checks again once open (readiness probes)
        idx.verify()


def test_recommender_end_to_end_on_the_server(chroma_server: str, tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path,
        chroma_url=chroma_server,
        llm={"backend": "none"},
        ranker={"mode": "none"},
        progress=False,
        retrieval={"ease_min_count": 1, "n_candidates": 6},
    )
    rec = Recommender(settings, embedder=HashEmbedder())
    index = rec.index
    assert isinstance(index, ChromaItemIndex) and index.location == chroma_server and index.path is None
    index.collection_name = f"kr-e2e-{uuid.uuid4().hex}"  # isolate from other tests (still before any I/O)
    try:
        assert rec.verify()["index"] == f"chroma {chroma_server}"
        rec.ingest_dataset(dataset())
        assert rec.index.count() == 7
        assert not (tmp_path / "chroma").exists()  # nothing went to the embedded folder
        result = rec.recommend("u1", k=3)
        ids = [it.item_id for it in result.items]
        assert len(ids) == 3 == len(set(ids)) and not {"1", "3"} & set(ids)
        # ingest is idempotent against the server too
        before = rec.index.doc_hashes(list(rec.index.ids()))
        rec.ingest_dataset(dataset())
        assert rec.index.count() == 7 and rec.index.doc_hashes(list(before)) == before
        # a second client (another process would do the same) sees the same collection
        other = ChromaItemIndex(HashEmbedder(), url=chroma_server, collection=index.collection_name)
        assert other.ids() == {str(i) for i in range(1, 8)}
    finally:
        if index._client is not None:
            index._client.delete_collection(index.collection_name)
        rec.close()


def test_ids_with_quotes_and_unicode_round_trip_on_the_server(chroma_server: str):
    ids = ['it\'s "quoted"', "東京/🎬 ünï", "'); DROP TABLE items; --", "a\\b", "  spaced  "]
    idx = ChromaItemIndex(HashEmbedder(), url=chroma_server, collection=f"kr-{uuid.uuid4().hex}")
    try:
        idx.upsert(ids, [f"document {n}" for n in range(len(ids))])
        assert idx.ids() == set(ids)
        assert set(idx.vectors(ids)) == set(ids)
        assert set(idx.doc_hashes(ids)) == set(ids)
        assert {i for i, _ in idx.query(HashEmbedder().embed(["document 1"])[0], 5)} == set(ids)
        snap = idx.snapshot(ids[:2])
        idx.delete(ids[:2])
        idx.restore(snap, remove=[])
        assert idx.ids() == set(ids)
    finally:
        if idx._client is not None:
            idx._client.delete_collection(idx.collection_name)
