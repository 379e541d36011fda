"""Precomputed vectors: the demo's item documents ship embedded, and only the model that made them reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowrec import ConfigError
from knowrec.kg_store.embedder import PrecomputedVectors, SentenceTransformerEmbedder, model_fingerprint


class ScriptedEmbedder(SentenceTransformerEmbedder):
    """The real class with its model replaced by a rule: the vector of a text is one-hot on its length (mod dim)."""

    DIM = 8

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.encoded: list[str] = []

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += texts
        out = np.zeros((len(texts), self.DIM), dtype=np.float32)
        out[np.arange(len(texts)), [len(t) % self.DIM for t in texts]] = 1.0
        return out


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "README.md").write_text("about the model")
    return folder


def table_rows(n: int, dim: int = ScriptedEmbedder.DIM) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_table_round_trips_in_half_precision(tmp_path: Path):
    rows = table_rows(3)
    PrecomputedVectors.save(tmp_path / "t.npz", ["a", "b", "a"], np.vstack([rows[:2], rows[2]]), model="m1")
    table = PrecomputedVectors.load(tmp_path / "t.npz")
    assert (table.model, len(table), table.dim) == ("m1", 2, 8)  # "a" twice: kept once, the first row
    positions, found = table.lookup(["x", "b", "a"])
    assert positions == [1, 2]
    assert found.dtype == np.float32 and np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-6)
    assert np.allclose(found, rows[[1, 0]], atol=2e-3) and not np.allclose(found, rows[[1, 2]], atol=0.1)


def test_a_file_that_is_no_table_is_named(tmp_path: Path):
    bad = tmp_path / "vectors.npz"
    bad.write_text("not a table")
    with pytest.raises(ConfigError, match=r"vectors\.npz"):
        PrecomputedVectors.load(bad)
    np.savez(tmp_path / "other.npz", keys=np.zeros((2, 20), np.uint8), vectors=np.zeros((3, 4)), model="m")
    with pytest.raises(ConfigError, match="do not match"):
        PrecomputedVectors.load(tmp_path / "other.npz")


def test_the_fingerprint_follows_the_weights_not_the_readme(model_dir: Path):
    before = model_fingerprint(model_dir)
    (model_dir / "README.md").write_text("edited")
    assert model_fingerprint(model_dir) == before
    (model_dir / "1_Pooling" / "config.json").write_text('{"pooling": "cls"}')
    assert model_fingerprint(model_dir) != before
    with pytest.raises(ConfigError, match="not found or empty"):
        model_fingerprint(model_dir / "missing")


def test_known_texts_are_read_and_only_the_others_embedded(model_dir: Path, tmp_path: Path):
    rows = table_rows(2)
    PrecomputedVectors.save(tmp_path / "mine.npz", ["known one", "known two"], rows, model=model_fingerprint(model_dir))
    emb = ScriptedEmbedder(model_dir, precomputed=[tmp_path / "mine.npz"])
    out = emb.embed(["new", "known two", "newer!", "known one"])
    assert emb.encoded == ["new", "newer!"]  # the model saw only the unknown texts …
    assert np.allclose(out[1], rows[1], atol=2e-3) and np.allclose(out[3], rows[0], atol=2e-3)  # … in their places
    assert out[0].argmax() == 3 and out[2].argmax() == 6
    assert emb.counts == {"precomputed": 2, "embedded": 2}
    emb.encoded.clear()
    assert np.allclose(emb.embed(["known one"])[0], rows[0], atol=2e-3) and emb.encoded == []
    assert emb.dim == 8


def test_a_table_made_by_another_model_is_not_used(model_dir: Path, tmp_path: Path):
    PrecomputedVectors.save(tmp_path / "theirs.npz", ["known one"], table_rows(1), model="another-model")
    emb = ScriptedEmbedder(model_dir, precomputed=[tmp_path / "theirs.npz"])
    out = emb.embed(["known one"])
    assert emb.tables() == [] and emb.encoded == ["known one"] and out[0].argmax() == len("known one") % 8


def test_only_the_bundled_model_is_given_the_demo_vectors(model_dir: Path, monkeypatch):
    """A user's own embedder never reads (nor hashes its folder for) the bundled model's demo vectors."""
    from knowrec import Settings
    from knowrec.builders import build_embedder
    from knowrec.kg_store import embedder as embedder_module

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(embedder_module, "model_fingerprint", no_hashing)
    own = build_embedder(Settings(embedder_model=model_dir))
    assert own.tables() == []  # type: ignore[attr-defined]
    bundled = build_embedder(Settings())
    with pytest.raises(AssertionError, match="hashed"):  # the bundled one checks the shipped table's model
        bundled.tables()  # type: ignore[attr-defined]
