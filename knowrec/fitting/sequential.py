"""The sequential model: SASRec trained with cross-entropy over the catalogue (Klenitskiy & Vasilev, RecSys'23).

One implementation serves the pipeline's ``sequential`` candidate generator and the evaluation's ``sasrec`` baseline
(:class:`knowrec.eval.baselines.SASRecScorer` delegates to :class:`SequentialModel`).

Item indices outside the network are 0-based catalogue positions; the network shifts them by one so that 0 is
padding. Catalogues larger than ``full_softmax_max_items`` are trained with a sampled softmax: each batch shares
``negatives`` uniformly drawn items (a logQ-free approximation that keeps memory at ``batch × (negatives + 1)``).
PyTorch is imported here, so import this module only where the model is trained or scored.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from knowrec.errors import KnowrecError

__all__ = ["SASRec", "SequentialModel", "pad_left", "sasrec_epoch", "seed_torch"]

log = logging.getLogger(__name__)


def seed_torch(seed: int, threads: int) -> None:
    """Seed torch's global generator (init and dropout) and fix the CPU thread count, for repeatable training."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


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


class _SingleThread:
    """Who is inside :func:`_one_thread` now, and the torch thread count to restore when the last one leaves."""

    lock = threading.Lock()
    users = 0
    saved = 1


