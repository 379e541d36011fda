"""PyTorch parts of the trained baselines (BPR-MF and SASRec); imported lazily, since torch is optional.

Item indices here are 0-based catalogue positions; SASRec shifts them by one internally so that 0 is padding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["MF", "SASRec", "bpr_epoch", "pad_left", "sasrec_epoch", "seed_torch"]


def seed_torch(seed: int, threads: int) -> None:
    """Seed torch's global generator (init and dropout) and fix the CPU thread count, for repeatable training."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


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


class _Block(nn.Module):
    """One SASRec block: pre-normalised causal self-attention, then a point-wise feed-forward net."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        out, _ = self.attn(q, x, x, attn_mask=blocked, need_weights=False)
        x = q + out
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * keep


class SASRec(nn.Module):
    """SASRec (Kang & McAuley 2018): a causal transformer over the item sequence; logits share the item embeddings.

    Input sequences are left-padded with 0 to any length up to ``max_len``; item ``i`` of the catalogue is token
    ``i + 1``. Positions count back from the end (the last item always has the last positional embedding) and
    padding is masked out of attention, so the states of real items do not depend on how much padding there is.
    Parameters are initialised with Xavier normal, as in the reference PyTorch port.
    """

    def __init__(self, n_items: int, max_len: int, hidden: int, blocks: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.max_len = max_len
        self.hidden = hidden
        self.heads = heads
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden, eps=1e-8)
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_normal_(param)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(batch, length, hidden)`` of left-padded token sequences ``(batch, length)``."""
        length = seqs.shape[1]
        pad = seqs == 0
        keep = (~pad).unsqueeze(-1).to(torch.float32)
        x = self.item(seqs) * math.sqrt(self.hidden)
        x = x + self.pos.weight[self.max_len - length :].unsqueeze(0)
        x = self.drop(x) * keep
        # True = may not attend: later positions and padding; every position may attend to itself (no empty rows).
        blocked = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1).unsqueeze(0) | pad.unsqueeze(1)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool).unsqueeze(0)
        blocked = blocked.repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, blocked, keep)
        return self.norm(x)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Scores of every catalogue item (padding token excluded) for hidden states ``(..., hidden)``."""
        return states @ self.item.weight[1:].T


def pad_left(seqs: list[list[int]], length: int) -> np.ndarray:
    """Left-pad (or left-truncate) token sequences to ``length`` with 0.

    Example:
        >>> pad_left([[1, 2], [3, 4, 5, 6]], 3).tolist()
        [[0, 1, 2], [4, 5, 6]]
    """
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:]
        if tail:
            out[row, length - len(tail) :] = tail
    return out


def sasrec_epoch(
    model: SASRec,
    opt: torch.optim.Optimizer,
    inputs: np.ndarray,
    targets: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
) -> float:
    """One pass over the users: next-item cross-entropy over the whole catalogue at every non-padding position.

    Users are batched by length (random tie-breaks, batches in random order) and each batch is cut to its longest
    sequence, which saves most of the padding.

    Args:
        model: The network being trained.
        opt: Its optimiser.
        inputs: Left-padded input tokens, one row per user.
        targets: The next token at each position (0 = no target).
        rng: Source of the shuffle.
        batch_size: Users per step.

    Returns:
        The mean cross-entropy per predicted position.
    """
    model.train()
    lengths = (targets > 0).sum(axis=1)
    by_length = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [by_length[s : s + batch_size] for s in range(0, len(by_length), batch_size)]
    total, count = 0.0, 0
    for b in rng.permutation(len(batches)):
        rows = batches[b]
        width = max(int(lengths[rows].max()), 1)
        seqs = torch.from_numpy(inputs[rows, -width:])
        tgt = torch.from_numpy(targets[rows, -width:])
        states = model(seqs)
        where = tgt > 0
        logits = model.logits(states[where])
        loss = nn.functional.cross_entropy(logits, tgt[where] - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n = int(where.sum())
        total += loss.item() * n
        count += n
    return total / max(count, 1)
