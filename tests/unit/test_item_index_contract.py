"""Contract tests of :class:`knowrec.kg_store.base.ItemIndex`, run against every backend.

Backends: the in-memory fake (:class:`knowrec.testing.InMemoryItemIndex`), Chroma embedded (``PersistentClient`` in a
temporary folder) and a real Chroma server (the session's ``chroma run``, see ``tests/servers_chroma.py``), each server
test in its own collection. Only the protocol is used in the assertions; a new backend adds a param to the ``index``
fixture; params that need the disk or a server are marked ``integration``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from knowrec.kg_store.base import ItemIndex
from knowrec.kg_store.chroma_index import ChromaItemIndex, doc_hash
from knowrec.testing import InMemoryItemIndex
from tests.fakes import HashEmbedder

DOCS = {
    "1": "Heat (1995). Crime thriller by Michael Mann",
    "2": "Collateral (2004). Crime thriller by Michael Mann",
    "3": "Alien (1979). Science fiction horror by Ridley Scott",
    "4": "Blade Runner (1982). Science fiction by Ridley Scott",
    "5": "Toy Story (1995). Animation comedy",
}
NASTY = {
    'it\'s "quoted"': 'Amélie "quoted" it\'s — 東京 🎬',
    "'); DROP TABLE items; --": "nasty id document",
    "東京/🎬 ünï": "unicode id document",
}


def _collection_name() -> str:
    return f"kr-test-{uuid.uuid4().hex}"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("embedded", marks=pytest.mark.integration),  # a folder in tmp_path: exact search
        pytest.param("embedded-hnsw", marks=pytest.mark.integration),  # the same, queries through Chroma's HNSW
        pytest.param("server", marks=pytest.mark.integration),
    ]
)
def index(request: pytest.FixtureRequest) -> Iterator[ItemIndex]:
    if request.param == "memory":
        yield InMemoryItemIndex(HashEmbedder())
        return
    if request.param.startswith("embedded"):
        exact = 0 if request.param == "embedded-hnsw" else 50_000
        yield ChromaItemIndex(
            HashEmbedder(), path=request.getfixturevalue("tmp_path") / "chroma", exact_max_items=exact
        )
        return
    url = request.getfixturevalue("chroma_server")
    name = _collection_name()
    idx = ChromaItemIndex(HashEmbedder(), url=url, collection=name)
    yield idx
    if idx._client is not None:  # leave the shared server clean
        idx._client.delete_collection(name)


@pytest.fixture
def loaded(index: ItemIndex) -> ItemIndex:
    assert index.upsert(list(DOCS), list(DOCS.values())) == len(DOCS)
    return index


def _vec(text: str) -> np.ndarray:
    return HashEmbedder().embed([text])[0]


def test_satisfies_protocol(index: ItemIndex):
    assert isinstance(index, ItemIndex)


def test_empty_index(index: ItemIndex):
    assert index.count() == 0
    assert index.ids() == set()
    assert index.query(_vec("anything"), 3) == []
    assert index.doc_hashes(["1"]) == {}
    assert index.vectors(["1"]) == {}
    assert index.vectors([]) == {}
    assert index.snapshot([]) is None


def test_upsert_counts_and_ids(loaded: ItemIndex):
    assert loaded.count() == len(DOCS)
    assert loaded.ids() == set(DOCS)


def test_upsert_is_idempotent_and_replaces(loaded: ItemIndex):
    assert loaded.upsert(list(DOCS), list(DOCS.values())) == len(DOCS)
    assert loaded.count() == len(DOCS)
    loaded.upsert(["1"], ["Heat (1995). A new text"])
    assert loaded.count() == len(DOCS)
    assert loaded.doc_hashes(["1"]) == {"1": doc_hash("Heat (1995). A new text")}


def test_upsert_reports_progress(index: ItemIndex):
    seen: list[tuple[str, int]] = []
    index.upsert(list(DOCS), list(DOCS.values()), progress=lambda stage, n: seen.append((stage, n)))
    assert seen and {s for s, _ in seen} == {"index"} and sum(n for _, n in seen) == len(DOCS)


def test_doc_hashes_leave_out_missing(loaded: ItemIndex):
    got = loaded.doc_hashes(["1", "3", "missing"])
    assert got == {"1": doc_hash(DOCS["1"]), "3": doc_hash(DOCS["3"])}


def test_vectors_are_the_embedder_output(loaded: ItemIndex):
    got = loaded.vectors(["2", "4", "missing"])
    assert set(got) == {"2", "4"}
    for i, v in got.items():
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, _vec(DOCS[i]), atol=1e-6)


def test_query_nearest_first_with_cosine_similarity(loaded: ItemIndex):
    got = loaded.query(_vec(DOCS["3"]), 2)
    assert [i for i, _ in got] == ["3", "4"]  # 4 shares "Science fiction by Ridley Scott"
    assert got[0][1] == pytest.approx(1.0, abs=1e-5)
    assert got[0][1] >= got[1][1]


def test_query_exclude_and_k(loaded: ItemIndex):
    got = loaded.query(_vec(DOCS["1"]), 2, exclude={"1", "2"})
    ids = [i for i, _ in got]
    assert len(ids) == 2 and not {"1", "2"} & set(ids)
    assert loaded.query(_vec(DOCS["1"]), 0) == []
    assert len(loaded.query(_vec(DOCS["1"]), 50)) == len(DOCS)
    assert loaded.query(_vec(DOCS["1"]), 3, exclude=frozenset(DOCS)) == []


def test_delete(loaded: ItemIndex):
    loaded.delete(["2", "missing"])
    loaded.delete([])
    assert loaded.ids() == set(DOCS) - {"2"}
    assert loaded.count() == len(DOCS) - 1
    assert "2" not in {i for i, _ in loaded.query(_vec(DOCS["2"]), 5)}


def test_snapshot_and_restore_undo_changes(loaded: ItemIndex):
    before_hashes = loaded.doc_hashes(list(DOCS))
    before_vecs = loaded.vectors(list(DOCS))
    snap = loaded.snapshot(["1", "2", "missing"])
    # a failed ingest: changed 1, deleted 2, added 9
    loaded.upsert(["1", "9"], ["changed text", "a new item"])
    loaded.delete(["2"])
    loaded.restore(snap, remove=["9"])
    assert loaded.ids() == set(DOCS)
    assert loaded.doc_hashes(list(DOCS)) == before_hashes
    after_vecs = loaded.vectors(list(DOCS))
    for i in DOCS:
        np.testing.assert_allclose(after_vecs[i], before_vecs[i], atol=1e-6)


def test_restore_of_empty_snapshot_only_removes(loaded: ItemIndex):
    snap = loaded.snapshot([])
    loaded.upsert(["9"], ["a new item"])
    loaded.restore(snap, remove=["9"])
    assert loaded.ids() == set(DOCS)


def test_ids_with_quotes_and_unicode_round_trip(index: ItemIndex):
    index.upsert(list(NASTY), list(NASTY.values()))
    assert index.ids() == set(NASTY)
    assert index.doc_hashes(list(NASTY)) == {i: doc_hash(d) for i, d in NASTY.items()}
    first = next(iter(NASTY))
    assert index.query(_vec(NASTY[first]), 1)[0][0] == first
    index.delete([first])
    assert index.ids() == set(NASTY) - {first}


def test_many_documents_span_batches(index: ItemIndex):
    n = 1200  # more than one upsert batch (512) and paged reads
    ids = [f"item-{i}" for i in range(n)]
    assert index.upsert(ids, [f"document number {i} word{i % 7}" for i in range(n)]) == n
    assert index.count() == n
    assert index.ids() == set(ids)
    assert len(index.doc_hashes(ids)) == n


def test_concurrent_first_calls_share_one_client(index: ItemIndex):
    """A server answers requests concurrently: the first calls of several threads open one client and all work."""
    import threading

    errors: list[BaseException] = []
    found: list[int] = []
    start = threading.Barrier(4)

    def first_call() -> None:
        try:
            start.wait(10)
            found.append(index.count())
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and found == [0, 0, 0, 0]


# --- Chroma's vector cache (``vectors`` keeps what it read; ``preload`` reads everything) ---------------------------


@pytest.fixture
def chroma(tmp_path) -> ChromaItemIndex:
    idx = ChromaItemIndex(HashEmbedder(), path=tmp_path / "chroma")
    idx.upsert(list(DOCS), list(DOCS.values()))
    return idx


@pytest.mark.integration
def test_chroma_preload_reads_every_vector_once(chroma: ChromaItemIndex, monkeypatch: pytest.MonkeyPatch):
    assert chroma.preload(batch_size=2) == len(DOCS)  # three pages
    col = chroma._collection()

    def no_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("read Chroma although every vector was preloaded")

    monkeypatch.setattr(col, "get", no_reads)
    got = chroma.vectors(list(DOCS))
    for i, v in got.items():
        np.testing.assert_allclose(v, _vec(DOCS[i]), atol=1e-6)
    assert set(got) == set(DOCS)


@pytest.mark.integration
def test_chroma_preload_reads_nothing_when_the_vectors_do_not_fit(chroma: ChromaItemIndex):
    chroma.vector_cache_items = len(DOCS) - 1
    assert chroma.preload() == 0 and chroma._vectors == {}
    assert set(chroma.vectors(["1", "2"])) == {"1", "2"}  # read on demand, as before


@pytest.mark.integration
def test_chroma_a_write_replaces_a_cached_vector(chroma: ChromaItemIndex):
    chroma.preload()
    chroma.upsert(["1"], ["Alien (1979). Science fiction horror by Ridley Scott"])
    np.testing.assert_allclose(chroma.vectors(["1"])["1"], _vec(DOCS["3"]), atol=1e-6)
    chroma.delete(["2"])
    assert chroma.vectors(["2"]) == {}


@pytest.mark.integration
def test_chroma_a_vector_read_beside_a_write_is_not_kept(chroma: ChromaItemIndex, monkeypatch: pytest.MonkeyPatch):
    """A read that overlaps a write of the same item (another request of a server) may return the old vector, but
    must not cache it: the next read sees the new one."""
    col = chroma._collection()
    get = col.get
    new_text = "Toy Story (1995). Animation comedy, now rewritten"

    def read_then_write(*args: object, **kwargs: object) -> object:
        got = get(*args, **kwargs)  # the old vector, read before the write ends
        monkeypatch.setattr(col, "get", get)
        chroma.upsert(["1"], [new_text])
        return got

    monkeypatch.setattr(col, "get", read_then_write)
    np.testing.assert_allclose(chroma.vectors(["1"])["1"], _vec(DOCS["1"]), atol=1e-6)
    np.testing.assert_allclose(chroma.vectors(["1"])["1"], _vec(new_text), atol=1e-6)


# --- exact search (an embedded index up to ``exact_max_items`` items) -----------------------------------------------


def _random_docs(n: int, seed: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(60)]
    return {f"i{j:04d}": " ".join(rng.choice(words, size=8)) for j in range(n)}


@pytest.mark.integration
def test_chroma_exact_search_is_the_true_top_k_and_the_same_on_every_build(tmp_path):
    docs = _random_docs(400, 0)
    builds = []
    for n in (1, 2):
        idx = ChromaItemIndex(HashEmbedder(), path=tmp_path / f"b{n}")
        idx.upsert(list(docs), list(docs.values()))
        builds.append(idx)
    ids = list(docs)
    unit = HashEmbedder().embed(list(docs.values()))
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    for q in ids[:60]:
        v = _vec(docs[q])
        got = builds[0].query(v, 10, exclude={q})
        assert got == builds[1].query(v, 10, exclude={q})  # the same on both builds
        sims = unit @ (v / np.linalg.norm(v))
        truth = sorted((i for i in ids if i != q), key=lambda i: (-round(float(sims[ids.index(i)]), 6), i))[:10]
        assert [i for i, _ in got] == truth
        np.testing.assert_allclose([s for _, s in got], [sims[ids.index(i)] for i in truth], atol=1e-5)
    assert builds[0]._exact is not None and builds[0]._exact[1] is not None


@pytest.mark.integration
def test_chroma_exact_search_sees_this_index_s_writes(chroma: ChromaItemIndex):
    assert [i for i, _ in chroma.query(_vec(DOCS["3"]), 1)] == ["3"]
    chroma.upsert(["9"], ["Alien (1979). Science fiction horror by Ridley Scott, director's cut"])
    assert "9" in [i for i, _ in chroma.query(_vec(DOCS["3"]), 2)]
    chroma.delete(["3"])
    assert "3" not in [i for i, _ in chroma.query(_vec(DOCS["3"]), 5)]


@pytest.mark.integration
def test_chroma_over_exact_max_items_queries_hnsw(tmp_path):
    idx = ChromaItemIndex(HashEmbedder(), path=tmp_path / "chroma", exact_max_items=len(DOCS) - 1)
    idx.upsert(list(DOCS), list(DOCS.values()))
    assert [i for i, _ in idx.query(_vec(DOCS["3"]), 2)] == ["3", "4"]
    assert idx._exact is not None and idx._exact[1] is None  # too many items: HNSW answered
    assert idx.search_kind() == "hnsw"
    idx.exact_max_items = len(DOCS)
    assert idx.search_kind() == "exact"
