import numpy as np
import pytest

from knowrec.agent.collaborative import EASE
from knowrec.agent.fusion import FEATURES, FusionContext, ItemStats, feature_matrix
from knowrec.agent.retrieve import CollaborativeGenerator, recency_weights, reciprocal_rank_fusion
from knowrec.types import Candidate, Interaction, KGPath, RecQuery

PAIRS = [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "2"), ("c", "3"), ("d", "3")]
ROWS = [Interaction(user_id=u, item_id=i) for u, i in PAIRS]


def test_ease_matches_closed_form():
    m = EASE.fit(ROWS, lam=1.0, min_count=1)
    assert m.item_ids == ["1", "2", "3"]
    x = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=float)
    p = np.linalg.inv(x.T @ x + np.eye(3))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0)
    assert np.allclose(m.weights, b, atol=1e-6)
    assert np.allclose(np.diag(m.weights), 0)


def test_ease_score_excludes_history_and_exclusions(tmp_path):
    m = EASE.fit(ROWS, lam=1.0, min_count=1)
    scored = m.score(["1"])
    assert [i for i, _ in scored] == ["2", "3"]
    assert [i for i, _ in m.score(["1"], exclude={"2"})] == ["3"]
    assert m.score(["unknown"]) == []
    m.save(tmp_path / "e.npz")
    again = EASE.load(tmp_path / "e.npz")
    assert again.item_ids == m.item_ids and np.array_equal(again.weights, m.weights)


def test_ease_min_count_and_max_items():
    m = EASE.fit(ROWS, lam=1.0, min_count=3)
    assert m.item_ids == ["2"]
    m = EASE.fit(ROWS, lam=1.0, min_count=1, max_items=2)
    assert m.item_ids == ["2", "3"] or m.item_ids == ["1", "2"]
    assert len(m.item_ids) == 2


def test_collaborative_generator_uses_seen_items():
    gen = CollaborativeGenerator(EASE.fit(ROWS, lam=1.0, min_count=1))
    cands = gen.generate(RecQuery(user_id="a", seen=frozenset({"1"}), history=("1",)), 5)
    assert cands[0].item_id == "2"
    assert all(c.sources.keys() == {"collaborative"} for c in cands)
    assert CollaborativeGenerator(None).generate(RecQuery(seen=frozenset({"1"})), 5) == []


def test_recency_weights_halve_per_half_life():
    w = recency_weights(["x", "y", "x"], half_life=1.0)
    assert w == {"x": 1.0, "y": 0.5}


def test_rrf_sums_weighted_reciprocal_ranks_and_keeps_paths():
    path = KGPath(
        source_item="s",
        entity="e",
        entity_label="E",
        source_fact="F1",
        target_fact="F2",
        source_relation="r",
        target_relation="r",
        weight=1.0,
    )
    a = [Candidate(item_id="x", score=3, sources={"a": 3}), Candidate(item_id="y", score=2, sources={"a": 2})]
    b = [Candidate(item_id="y", score=9, sources={"b": 9}, paths=(path,))]
    fused = reciprocal_rank_fusion({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, n=5, k=10)
    assert [c.item_id for c in fused] == ["y", "x"]
    assert fused[0].score == pytest.approx(1 / 12 + 2 / 11)
    assert fused[0].sources == {"a": 2, "b": 9}
    assert fused[0].paths == (path,)
    assert len(reciprocal_rank_fusion({"a": a, "b": b}, {}, n=1)) == 1


def _stats(sequences: dict[str, list[tuple[str, float | None]]]) -> ItemStats:
    items = sorted({i for s in sequences.values() for i, _ in s})
    return ItemStats.build(items, sequences, {})


def test_transition_features_score_what_followed_the_last_items():
    # "b" always follows "a"; "c" follows "b"; "d" never follows anything the user has
    seqs = {
        "u1": [("a", 5.0), ("b", 4.0), ("c", 4.0)],
        "u2": [("a", 4.0), ("b", 5.0), ("d", 3.0)],
        "u3": [("d", 4.0), ("x", 4.0)],
    }
    stats = _stats(seqs)
    cands = [Candidate(item_id=i, score=0.0) for i in ("b", "c", "d", "x")]
    ctx = FusionContext(history=("a",), sequence_len=1, has_query=False, sequence=("a",))
    x = feature_matrix(cands, ctx, stats)
    last, recent = x[:, FEATURES.index("transition_last")], x[:, FEATURES.index("transition_recent")]
    # from "a": b at distance 1 twice (weight 1 each), c and d at distance 2 once each (weight 1/2): b 2/3, c, d 1/6
    assert last.round(4).tolist() == [0.6667, 0.1667, 0.1667, 0.0]
    assert recent.round(4).tolist() == last.round(4).tolist()  # one item in the sequence: the same
    # with "x" last and "a" before it, "x" itself is no candidate and "b" keeps half of a's weight
    ctx2 = FusionContext(history=("x", "a"), sequence_len=2, has_query=False, sequence=("a", "x"))
    x2 = feature_matrix(cands, ctx2, stats)
    assert x2[:, FEATURES.index("transition_last")].tolist() == [0.0, 0.0, 0.0, 0.0]  # nothing follows x
    assert x2[0, FEATURES.index("transition_recent")] == pytest.approx(0.5 * 2 / 3)
    # no sequence (cold start): the features are missing, not zero
    cold = feature_matrix(cands, FusionContext(history=(), sequence_len=0, has_query=True), stats)
    assert np.isnan(cold[:, FEATURES.index("transition_last")]).all()


def test_item_stats_keep_their_transitions_through_save_and_load(tmp_path):
    stats = _stats({"u": [("a", 5.0), ("b", 4.0), ("c", None)], "v": [("c", 3.0), ("a", 4.0)]})
    stats.save(tmp_path / "s.npz")
    back = ItemStats.load(tmp_path / "s.npz")
    assert back.transitions is not None and stats.transitions is not None
    assert (back.transitions != stats.transitions).nnz == 0
    assert back.transitions.nnz == stats.transitions.nnz > 0
