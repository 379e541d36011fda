"""EASE (Steck 2019): a closed-form item-item model, fitted at ingest on the stored interactions."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from knowrec.types import Interaction

__all__ = ["EASE", "ease_weights"]

log = logging.getLogger(__name__)


def ease_weights(x: sp.spmatrix | np.ndarray, lam: float) -> np.ndarray:
    """EASE weights ``B = −P / diag(P)``, ``P = (XᵀX + λI)⁻¹``, zero diagonal, for a user × item matrix ``x``."""
    gram = np.asarray((x.T @ x).toarray() if sp.issparse(x) else x.T @ x, dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


class EASE:
    """Item-item weights ``B`` with zero diagonal; a user's scores are ``x_u · B``.

    Every interaction counts as a positive (ratings are ignored), as in the LlamaRec preprocessing.

    Example:
        >>> from knowrec.types import Interaction as I
        >>> rows = [I(user_id=u, item_id=i) for u, i in [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "2")]]
        >>> m = EASE.fit(rows, lam=1.0, min_count=1)
        >>> m.score(["1"])[0][0]
        '2'
    """

    def __init__(self, item_ids: Sequence[str], weights: np.ndarray, lam: float) -> None:
        self.item_ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.weights = weights
        self.lam = lam

    @classmethod
    def fit(
        cls, interactions: Iterable[Interaction], lam: float = 200.0, max_items: int = 6000, min_count: int = 2
    ) -> EASE:
        """Fit on (user, item) pairs; only the ``max_items`` most frequent items with ``min_count``+ users enter."""
        pairs = {(x.user_id, x.item_id) for x in interactions}
        counts = Counter(item for _, item in pairs)
        kept = [item for item, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        kept = sorted(kept[:max_items])
        index = {item: i for i, item in enumerate(kept)}
        users = sorted({u for u, item in pairs if item in index})
        uindex = {u: i for i, u in enumerate(users)}
        rows = [uindex[u] for u, item in pairs if item in index]
        cols = [index[item] for u, item in pairs if item in index]
        n = len(kept)
        if n == 0:
            return cls([], np.zeros((0, 0), dtype=np.float32), lam)
        x = sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(users), n))
        b = ease_weights(x, lam)
        log.debug("EASE fitted on %d users x %d items (lambda=%s)", len(users), n, lam)
        return cls(kept, b.astype(np.float32), lam)

    def scores_all(self, history: Sequence[str]) -> np.ndarray:
        """Scores of every item of :attr:`item_ids` for a user who interacted with ``history`` (zeros if none known)."""
        idx = [self.index[i] for i in set(history) if i in self.index]
        if not idx:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        return np.asarray(self.weights[idx].sum(axis=0))

    def score(
        self, history: Sequence[str], n: int | None = None, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[tuple[str, float]]:
        """Items scored for a user who interacted with ``history``; best first, history and ``exclude`` left out."""
        idx = [self.index[i] for i in set(history) if i in self.index]
        if not idx:
            return []
        scores = self.weights[idx].sum(axis=0)
        banned = set(history) | set(exclude)
        order = np.argsort(-scores, kind="stable")
        out: list[tuple[str, float]] = []
        for j in order:
            item = self.item_ids[j]
            if item in banned:
                continue
            out.append((item, float(scores[j])))
            if n is not None and len(out) >= n:
                break
        return out

    def save(self, path: Path) -> None:
        """Write to ``path`` (``.npz``) atomically: a temporary file renamed over the old one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, item_ids=np.array(self.item_ids, dtype=object), weights=self.weights, lam=self.lam)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> EASE:
        with np.load(path, allow_pickle=True) as data:
            return cls([str(i) for i in data["item_ids"]], data["weights"], float(data["lam"]))
