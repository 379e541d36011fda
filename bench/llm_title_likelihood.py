"""Does the bundled LLM know which film comes next? Its likelihood of each candidate's title after the user's history.

    python bench/llm_title_likelihood.py bench/eval-tuned.toml knowrec --p1-users 100 \
        --out docs/benchmarks/tuned/title-likelihood.md

A ranker that asks the model to pick a label (A, B, C…) reads mostly the labels' positions (``bench/llm_order.py``).
This scores each candidate with no labels at all: the log-probability of its title (``The Matrix (1999)``) as the
next line of a plain list of the user's last ``--history`` films, one forward pass over the shared history and one
batched pass over the 20 titles (torch, the bundled SmolLM2-135M). Three scores: that log-probability (``cond``),
and the pointwise mutual information with the title's log-probability after a neutral prefix, fully (``pmi``) or
half (``pmi½``) subtracted (the part of the likelihood that is the title's own prior: how often the web names it).

- P2: the 20 candidates retrieval reranks on the validation item (``<out>/cache/<system>/val-p2.jsonl`` of an eval
  run), for every user whose validation item is among them (the only lists a reranker can change): where the title
  likelihood puts that item, and NDCG@10 of its rank blend with retrieval's order at each weight (paired t-test
  against retrieval's order).
- P1: the validation item among 19 sampled catalogue items (``<out>/p1-candidates-val.json``), for ``--p1-users``
  users (seeded sample): the likelihood's NDCG@10 there against ordering by training popularity, and the Spearman
  correlation of the likelihood with the popularity of the candidates.

Per-user scores are kept in ``<out>/cache/title-likelihood/`` (a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from scipy import stats

from knowrec.agent.llm.llama_cpp import bundled_llm_path
from knowrec.agent.llm.torch_engine import TorchClient
from knowrec.agent.rank import display_title, fuse_scores
from knowrec.config import default_cache_dir
from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness
from knowrec.eval.metrics import ndcg_at, rank_in_list

NEUTRAL = "Here is a film:\n- "
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 1.0)
Row = dict[str, Any]


class TitleScorer:
    """Log-probability of each continuation after a shared prefix (one pass over the prefix, one batched pass)."""

    def __init__(self, threads: int) -> None:
        self.client = TorchClient(bundled_llm_path(), n_threads=threads, cache_dir=default_cache_dir() / "llm")
        self.model = self.client._load()  # a benchmark reads the loaded model directly
        self.prior: dict[str, float] = {}

    def logprobs(self, prefix: str, continuations: list[str]) -> list[float]:
        import torch

        pre = self.client.tokens(prefix)
        conts = [self.client.tokens(c) for c in continuations]
        width = max(len(c) for c in conts)
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([pre]), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].double(), dim=-1)
            cache = getattr(out, self.client._cache_arg)
            cache.batch_repeat_interleave(len(conts))
            ids = torch.zeros((len(conts), width), dtype=torch.long)
            mask = torch.zeros((len(conts), len(pre) + width), dtype=torch.long)
            mask[:, : len(pre)] = 1
            for b, c in enumerate(conts):
                ids[b, : len(c)] = torch.tensor(c)
                mask[b, len(pre) : len(pre) + len(c)] = 1
            kwargs = {self.client._cache_arg: cache}
            nxt = torch.log_softmax(
                self.model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).logits.double(), dim=-1
            )
        return [
            float(first[c[0]]) + sum(float(nxt[b, j - 1, c[j]]) for j in range(1, len(c))) for b, c in enumerate(conts)
        ]

    def score(self, history: list[str], items: list[str], titles: dict[str, str]) -> Row:
        prefix = "A film fan watched these films, in order:\n" + "".join(f"- {titles[h]}\n" for h in history) + "- "
        cond = self.logprobs(prefix, [titles[i] + "\n" for i in items])
        need = [i for i in items if i not in self.prior]
        if need:
            self.prior.update(zip(need, self.logprobs(NEUTRAL, [titles[i] + "\n" for i in need]), strict=True))
        return {"items": items, "cond": cond, "prior": [self.prior[i] for i in items]}


def scores_of(row: Row, kind: str) -> dict[str, float]:
    a = {"cond": 0.0, "pmi½": 0.5, "pmi": 1.0}[kind]
    return {i: c - a * p for i, c, p in zip(row["items"], row["cond"], row["prior"], strict=True)}


def order_of(scores: dict[str, float], items: list[str]) -> list[str]:
    return sorted(items, key=lambda i: (-scores[i], items.index(i)))


def run_users(scorer: TitleScorer, path: Path, jobs: list[tuple[str, list[str], list[str]]], titles: dict) -> dict:
    done: dict[str, Row] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["user"]] = r
    started, todo = time.perf_counter(), [j for j in jobs if j[0] not in done]
    with path.open("a") as fh:
        for n, (user, history, items) in enumerate(todo, 1):
            row = {"user": user, **scorer.score(history, items, titles)}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            done[user] = row
            if n % 25 == 0 or n == len(todo):
                print(f"  {path.stem}: {n}/{len(todo)} users, {(time.perf_counter() - started) / n:.2f} s each")
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("system", default="knowrec", nargs="?")
    ap.add_argument("--history", type=int, default=15, help="last films of the history in the prompt")
    ap.add_argument("--p1-users", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_config(args.config)
    ctx = Harness(cfg).load()
    split = ctx.split
    titles = {it.id: display_title(it.title) for it in ctx.dataset.items}
    cache = cfg.run.out / "cache" / "title-likelihood"
    cache.mkdir(parents=True, exist_ok=True)
    scorer = TitleScorer(args.threads)

    lists: dict[str, list[str]] = {}
    for line in (cfg.run.out / "cache" / args.system / "val-p2.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            lists[r["user"]] = r["retrieval"]
    inlist = [u for u in split.users if u in lists and split.val[u] in lists[u]]
    jobs = [(u, split.history(u, "val")[-args.history :], lists[u]) for u in inlist]
    p2 = run_users(scorer, cache / f"p2-h{args.history}.jsonl", jobs, titles)

    p1_cands = json.loads((cfg.run.out / "p1-candidates-val.json").read_text())
    p1_users = sorted(p1_cands, key=lambda u: (len(u), u))
    random.Random(cfg.run.seed).shuffle(p1_users)
    p1_users = p1_users[: args.p1_users]
    jobs = [(u, split.history(u, "val")[-args.history :], p1_cands[u]) for u in p1_users]
    p1 = run_users(scorer, cache / f"p1-h{args.history}.jsonl", jobs, titles)

    target = split.val
    n = len(next(iter(lists.values())))
    lines = [
        "# Does the bundled LLM know which film comes next? The likelihood of each candidate's title",
        "",
        f"`python bench/llm_title_likelihood.py {args.config} {args.system} --history {args.history} "
        f"--p1-users {args.p1_users}`: SmolLM2-135M (torch, fp32), the title of each candidate as the next line after "
        f"the user's last {args.history} films, no labels; `pmi` subtracts the title's log-probability after a neutral "
        "prefix (`pmi½` half of it). Validation item only.",
        "",
        f"**P2**: retrieval's {n} candidates (the run's cached validation lists of `{args.system}`) for the "
        f"{len(inlist)} of {len(lists)} users whose validation item is among them.",
        "",
        f"| score | mean position of the item (random {(n + 1) / 2:.1f}) | NDCG@10 alone | "
        + " | ".join(f"blend w={w}" for w in WEIGHTS)
        + " |",
        "|---|---:|---:|" + "---:|" * len(WEIGHTS),
    ]
    base = [ndcg_at(rank_in_list(lists[u], target[u]), 10) for u in inlist]
    pos_r = statistics.fmean(lists[u].index(target[u]) + 1 for u in inlist)
    lines.append(f"| retrieval's order | {pos_r:.2f} | {statistics.fmean(base):.4f} |" + " |" * len(WEIGHTS))
    for kind in ("cond", "pmi½", "pmi"):
        alone, cells = [], []
        for u in inlist:
            alone.append(order_of(scores_of(p2[u], kind), lists[u]).index(target[u]) + 1)
        for w in WEIGHTS:
            vals = []
            for u in inlist:
                fused = fuse_scores(lists[u], order_of(scores_of(p2[u], kind), lists[u]), w)
                vals.append(ndcg_at(rank_in_list(order_of(fused, lists[u]), target[u]), 10))
            d = statistics.fmean(vals) - statistics.fmean(base)
            cells.append(f"{d:+.4f} (p = {stats.ttest_rel(vals, base).pvalue:.2g})")
        nd = statistics.fmean(1.0 / math.log2(r + 1) if r <= 10 else 0.0 for r in alone)
        lines.append(f"| {kind} | {statistics.fmean(alone):.2f} | {nd:.4f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The blend cells are NDCG@10 minus retrieval's on those users (paired t-test); the users whose item is not "
        "among the candidates score 0 whatever the order, so over all users each difference shrinks by the share "
        f"of users listed ({len(inlist)}/{len(lists)}).",
        "",
    ]
    pop = Counter(i for seq in split.train.values() for i in seq)
    p1_rows = [p1[u] for u in p1_users]
    pop_nd = [
        ndcg_at(rank_in_list(order_of({i: pop[i] for i in r["items"]}, r["items"]), target[r["user"]]), 10)
        for r in p1_rows
    ]
    lines += [
        f"**P1**: the validation item among {len(p1_rows[0]['items']) - 1} sampled catalogue items, {len(p1_rows)} "
        f"users (seed {cfg.run.seed}). NDCG@10 ordering by training popularity: {statistics.fmean(pop_nd):.4f}.",
        "",
        "| score | NDCG@10 | vs popularity (p) | Spearman with training popularity, mean over users |",
        "|---|---:|---:|---:|",
    ]
    for kind in ("cond", "pmi½", "pmi"):
        nd = [ndcg_at(rank_in_list(order_of(scores_of(r, kind), r["items"]), target[r["user"]]), 10) for r in p1_rows]
        rho = statistics.fmean(
            stats.spearmanr([scores_of(r, kind)[i] for i in r["items"]], [pop[i] for i in r["items"]]).statistic
            for r in p1_rows
        )
        p = stats.ttest_rel(nd, pop_nd).pvalue
        lines.append(
            f"| {kind} | {statistics.fmean(nd):.4f} | {statistics.fmean(nd) - statistics.fmean(pop_nd):+.4f} "
            f"({p:.2g}) | {rho:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
