"""Baselines on tiny hand-made data: what each computes, that the trained ones learn, and the tuning protocol."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from knowrec.eval.baselines import (
    BASELINES,
    EASEScorer,
    ItemKNNScorer,
    MostPopScorer,
    RandomScorer,
    evaluate_full,
    run_baseline,
    summarize,
    tune,
)
from knowrec.eval.data import Split
from knowrec.eval.systems import Scorer

ITEMS = ["a", "b", "c", "d"]


def _split(sequences: dict[str, list[str]], items: Sequence[str] | None = None) -> Split:
    """Leave-one-out over whole sequences (last = test, second-to-last = validation)."""
    catalogue = sorted({i for s in sequences.values() for i in s}) if items is None else list(items)
    return Split(
        train={u: s[:-2] for u, s in sequences.items()},
        val={u: s[-2] for u, s in sequences.items()},
        test={u: s[-1] for u, s in sequences.items()},
        items=catalogue,
    )


# ---------------------------------------------------------------------------------------------------- MostPop


def test_mostpop_counts_users_per_item() -> None:
    s = MostPopScorer()
    s.fit({"u1": ["a", "b"], "u2": ["b", "c"], "u3": ["b", "c", "b"]}, ITEMS)
    scores = s.score_all("anyone", ["a"])
    assert scores.tolist() == [1.0, 3.0, 2.0, 0.0]
    assert [ITEMS[i] for i in np.argsort(-scores, kind="stable")] == ["b", "c", "a", "d"]


# ---------------------------------------------------------------------------------------------------- ItemKNN

# u1: a b · u2: a b c · u3: b c   →   users(a) = {1, 2}, users(b) = {1, 2, 3}, users(c) = {2, 3}
TOY = {"u1": ["a", "b"], "u2": ["a", "b", "c"], "u3": ["b", "c"]}


def test_itemknn_cosine_by_hand() -> None:
    s = ItemKNNScorer(k=None)
    s.fit(TOY, ITEMS)
    ab, ac, bc = 2 / math.sqrt(2 * 3), 1 / math.sqrt(2 * 2), 2 / math.sqrt(3 * 2)
    assert s.score_all("u", ["a"]) == pytest.approx([0.0, ab, ac, 0.0])
    assert s.score_all("u", ["a", "c"]) == pytest.approx([ac, ab + bc, ac, 0.0])
    assert s.score_all("u", ["a", "a"]) == pytest.approx([0.0, ab, ac, 0.0])  # duplicates count once


def test_itemknn_shrink_and_neighbours() -> None:
    shrunk = ItemKNNScorer(k=None, shrink=1.0)
    shrunk.fit(TOY, ITEMS)
    assert shrunk.score_all("u", ["a"])[2] == pytest.approx(1 / (2 + 1))
    pruned = ItemKNNScorer(k=1)
    pruned.fit(TOY, ITEMS)
    # The nearest neighbour of c is b (0.816 > 0.5), so a no longer contributes to c.
    assert pruned.score_all("u", ["a"])[2] == 0.0
    assert pruned.score_all("u", ["b"])[2] == pytest.approx(2 / math.sqrt(6))


# ------------------------------------------------------------------------------------------------------- EASE


def test_ease_equals_closed_form() -> None:
    lam = 0.5
    s = EASEScorer(lam=lam)
    s.fit(TOY, ITEMS)
    x = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0]], dtype=float)
    p = np.linalg.inv(x.T @ x + lam * np.eye(4))
    b = np.eye(4) - p / np.diag(p)
    assert np.diag(b) == pytest.approx(np.zeros(4))
    assert s.score_all("u2", ["a", "b", "c"]) == pytest.approx(x[1] @ b, rel=1e-5)
    assert s.score_all("u", ["c"]) == pytest.approx(b[2], rel=1e-5)


# ----------------------------------------------------------------------------------------------------- Random


def test_random_is_deterministic_per_seed_and_user() -> None:
    one, same, other = RandomScorer(seed=1), RandomScorer(seed=1), RandomScorer(seed=2)
    for s in (one, same, other):
        s.fit({}, ITEMS * 10)
    assert np.array_equal(one.score_all("u1", []), same.score_all("u1", ["a"]))
    assert not np.array_equal(one.score_all("u1", []), other.score_all("u1", []))
    assert not np.array_equal(one.score_all("u1", []), one.score_all("u2", []))


# ------------------------------------------------------------------------------------------------ evaluate_full


class _Constant(Scorer):
    name: ClassVar[str] = "constant"

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        pass

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        return np.zeros(len(self.items))


class _HistoryFirst(Scorer):
    """Scores the history items highest (100), the others by catalogue position (0, 1, …)."""

    name: ClassVar[str] = "history-first"

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        pass

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        scores = np.arange(len(self.items), dtype=float)
        for item in history:
            scores[self.index[item]] = 100.0
        return scores


def test_evaluate_full_masks_history_and_counts_ties_against_the_target() -> None:
    split = _split({"u1": ["a", "b", "c", "d"], "u2": ["e", "c", "a", "b"]}, items=[*ITEMS, "e", "f"])
    s = _Constant()
    s.fit(split.sequences("test"), split.items)
    # 6 items; history (2 train + validation) masked; the target ties with the 2 others left: worst rank 2.
    assert evaluate_full(s, split, "test") == {"u1": 2, "u2": 2}
    # Validation: history is the 2 train items, so 3 other candidates remain (the test item among them).
    assert evaluate_full(s, split, "val") == {"u1": 3, "u2": 3}
    h = _HistoryFirst()
    h.fit(split.sequences("test"), split.items)
    # u1: history {a, b, c} (100) is masked, so only e (4) and f (5) outrank d (3); unmasked it would be rank 5.
    # u2: history {e, c, a} is masked; d (3) and f (5) outrank b (1).
    assert evaluate_full(h, split, "test") == {"u1": 2, "u2": 2}
    assert summarize({"u": 0})["NDCG@10"] == 1.0


def test_evaluate_full_target_outside_catalogue_is_a_miss() -> None:
    split = _split({"u1": ["a", "b", "c", "zz"]})
    s = _Constant()
    s.fit(split.sequences("test"), ["a", "b", "c"])
    assert evaluate_full(s, split, "test") == {"u1": None}
    assert summarize({"u1": None})["Recall@10"] == 0.0


# ------------------------------------------------------------------------------------------------------- tune


class _Signed(Scorer):
    """Popularity times ``sign``: +1 is right on data where the targets are popular, −1 is wrong."""

    name: ClassVar[str] = "signed"
    grid: ClassVar[list[dict[str, Any]]] = [{"sign": -1}, {"sign": 1}, {"sign": 0}]

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        self.counts = np.zeros(len(self.items))
        for seq in sequences.values():
            for item in set(seq):
                self.counts[self.index[item]] += 1

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        return float(self.params["sign"]) * self.counts


def _popular_targets() -> Split:
    # Half the users have "p" then "q" (validation item q), half "q" then "p": each target is popular in training.
    seqs = {f"u{i}": [f"x{i}", *(["p", "q"] if i % 2 else ["q", "p"]), "t"] for i in range(6)}
    return _split(seqs)


def test_tune_picks_the_best_grid_row() -> None:
    split = _popular_targets()
    best, table = tune(_Signed, split)
    assert [r["params"] for r in table] == _Signed.grid
    assert best == {"sign": 1}
    assert table[1]["NDCG@10"] == max(r["NDCG@10"] for r in table)
    assert table[1]["NDCG@10"] > table[0]["NDCG@10"]
    lines: list[str] = []
    best, _ = tune(_Signed, split, metric="MRR@10", users=["u1"], progress=lines.append, grid=[{"sign": -1}])
    assert best == {"sign": -1} and len(lines) == 1


def test_run_baseline_refits_on_train_plus_validation() -> None:
    run = run_baseline(MostPopScorer, _popular_targets())
    assert run.params == {} and len(run.table) == 1
    assert set(run.ranks) == set(_popular_targets().users)
    assert 0.0 <= run.test["NDCG@10"] <= 1.0


def test_registry() -> None:
    assert set(BASELINES) == {"random", "mostpop", "itemknn", "ease", "bprmf", "sasrec"}
    assert all(BASELINES[name].name == name and BASELINES[name].grid for name in BASELINES)


# ------------------------------------------------------------------------------------------- trained baselines


def _clusters(n_users: int = 40, per: int = 8, rng_seed: int = 0) -> Split:
    """Two taste groups: even users rate only items g0-*, odd users only g1-* (random order)."""
    rng = np.random.default_rng(rng_seed)
    seqs: dict[str, list[str]] = {}
    for u in range(n_users):
        group = [f"g{u % 2}-{i}" for i in range(12)]
        seqs[f"u{u}"] = [group[i] for i in rng.permutation(12)[:per]]
    return _split(seqs)


def _pairs(n_users: int = 60, n_pairs: int = 15, length: int = 6, rng_seed: int = 0) -> Split:
    """Item ``a{k}`` is always followed by ``b{k}``; each sequence is a run of random pairs, then one more ``a``.

    So the validation item is the ``b`` of the pair whose ``a`` ends the training history.
    """
    rng = np.random.default_rng(rng_seed)
    seqs: dict[str, list[str]] = {}
    for u in range(n_users):
        seq: list[str] = []
        for k in rng.permutation(n_pairs)[: length + 1]:
            seq += [f"a{k}", f"b{k}"]
        seqs[f"u{u}"] = seq[:-1]
    return _split(seqs)


def test_bprmf_learns_taste_groups() -> None:
    pytest.importorskip("torch")
    from knowrec.eval.baselines import BPRMFScorer

    split = _clusters()
    s = BPRMFScorer(factors=8, reg=1e-4, lr=0.05, epochs=30, batch_size=64, threads=1)
    s.fit(split.sequences("val"), split.items)
    # 6 in-group items are unseen per user (the target among them) against 12 of the other group.
    in_group = np.mean([r is not None and r < 6 for r in evaluate_full(s, split, "val").values()])
    rand = RandomScorer(seed=0)
    rand.fit(split.sequences("val"), split.items)
    chance = np.mean([r is not None and r < 6 for r in evaluate_full(rand, split, "val").values()])
    assert in_group > 0.8 > chance + 0.3
    # Same seed, same model.
    again = BPRMFScorer(factors=8, reg=1e-4, lr=0.05, epochs=30, batch_size=64, threads=1)
    again.fit(split.sequences("val"), split.items)
    assert np.array_equal(s.score_all("u1", []), again.score_all("u1", []))


def test_sasrec_learns_consecutive_pairs_and_is_deterministic() -> None:
    pytest.importorskip("torch")
    from knowrec.eval.baselines import SASRecScorer

    split = _pairs()
    params = {"hidden": 16, "max_len": 12, "dropout": 0.1, "lr": 0.01, "epochs": 20, "batch_size": 16, "threads": 1}
    s = SASRecScorer(**params)
    s.fit(split.sequences("val"), split.items)
    hr1 = summarize(evaluate_full(s, split, "val"))["HR@1"]
    assert hr1 > 0.8
    again = SASRecScorer(**params)
    again.fit(split.sequences("val"), split.items)
    history = split.history("u3", "val")
    assert np.array_equal(s.score_all("u3", history), again.score_all("u3", history))


def test_iterative_tune_records_the_best_epoch() -> None:
    pytest.importorskip("torch")
    from knowrec.eval.baselines import BPRMFScorer

    split = _clusters()
    grid = [{"factors": 8, "reg": 1e-4, "lr": 0.05, "epochs": 12, "eval_every": 4, "batch_size": 64, "threads": 1}]
    best, table = tune(BPRMFScorer, split, grid=grid)
    assert best["epochs"] in (4, 8, 12)
    assert table[0]["params"] == best
    # Refitting the chosen setting trains exactly that many epochs.
    s = BPRMFScorer(**best)
    s.fit(split.sequences("test"), split.items)
    assert len(s.losses) == best["epochs"]
