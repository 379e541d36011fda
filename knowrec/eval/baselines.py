"""Baseline recommenders, their tuning on the validation item, and the P2 full-ranking evaluation they share.

Every baseline is a :class:`~knowrec.eval.systems.Scorer`. The protocol (as the reference implementation in
``BENCHMARKS.md``): tune each ``grid`` setting by fitting on ``split.sequences("val")`` and ranking the validation
item against the whole catalogue minus the user's training history; then refit the chosen setting on
``split.sequences("test")`` (train + validation item) and rank the test item with history = train + validation item.
Ties count against the ground truth (:func:`~knowrec.eval.metrics.pessimistic_rank`).

The trained baselines (:class:`BPRMFScorer`, :class:`SASRecScorer`) need PyTorch (``knowrec.eval.neural``), imported
only when they are fitted. Their epoch count is tuned too: :func:`tune` evaluates the validation item every few
epochs, keeps the best epoch, and records it in the chosen parameters, so the refit trains exactly that long.

Example:
    >>> from knowrec.datasets import load_demo
    >>> from knowrec.eval.data import leave_one_out, preprocess
    >>> split = leave_one_out(preprocess(load_demo().interactions))  # doctest: +SKIP
    >>> run = run_baseline(EASEScorer, split)  # doctest: +SKIP
    >>> run.params, round(run.test["NDCG@10"], 4)  # doctest: +SKIP
    ({'lam': 50}, 0.0411)
"""

from __future__ import annotations

import copy
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from knowrec.agent.collaborative import ease_weights
from knowrec.eval.data import Split
from knowrec.eval.metrics import accuracy_metrics, mean_metrics, pessimistic_rank
from knowrec.eval.systems import Scorer

__all__ = [
    "BASELINES",
    "BPRMFScorer",
    "BaselineRun",
    "EASEScorer",
    "ItemKNNScorer",
    "IterativeScorer",
    "MostPopScorer",
    "RandomScorer",
    "SASRecScorer",
    "evaluate_full",
    "run_baseline",
    "score_many",
    "summarize",
    "tune",
]

log = logging.getLogger(__name__)

Monitor = Callable[[Scorer], float]
"""Evaluates a partly trained scorer on the validation item (higher is better)."""


# --------------------------------------------------------------------------------------------------------- helpers


def _binary_matrix(sequences: dict[str, list[str]], index: dict[str, int]) -> tuple[sp.csr_matrix, list[str]]:
    """Binary user × item matrix of the fitting sequences (users sorted as given); unknown items are skipped."""
    users = list(sequences)
    rows: list[int] = []
    cols: list[int] = []
    for r, user in enumerate(users):
        for item in set(sequences[user]):
            c = index.get(item)
            if c is not None:
                rows.append(r)
                cols.append(c)
    x = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(users), len(index)), dtype=np.float64
    )
    return x, users


def _history_indices(scorer: Scorer, history: Sequence[str]) -> list[int]:
    """Catalogue positions of the known history items, duplicates removed, order kept."""
    seen: dict[int, None] = {}
    for item in history:
        i = scorer.index.get(item)
        if i is not None:
            seen.setdefault(i, None)
    return list(seen)


def _history_matrix(scorer: Scorer, histories: Sequence[Sequence[str]]) -> sp.csr_matrix:
    rows: list[int] = []
    cols: list[int] = []
    for r, history in enumerate(histories):
        idx = _history_indices(scorer, history)
        rows.extend([r] * len(idx))
        cols.extend(idx)
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(histories), len(scorer.items))
    )


