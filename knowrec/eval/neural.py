"""PyTorch parts of the BPR-MF baseline; imported lazily, since torch is optional.

SASRec lives in :mod:`knowrec.fitting.sequential` (one implementation for the pipeline and the baseline).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from knowrec.fitting.sequential import seed_torch

__all__ = ["MF", "bpr_epoch", "seed_torch"]


class MF(nn.Module):
    """Matrix factorisation with an item bias: ``score(u, i) = p_u · q_i + b_i``."""

    def __init__(self, n_users: int, n_items: int, factors: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, factors)
        self.item = nn.Embedding(n_items, factors)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.zeros_(self.bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user(users) * self.item(items)).sum(-1) + self.bias(items).squeeze(-1)


def bpr_epoch(
    model: MF,
    opt: torch.optim.Optimizer,
    users: np.ndarray,
    items: np.ndarray,
    positive: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
    reg: float,
) -> float:
    """One pass over the (user, item) pairs, each with one uniformly sampled item the user has not seen.

    Args:
        model: The factorisation being trained.
        opt: Its optimiser.
        users: User index of each positive pair.
        items: Item index of each positive pair.
        positive: Boolean user × item matrix of the positive pairs (to reject sampled negatives).
        rng: Source of the shuffle and of the negatives.
        batch_size: Triples per step.
        reg: L2 weight on the embeddings touched by a triple.

    Returns:
        The mean BPR loss of the epoch.
    """
    n_items = positive.shape[1]
    order = rng.permutation(len(users))
    u_all, i_all = users[order], items[order]
    j_all = rng.integers(0, n_items, size=len(u_all))
    bad = positive[u_all, j_all]
    while bad.any():
        j_all[bad] = rng.integers(0, n_items, size=int(bad.sum()))
        bad = positive[u_all, j_all]
    model.train()
    total = 0.0
    for start in range(0, len(u_all), batch_size):
        u = torch.from_numpy(u_all[start : start + batch_size])
        i = torch.from_numpy(i_all[start : start + batch_size])
        j = torch.from_numpy(j_all[start : start + batch_size])
        pu, qi, qj = model.user(u), model.item(i), model.item(j)
        x = (pu * (qi - qj)).sum(-1) + (model.bias(i) - model.bias(j)).squeeze(-1)
        loss = -nn.functional.logsigmoid(x).mean()
        penalty = reg * (pu.pow(2).sum(-1) + qi.pow(2).sum(-1) + qj.pow(2).sum(-1)).mean()
        opt.zero_grad()
        (loss + penalty).backward()
        opt.step()
        total += loss.item() * len(u)
    return total / max(len(u_all), 1)