@contextlib.contextmanager
def _one_thread(wanted: bool) -> Iterator[None]:
    """Torch on one thread while inside (``wanted``), restored when the last concurrent caller leaves: the thread
    count is process-wide, so two requests scoring at once must not restore each other's setting."""
    if not wanted:
        yield
        return
    with _SingleThread.lock:
        if _SingleThread.users == 0:
            _SingleThread.saved = torch.get_num_threads()
            if _SingleThread.saved != 1:
                torch.set_num_threads(1)
        _SingleThread.users += 1
    try:
        yield
    finally:
        with _SingleThread.lock:
            _SingleThread.users -= 1
            if _SingleThread.users == 0 and torch.get_num_threads() != _SingleThread.saved:
                torch.set_num_threads(_SingleThread.saved)


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
    negatives: int = 0,
) -> float:
    """One pass over the users: next-item cross-entropy at every non-padding position.

    Users are batched by length (random tie-breaks, batches in random order) and each batch is cut to its longest
    sequence, which saves most of the padding.

    Args:
        model: The network being trained.
        opt: Its optimiser.
        inputs: Left-padded input tokens, one row per user.
        targets: The next token at each position (0 = no target).
        rng: Source of the shuffle (and of the sampled negatives).
        batch_size: Users per step.
        negatives: 0 = full softmax over the catalogue; otherwise that many items drawn uniformly per batch, shared
            by its positions (the target is always class 0; a negative equal to the target is masked out).

    Returns:
        The mean cross-entropy per predicted position.
    """
    model.train()
    n_items = model.item.num_embeddings - 1
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
        picked = states[where]
        if negatives and negatives < n_items:
            pos_tok = tgt[where]
            neg_tok = torch.from_numpy(rng.integers(1, n_items + 1, size=negatives))
            emb = model.item.weight
            pos = (picked * emb[pos_tok]).sum(-1, keepdim=True)
            neg = picked @ emb[neg_tok].T
            neg = neg.masked_fill(neg_tok.unsqueeze(0) == pos_tok.unsqueeze(1), float("-inf"))
            logits = torch.cat([pos, neg], dim=1)
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(pos_tok), dtype=torch.long))
        else:
            loss = nn.functional.cross_entropy(model.logits(picked), tgt[where] - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n = int(where.sum())
        total += loss.item() * n
        count += n
    return total / max(count, 1)


Monitor = Callable[["SequentialModel"], float]
"""Evaluates a partly trained model (higher is better), e.g. NDCG@10 of held-out next items."""


class SequentialModel:
    """A SASRec over a fixed catalogue: train epoch by epoch, score histories, save and load.

    Args:
        items: The catalogue, in the order scores are returned.
        hidden, blocks, heads, dropout, max_len: Network shape (LRURec's trainer: 64, 2, 1, 0.2, 200).
        lr: Adam learning rate (betas 0.9/0.98).
        batch_size: Users per step.
        seed: Seed of the initialisation, dropout, shuffles and negatives.
        threads: Torch CPU threads.
        negatives: Sampled-softmax negatives per batch, used when the catalogue has more than
            ``full_softmax_max_items`` items.
        full_softmax_max_items: Largest catalogue trained with the exact softmax.

    Example:
        >>> m = SequentialModel(["a", "b", "c"], hidden=8, max_len=4, seed=0)
        >>> m.setup({"u": ["a", "b", "c"], "v": ["a", "b"]})
        >>> loss = m.train_epoch()
        >>> m.score_many([["a"]]).shape
        (1, 3)
    """

    def __init__(
        self,
        items: Sequence[str],
        *,
        hidden: int = 64,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        max_len: int = 200,
        lr: float = 1e-3,
        batch_size: int = 32,
        seed: int = 0,
        threads: int = 1,
        negatives: int = 2048,
        full_softmax_max_items: int = 20_000,
    ) -> None:
        self.items = list(items)
        self.index = {item: i for i, item in enumerate(self.items)}
        self.params: dict[str, Any] = {
            "hidden": hidden,
            "blocks": blocks,
            "heads": heads,
            "dropout": dropout,
            "max_len": max_len,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "threads": threads,
            "negatives": negatives if len(self.items) > full_softmax_max_items else 0,
        }
        self.max_len = max_len
        self.threads = threads
        torch.manual_seed(seed)  # the initialisation; train_epoch() also fixes the thread count
        self.net = SASRec(len(self.items), max_len, hidden, blocks, heads, dropout)
        self.epochs_trained = 0
        self._rng = np.random.default_rng(seed)
        self._inputs: np.ndarray | None = None
        self._targets: np.ndarray | None = None
        self._opt: torch.optim.Optimizer | None = None

    # -- training -----------------------------------------------------------------------------------------------------
    def tokens(self, history: Sequence[str]) -> list[int]:
        """Network tokens of the known items of a history (oldest first), the last ``max_len`` of them."""
        return [self.index[i] + 1 for i in history if i in self.index][-self.max_len :]

    def setup(self, sequences: dict[str, list[str]]) -> None:
        """Build the training inputs (one row per sequence with two or more known items) and the optimiser."""
        tokens = [[self.index[i] + 1 for i in seq if i in self.index] for seq in sequences.values()]
        tokens = [t[-(self.max_len + 1) :] for t in tokens if len(t) >= 2]
        self._inputs = pad_left([t[:-1] for t in tokens], self.max_len)
        self._targets = pad_left([t[1:] for t in tokens], self.max_len)
        self._opt = torch.optim.Adam(self.net.parameters(), lr=float(self.params["lr"]), betas=(0.9, 0.98))

    def train_epoch(self) -> float:
        """One epoch over the sequences given to :meth:`setup`; returns its mean loss."""
        if self._opt is None or self._inputs is None or self._targets is None:
            raise KnowrecError("call setup() before train_epoch()")
        torch.set_num_threads(self.threads)
        if len(self._inputs) == 0:
            return 0.0
        loss = sasrec_epoch(
            self.net,
            self._opt,
            self._inputs,
            self._targets,
            self._rng,
            int(self.params["batch_size"]),
            int(self.params["negatives"]),
        )
        self.epochs_trained += 1
        return loss

    def fit(
        self,
        sequences: dict[str, list[str]],
        epochs: int,
        *,
        monitor: Monitor | None = None,
        eval_every: int = 1,
        patience: int = 3,
        on_epoch: Callable[[int, float, float | None], None] | None = None,
    ) -> tuple[int, float | None]:
        """Train up to ``epochs`` epochs; with ``monitor``, stop after ``patience`` evaluations without improvement
        and keep the best epoch's weights.

        Returns:
            ``(best epoch, its monitored value)`` (the last epoch and ``None`` without a monitor).
        """
        self.setup(sequences)
        best: tuple[int, float] | None = None
        best_state: Any = None
        stale = 0
        for epoch in range(1, epochs + 1):
            loss = self.train_epoch()
            value: float | None = None
            if monitor is not None and (epoch % eval_every == 0 or epoch == epochs):
                value = monitor(self)
                if best is None or value > best[1]:
                    best, best_state, stale = (epoch, value), self.state(), 0
                else:
                    stale += 1
            if on_epoch is not None:
                on_epoch(epoch, loss, value)
            if monitor is not None and stale >= patience:
                break
        if best is not None:
            self.load_state(best_state)
            self.epochs_trained = best[0]
            return best
        return epochs, None

    def state(self) -> Any:
        """A copy of the network weights."""
        return copy.deepcopy(self.net.state_dict())

    def load_state(self, state: Any) -> None:
        self.net.load_state_dict(state)

    # -- scoring ------------------------------------------------------------------------------------------------------
    def score_many(self, histories: Sequence[Sequence[str]], batch: int = 128) -> np.ndarray:
        """Scores ``(len(histories), len(items))``: the logits after each history's last known item (0 if none)."""
        tokens = [self.tokens(h) for h in histories]
        out = np.zeros((len(tokens), len(self.items)), dtype=np.float32)
        # Shortest first, each batch cut to its longest history (padding is masked, so this changes no score).
        order = [r for r in sorted(range(len(tokens)), key=lambda r: len(tokens[r])) if tokens[r]]
        self.net.eval()
        # One history (a recommendation) is too small a job for several threads: on a busy machine the extra
        # thread only adds waiting (a SASRec forward went from 4 ms to 75 ms with 2 threads on 2 shared cores).
        with _one_thread(len(order) <= 1), torch.inference_mode():
            for start in range(0, len(order), batch):
                rows = order[start : start + batch]
                chunk = [tokens[r] for r in rows]
                seqs = torch.from_numpy(pad_left(chunk, max(len(t) for t in chunk)))
                states = self.net(seqs)[:, -1, :]
                out[rows] = self.net.logits(states).numpy()
        return out

    def score(self, history: Sequence[str]) -> np.ndarray:
        """Scores of every catalogue item after ``history`` (oldest first)."""
        return self.score_many([history])[0]

    # -- persistence --------------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write weights, catalogue and parameters to ``path`` (one file), atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(
            {"items": self.items, "params": self.params, "epochs": self.epochs_trained, "state": self.net.state_dict()},
            buf,
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, threads: int | None = None) -> SequentialModel:
        data = torch.load(path, map_location="cpu", weights_only=True)
        params = dict(data["params"])
        negatives = int(params.pop("negatives"))
        if threads is not None:
            params["threads"] = threads
        model = cls(data["items"], **params, negatives=negatives or 2048)
        model.params["negatives"] = negatives
        model.net.load_state_dict(data["state"])
        model.net.eval()
        model.epochs_trained = int(data["epochs"])
        return model
