"""What the LLM's own order is worth on the validation item, from an eval run's cached LLM scores.

    python bench/llm_order.py bench/eval-tuned.toml knowrec-tuned [--out docs/benchmarks/tuned/llm-order.md]

Reads ``<out>/cache/<system>/val-p2.jsonl`` (per user: the retrieval order of the 20 reranked candidates and the
LLM's probability of each one's label; the prompt lists them in that order, labels A, B, C…, or, for a system with
``ranker.shuffle``, in :func:`~knowrec.agent.rank.shown_order`) and the run's split. Nothing is recomputed and no
model is loaded. It reports:

- NDCG@10 of the validation item for the rank blend of retrieval and the LLM at each weight (the harness's choice),
  over all users and over those whose item is among the 20 (the only lists a reranker can change);
- where the LLM's top pick sits in the list it was shown, and how its order correlates with that list's order
  (a model that reads only the labels' positions copies the order it is shown);
- the same blend after *contextual calibration*: each label's log-probability minus the mean log-probability of its
  position (in the order shown) over other users (two folds: the mean comes from one half of the users, the blend
  is scored on the other), which removes the position prior and leaves what the model says about the candidates.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scipy import stats

from knowrec.agent.rank import fuse_scores, shown_order
from knowrec.eval.config import PIPELINE_SYSTEMS, load_config
from knowrec.eval.harness import Harness
from knowrec.eval.metrics import ndcg_at, rank_in_list

Row = dict[str, Any]


def _logp(row: Row, item: str) -> float:
    return math.log(max(row["llm"].get(item) or 0.0, 1e-30))


def _blend(row: Row, score: Callable[[Row, str], float], w: float) -> list[str]:
    retr = row["retrieval"]
    s = {i: score(row, i) for i in retr}
    llm = sorted(retr, key=lambda i: -s[i])
    fused = fuse_scores(retr, llm, w)
    return sorted(retr, key=lambda i: -fused[i])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("system", default="knowrec-tuned", nargs="?")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_config(args.config)
    harness = Harness(cfg)
    ctx = harness.load()
    rows: dict[str, Row] = {}
    for line in (cfg.run.out / "cache" / args.system / "val-p2.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[r["user"]] = r
    scope = ctx.llm_users if args.system == "knowrec" else harness.tuned_users(ctx, args.system)
    users = [u for u in scope if u in rows and len(rows[u]["llm"]) == len(rows[u]["retrieval"]) >= 2]
    target = ctx.split.val
    shuffled = bool(PIPELINE_SYSTEMS[args.system]["settings"].get("ranker", {}).get("shuffle"))
    for row in rows.values():  # the order the prompt listed them in
        retr = row["retrieval"]
        row["shown"] = [retr[p] for p in shown_order(retr)] if shuffled else list(retr)
        row["pos"] = {i: p for p, i in enumerate(row["shown"])}
    inlist = [u for u in users if target[u] in rows[u]["retrieval"]]
    n = len(rows[users[0]]["retrieval"])

    def ndcg(u: str, score: Callable[[Row, str], float], w: float) -> float:
        return ndcg_at(rank_in_list(_blend(rows[u], score, w), target[u]), 10)

    raw = lambda row, i: _logp(row, i)  # noqa: E731
    # contextual calibration, two folds: the position prior of one half of the users, applied to the other half
    halves = [users[: len(users) // 2], users[len(users) // 2 :]]
    prior_of: dict[str, list[float]] = {}
    for k, half in enumerate(halves):
        other = halves[1 - k]
        prior = [statistics.fmean(_logp(rows[u], rows[u]["shown"][p]) for u in other) for p in range(n)]
        prior_of.update({u: prior for u in half})
    calibrated = lambda row, i: _logp(row, i) - prior_of[row["user"]][row["pos"][i]]  # noqa: E731

    lines = [
        f"# The LLM's order on the validation item: `{args.system}`",
        "",
        f"`python bench/llm_order.py {args.config} {args.system}`, from the run's cached validation pass (no model "
        f"loaded): {len(users)} users; the validation item is among the {n} reranked candidates for {len(inlist)} "
        "of them, the only lists a reranker can change.",
        "",
        "| LLM weight | NDCG@10, all users | among the 20 | p vs weight 0 | calibrated: all users | among the 20 | p |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = [ndcg(u, raw, 0.0) for u in inlist]

    def p_value(vals: list[float]) -> str:
        if vals == base:
            return "–"
        return f"{stats.ttest_rel(vals, base).pvalue:.2g}"

    for w in cfg.systems.llm_weights:
        cells = []
        for score in (raw, calibrated):
            vals = [ndcg(u, score, w) for u in inlist]
            cells += [
                f"{statistics.fmean(ndcg(u, score, w) for u in users):.4f}",
                f"{statistics.fmean(vals):.4f}",
                p_value(vals),
            ]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    tops = Counter(max(range(n), key=lambda p: rows[u]["llm"][rows[u]["shown"][p]]) for u in users)
    rho = statistics.fmean(
        stats.spearmanr(range(n), [-rows[u]["llm"][i] for i in rows[u]["shown"]]).statistic for u in users
    )
    rho_r = statistics.fmean(
        stats.spearmanr(range(n), [-rows[u]["llm"][i] for i in rows[u]["retrieval"]]).statistic for u in users
    )
    pos_r = statistics.fmean(rows[u]["retrieval"].index(target[u]) + 1 for u in inlist)
    pos_l = statistics.fmean(_blend(rows[u], raw, 1.0).index(target[u]) + 1 for u in inlist)
    pos_c = statistics.fmean(_blend(rows[u], calibrated, 1.0).index(target[u]) + 1 for u in inlist)
    lines += [
        "",
        f"- The LLM's top pick is the first candidate shown (label A) for {tops[0]} of {len(users)} users "
        f"(positions of the top pick in the order shown: {dict(sorted(tops.items()))}); Spearman correlation of its "
        f"order with the order shown, mean over users: {rho:.2f}; with retrieval's order: {rho_r:.2f}"
        + (" (the candidates were shown shuffled)." if shuffled else " (the same order here)."),
        f"- Among the 20, mean position of the validation item (1 = top): retrieval {pos_r:.2f}, the LLM's order "
        f"{pos_l:.2f}, the calibrated LLM's order {pos_c:.2f} (a random order: {(n + 1) / 2:.1f}).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
