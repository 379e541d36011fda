"""What the harness evaluates: a :class:`Scorer` scores catalogue items for a user given their history."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

__all__ = ["Scorer"]


class Scorer(ABC):
    """A system under evaluation.

    ``fit`` sees only the sequences the phase allows (``Split.sequences(phase)``) and the catalogue; ``score_all``
    returns one score per catalogue item in the order given to ``fit`` (higher is better; the harness masks the
    user's history itself). ``grid`` lists the hyperparameter settings tried on the validation item.
    """

    name: ClassVar[str] = "scorer"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def fit(self, sequences: dict[str, list[str]], items: Sequence[str]) -> None:
        """Remember the catalogue, then train (``_fit``)."""
        self.items = list(items)
        self.index = {item: i for i, item in enumerate(self.items)}
        self._fit(sequences)

    @abstractmethod
    def _fit(self, sequences: dict[str, list[str]]) -> None: ...

    @abstractmethod
    def score_all(self, user: str, history: Sequence[str]) -> np.ndarray:
        """Scores of every catalogue item, shape ``(len(items),)``."""

    def score(self, user: str, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Scores of the given candidates (unknown ids get ``-inf``)."""
        full = self.score_all(user, history)
        return np.array([full[self.index[c]] if c in self.index else -np.inf for c in candidates], dtype=np.float64)

    def describe(self) -> str:
        return self.name + ("(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")" if self.params else "")