def score_many(scorer: Scorer, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
    """Scores ``(len(users), len(items))``: the scorer's own batched ``score_many`` if it has one, else row by row."""
    batched = getattr(scorer, "score_many", None)
    if callable(batched):
        return np.asarray(batched(users, histories), dtype=np.float64)
    if not users:
        return np.zeros((0, len(scorer.items)))
    return np.stack(
        [np.asarray(scorer.score_all(u, h), dtype=np.float64) for u, h in zip(users, histories, strict=True)]
    )


def evaluate_full(
    scorer: Scorer, split: Split, phase: str, users: Iterable[str] | None = None, chunk: int = 256
) -> dict[str, int | None]:
    """P2 full ranking: the 0-based rank of each user's ``phase`` target among all catalogue items not in the history.

    The history is ``split.history(user, phase)`` (train for ``"val"``, train + validation item for ``"test"``); those
    items are masked out, the target is never masked, and ties count against the target. A target outside the
    scorer's catalogue gets ``None`` (a miss at every cutoff).

    Args:
        scorer: A fitted scorer.
        split: The leave-one-out split.
        phase: ``"val"`` or ``"test"``.
        users: Users to rank for (default: all users of the split).
        chunk: Users scored per batch.

    Returns:
        ``{user: rank}``.
    """
    users = list(split.users if users is None else users)
    ranks: dict[str, int | None] = {}
    n = len(scorer.items)
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        histories = [split.history(u, phase) for u in batch]
        scores = score_many(scorer, batch, histories)
        for row, (user, history) in enumerate(zip(batch, histories, strict=True)):
            target = scorer.index.get(split.target(user, phase))
            if target is None:
                ranks[user] = None
                continue
            valid = np.ones(n, dtype=bool)
            valid[_history_indices(scorer, history)] = False
            ranks[user] = pessimistic_rank(scores[row], target, valid)
    return ranks


def summarize(ranks: dict[str, int | None], ks: Iterable[int] = (1, 5, 10, 20)) -> dict[str, float]:
    """Mean ``NDCG@k``, ``HR@k``, ``Recall@k``, ``MRR@k`` over users from their ranks."""
    ks = tuple(ks)
    return mean_metrics({u: accuracy_metrics(r, ks) for u, r in ranks.items()})


# ------------------------------------------------------------------------------------------------- simple scorers


class RandomScorer(Scorer):
    """Uniform random scores, reproducible from ``seed`` and the user id.

    Example:
        >>> s = RandomScorer(seed=1)
        >>> s.fit({}, ["a", "b", "c"])
        >>> bool((s.score_all("u", []) == s.score_all("u", ["a"])).all())
        True
    """

    name: ClassVar[str] = "random"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        self.seed = int(self.params.get("seed", 0))

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(user.encode("utf-8"))])
        return rng.random(len(self.items))


class MostPopScorer(Scorer):
    """How many fitting sequences contain each item (the same list for everyone).

    Example:
        >>> s = MostPopScorer()
        >>> s.fit({"u": ["a", "b"], "v": ["b"]}, ["a", "b", "c"])
        >>> s.score_all("w", []).tolist()
        [1.0, 2.0, 0.0]
    """

    name: ClassVar[str] = "mostpop"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        x, _ = _binary_matrix(sequences, self.index)
        self.counts = np.asarray(x.sum(axis=0)).ravel()

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        return self.counts.copy()

    def score_many(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.tile(self.counts, (len(users), 1))


class ItemKNNScorer(Scorer):
    """Item-item cosine similarity on the binary user × item matrix; a user's score is the sum over their history.

    ``sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink)`` with a zero diagonal. With ``k``, item ``j`` keeps only
    its ``k`` most similar items: ``score(u, j) = Σ_{i ∈ history ∩ N_k(j)} sim(i, j)``.

    Params:
        k: Neighbours kept per item (``None``: all).
        shrink: Added to the cosine denominator (0: plain cosine).
    """

    name: ClassVar[str] = "itemknn"
    # Small neighbourhoods win on ml-latest-small (validation NDCG@10: k=None 0.024, 50 0.036, 10 0.043, 5 0.051).
    grid: ClassVar[list[dict[str, Any]]] = [
        {"k": k, "shrink": shrink} for shrink in (0.0, 10.0) for k in (None, 100, 20, 10, 5, 3)
    ]

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        x, _ = _binary_matrix(sequences, self.index)
        co = (x.T @ x).toarray()
        norms = np.sqrt(np.diag(co).copy())
        denom = np.outer(norms, norms) + float(self.params.get("shrink", 0.0) or 0.0)
        sim = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
        np.fill_diagonal(sim, 0.0)
        k = self.params.get("k")
        n = sim.shape[0]
        if k is not None and int(k) < n - 1:
            # Column j keeps its k largest entries (the neighbours of j); ties at the cut fall arbitrarily (but
            # deterministically, by np.argpartition).
            drop = np.argpartition(-sim, int(k), axis=0)[int(k) :, :]
            np.put_along_axis(sim, drop, 0.0, axis=0)
        self.sim = sim.astype(np.float32)

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        idx = _history_indices(self, history)
        return self.sim[idx].sum(axis=0, dtype=np.float64)

    def score_many(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.asarray(_history_matrix(self, histories) @ self.sim, dtype=np.float64)


class EASEScorer(Scorer):
    """EASE (Steck 2019): ``B = I − P / diag(P)`` with ``P = (XᵀX + λI)⁻¹``; a user's scores are ``x_u · B``.

    Params:
        lam: The L2 weight λ.
    """

    name: ClassVar[str] = "ease"
    grid: ClassVar[list[dict[str, Any]]] = [{"lam": lam} for lam in (10, 50, 100, 200, 500, 1000)]

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        x, _ = _binary_matrix(sequences, self.index)
        self.weights = self.closed_form(x, float(self.params.get("lam", 200.0))).astype(np.float32)

    @staticmethod
    def closed_form(x: sp.spmatrix | np.ndarray, lam: float) -> np.ndarray:
        """EASE weights of a user × item matrix ``x`` (zero diagonal); the pipeline's own EASE uses the same code."""
        return ease_weights(x, lam)

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        return self.weights[_history_indices(self, history)].sum(axis=0, dtype=np.float64)

    def score_many(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.asarray(_history_matrix(self, histories) @ self.weights, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ trained scorers


class IterativeScorer(Scorer):
    """A scorer trained epoch by epoch, whose epoch count :func:`tune` picks on the validation item.

    ``fit(..., monitor=f)`` evaluates ``f(self)`` every ``eval_every`` epochs (up to ``epochs``), stops after
    ``patience`` evaluations without improvement, restores the best state and sets :attr:`best_epoch`. Without a
    monitor it trains exactly ``epochs`` epochs.
    """

    default_epochs: ClassVar[int] = 50
    default_eval_every: ClassVar[int] = 5
    default_patience: ClassVar[int] = 4

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.best_epoch = 0
        self.best_value = math.nan
        self.losses: list[float] = []
        self._monitor: Monitor | None = None

    def fit(self, sequences: dict[str, list[str]], items: Sequence[str], monitor: Monitor | None = None) -> None:
        """Remember the catalogue and train; with ``monitor``, keep the epoch where it was highest."""
        self._monitor = monitor
        try:
            super().fit(sequences, items)
        finally:
            self._monitor = None

    def _fit(self, sequences: dict[str, list[str]]) -> None:
        self._setup(sequences)
        epochs = int(self.params.get("epochs", self.default_epochs))
        every = max(1, int(self.params.get("eval_every", self.default_eval_every)))
        patience = int(self.params.get("patience", self.default_patience))
        monitor = self._monitor
        best_state: Any = None
        stale = 0
        self.losses = []
        self.best_epoch, self.best_value = epochs, math.nan
        for epoch in range(1, epochs + 1):
            self.losses.append(self._train_epoch())
            if monitor is None or (epoch % every and epoch != epochs):
                continue
            value = monitor(self)
            log.debug("%s epoch %d: loss %.4f, validation %.4f", self.describe(), epoch, self.losses[-1], value)
            if best_state is None or value > self.best_value:
                self.best_epoch, self.best_value, best_state = epoch, value, self._state()
                stale = 0
            else:
                stale += 1
                if stale >= patience:
                    break
        if best_state is not None:
            self._load_state(best_state)

    def _setup(self, sequences: dict[str, list[str]]) -> None:
        """Build the model and the training data."""
        raise NotImplementedError

    def _train_epoch(self) -> float:
        """Train one epoch; return its mean loss."""
        raise NotImplementedError

    def _state(self) -> Any:
        """A copy of the trainable state."""
        raise NotImplementedError

    def _load_state(self, state: Any) -> None:
        raise NotImplementedError


class BPRMFScorer(IterativeScorer):
    """BPR matrix factorisation (Rendle et al. 2009) with an item bias, trained with Adam on sampled triples.

    Each epoch visits every (user, item) pair once with one uniformly sampled unseen item. A user unknown at fit time
    is folded in as the mean factor of their history items.

    Params:
        factors: Embedding size (64).
        reg: L2 weight on the embeddings in a triple (1e-3).
        lr: Adam learning rate (5e-3).
        batch_size: Triples per step (1024).
        epochs: Epochs (200; the maximum when tuned, with an evaluation every 5 and patience 4).
        seed: Seed of the initialisation, the shuffles and the negatives (0).
        threads: Torch CPU threads (1).
    """

    name: ClassVar[str] = "bprmf"
    grid: ClassVar[list[dict[str, Any]]] = [{"factors": f, "reg": r} for f in (32, 64) for r in (1e-4, 1e-3, 1e-2)]
    default_epochs: ClassVar[int] = 200
    default_eval_every: ClassVar[int] = 5
    default_patience: ClassVar[int] = 4

    def _setup(self, sequences: dict[str, list[str]]) -> None:
        import torch

        from knowrec.eval.neural import MF, seed_torch

        seed = int(self.params.get("seed", 0))
        seed_torch(seed, int(self.params.get("threads", 1)))
        x, users = _binary_matrix(sequences, self.index)
        self.user_index = {u: r for r, u in enumerate(users)}
        coo = x.tocoo()
        self._users = coo.row.astype(np.int64)
        self._items = coo.col.astype(np.int64)
        self._positive = x.toarray() > 0
        self._rng = np.random.default_rng(seed)
        self.model = MF(len(users), len(self.items), int(self.params.get("factors", 64)))
        self._opt = torch.optim.Adam(self.model.parameters(), lr=float(self.params.get("lr", 5e-3)))
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _train_epoch(self) -> float:
        from knowrec.eval.neural import bpr_epoch

        self._cache = None
        return bpr_epoch(
            self.model,
            self._opt,
            self._users,
            self._items,
            self._positive,
            self._rng,
            int(self.params.get("batch_size", 1024)),
            float(self.params.get("reg", 1e-3)),
        )

    def _state(self) -> Any:
        return copy.deepcopy(self.model.state_dict())

    def _load_state(self, state: Any) -> None:
        self.model.load_state_dict(state)
        self._cache = None

    def _factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._cache is None:
            self._cache = (
                self.model.user.weight.detach().numpy().astype(np.float64),
                self.model.item.weight.detach().numpy().astype(np.float64),
                self.model.bias.weight.detach().numpy().astype(np.float64).ravel(),
            )
        return self._cache

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        return self.score_many([user], [history])[0]

    def score_many(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        p, q, b = self._factors()
        rows = np.zeros((len(users), p.shape[1]))
        for r, (user, history) in enumerate(zip(users, histories, strict=True)):
            u = self.user_index.get(user)
            if u is not None:
                rows[r] = p[u]
            else:
                idx = _history_indices(self, history)
                if idx:
                    rows[r] = q[idx].mean(axis=0)
        return rows @ q.T + b


class SASRecScorer(IterativeScorer):
    """SASRec (Kang & McAuley 2018) on CPU: a causal transformer over the last ``max_len`` items of the history.

    The network and its training are :class:`knowrec.fitting.sequential.SequentialModel`, the pipeline's own
    sequential generator. Trained with next-item cross-entropy over the whole catalogue at every position (each
    fitting sequence is one training example), Adam, a fixed seed and ``threads`` torch threads. ``score_all``
    returns the logits after the last history item; the user id is not used, so a history the model never saw is
    scored the same way.

    Params:
        hidden: Embedding and model width (64).
        blocks: Transformer blocks (2).
        heads: Attention heads (1).
        dropout: Dropout rate of embeddings, attention and feed-forward (0.2).
        max_len: Longest history used (200).
        lr: Adam learning rate (1e-3, betas 0.9/0.98).
        batch_size: Users per step (32).
        epochs: Epochs (200; the maximum when tuned, with an evaluation every 5 and patience 3).
        seed: Seed of the initialisation, dropout and shuffles (0).
        threads: Torch CPU threads (1: on a busy 2-core machine two threads ran 3.5× slower).
    """

    name: ClassVar[str] = "sasrec"
    grid: ClassVar[list[dict[str, Any]]] = [{"hidden": 64, "dropout": d} for d in (0.2, 0.5)]
    default_epochs: ClassVar[int] = 200
    default_eval_every: ClassVar[int] = 5
    default_patience: ClassVar[int] = 3

    def _setup(self, sequences: dict[str, list[str]]) -> None:
        from knowrec.fitting.sequential import SequentialModel

        p = self.params
        self.model = SequentialModel(
            self.items,
            hidden=int(p.get("hidden", 64)),
            blocks=int(p.get("blocks", 2)),
            heads=int(p.get("heads", 1)),
            dropout=float(p.get("dropout", 0.2)),
            max_len=int(p.get("max_len", 200)),
            lr=float(p.get("lr", 1e-3)),
            batch_size=int(p.get("batch_size", 32)),
            seed=int(p.get("seed", 0)),
            threads=int(p.get("threads", 1)),
        )
        self.model.setup(sequences)

    def _train_epoch(self) -> float:
        return self.model.train_epoch()

    def _state(self) -> Any:
        return self.model.state()

    def _load_state(self, state: Any) -> None:
        self.model.load_state(state)

    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        return self.score_many([user], [history])[0]

    def score_many(self, users: Sequence[str], histories: Sequence[Sequence[str]], batch: int = 128) -> np.ndarray:
        return self.model.score_many(histories, batch).astype(np.float64)


BASELINES: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (RandomScorer, MostPopScorer, ItemKNNScorer, EASEScorer, BPRMFScorer, SASRecScorer)
}
"""The baselines by name."""


# ------------------------------------------------------------------------------------------------------ protocol


def tune(
    cls: type[Scorer],
    split: Split,
    metric: str = "NDCG@10",
    users: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
    grid: Sequence[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fit each grid setting on ``split.sequences("val")`` and rank the validation item (P2 full); pick the best.

    For an :class:`IterativeScorer` the epoch count is tuned as well (the chosen parameters carry ``epochs``).

    Args:
        cls: The scorer class.
        split: The leave-one-out split.
        metric: The mean metric to maximise (a key of :func:`summarize`).
        users: Users evaluated (default: all).
        progress: Called with one line per grid setting.
        grid: Settings to try instead of ``cls.grid``.

    Returns:
        The best parameters (the first of equals, in grid order) and one row per setting: ``params``, every mean
        metric of :func:`summarize`, and ``fit_s`` (seconds, including the monitoring evaluations).
    """
    users = list(split.users if users is None else users)
    sequences = split.sequences("val")
    table: list[dict[str, Any]] = []
    for params in grid if grid is not None else cls.grid:
        scorer = cls(**params)
        start = time.perf_counter()
        chosen = dict(params)
        if isinstance(scorer, IterativeScorer):

            def monitor(s: Scorer) -> float:
                return summarize(evaluate_full(s, split, "val", users))[metric]

            scorer.fit(sequences, split.items, monitor=monitor)
            chosen["epochs"] = scorer.best_epoch
        else:
            scorer.fit(sequences, split.items)
        fit_s = time.perf_counter() - start
        row = {"params": chosen, **summarize(evaluate_full(scorer, split, "val", users)), "fit_s": round(fit_s, 2)}
        table.append(row)
        line = f"{cls.name} {chosen}: {metric} {row[metric]:.4f} ({fit_s:.1f} s)"
        log.info(line)
        if progress is not None:
            progress(line)
    best = max(table, key=lambda r: r[metric])
    return dict(best["params"]), table


@dataclass
class BaselineRun:
    """One baseline tuned on validation and evaluated on test (P2 full)."""

    name: str
    params: dict[str, Any]
    table: list[dict[str, Any]]
    val: dict[str, float]
    test: dict[str, float]
    fit_s: float
    """Seconds to refit the chosen setting on train + validation."""
    ranks: dict[str, int | None] = field(repr=False, default_factory=dict)


def run_baseline(
    cls: type[Scorer],
    split: Split,
    metric: str = "NDCG@10",
    users: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
    grid: Sequence[dict[str, Any]] | None = None,
) -> BaselineRun:
    """:func:`tune`, then refit the chosen setting on ``split.sequences("test")`` and rank the test item."""
    users = list(split.users if users is None else users)
    params, table = tune(cls, split, metric, users, progress, grid)
    best = next(r for r in table if r["params"] == params)
    scorer = cls(**params)
    start = time.perf_counter()
    scorer.fit(split.sequences("test"), split.items)
    fit_s = time.perf_counter() - start
    ranks = evaluate_full(scorer, split, "test", users)
    val = {k: v for k, v in best.items() if k not in ("params", "fit_s")}
    return BaselineRun(cls.name, params, table, val, summarize(ranks), round(fit_s, 2), ranks)
