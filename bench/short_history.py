"""Users who have said little: the pipeline on each evaluation user's last N items only.

A person new to knowrec who names three films they liked in the chat ("I liked Heat, Collateral and Thief") is a
user with a three-item history; the evaluation's users have 18 to 2,000. This replays that case on the evaluation's
own stores and split: for each user a new user "short:<id>" is written to a copy of the phase's store with the last
``--n`` items of the user's history (the same items the phase may see, nothing held out), and the pipeline ranks the
catalogue for it (``ranker.mode = "none"``, diversity 0, the top ``--depth``). The held-out item of the phase (the
validation item in ``val``, the test item in ``test``) is the target, as in P2.

Reported per phase, on all users: NDCG@10 and Recall@10 of

- ``pipeline``: the fused list as it is;
- ``popularity``: the most-interacted items of the phase's store (the n items left out);
- ``blend λ``: the two rankings fused by reciprocal rank, ``(1 − λ) / (60 + rank_pipeline) + λ / (60 + rank_pop)``,

and how well known the top 10 are (the median of their interaction counts). Choose λ on ``val``; read ``test``.

Usage:
    python bench/short_history.py [--config bench/eval-kg-clean.toml] --phase val --n 3 \
        --out docs/benchmarks/short-history
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from knowrec import Recommender, Settings
from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness
from knowrec.eval.report import paired_test
from knowrec.kg_store.base import GraphBatch
from knowrec.types import Interaction

LAMBDAS = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]


def ndcg_recall(ranked: list[str], target: str, k: int = 10) -> tuple[float, float]:
    top = ranked[:k]
    if target not in top:
        return 0.0, 0.0
    return 1.0 / math.log2(top.index(target) + 2), 1.0


def blend(pipeline: list[str], popular: list[str], lam: float) -> list[str]:
    score: dict[str, float] = {}
    for r, item in enumerate(pipeline, start=1):
        score[item] = score.get(item, 0.0) + (1 - lam) / (60 + r)
    for r, item in enumerate(popular, start=1):
        score[item] = score.get(item, 0.0) + lam / (60 + r)
    return sorted(score, key=lambda i: -score[i])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=Path("bench/eval-kg-clean.toml"))
    ap.add_argument("--phase", choices=["val", "test"], default="val")
    ap.add_argument("--n", type=int, default=3, help="history items kept per user (the last ones)")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--users", type=int, default=0, help="first N users only (0 = all)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/short-history"))
    args = ap.parse_args()

    cfg = load_config(args.config)
    ctx = Harness(cfg).load()
    split = ctx.split
    users = split.users[: args.users] if args.users else split.users
    src = cfg.run.out / "stores" / args.phase
    if not (src / "READY").is_file():
        raise SystemExit(f"{src}: no fitted stores (run `knowrec eval run {args.config}` first)")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="knowrec-short-") as tmp:
        data_dir = Path(tmp) / args.phase
        shutil.copytree(src, data_dir)
        rec = Recommender(Settings(data_dir=data_dir, progress=False, ranker={"mode": "none"}))
        counts = dict(rec.store.popular(1_000_000))  # before the short users are written
        popular = sorted(counts, key=lambda i: -counts[i])
        rows = [
            Interaction(user_id=f"short:{u}", item_id=item, rating=5.0, timestamp=1 + n)
            for u in users
            for n, item in enumerate(split.history(u, args.phase)[-args.n :])
        ]
        rec.store.write(GraphBatch(interactions=rows))
        per_user: dict[str, dict[str, Any]] = {}
        for u in users:
            history = split.history(u, args.phase)[-args.n :]
            target = split.target(u, args.phase)
            r = rec.recommend(f"short:{u}", k=args.depth, diversity=0.0)
            ranked = [it.item_id for it in r.items]
            pop = [i for i in popular if i not in set(history)][: args.depth]
            lists = {"pipeline": ranked, "popularity": pop}
            lists |= {f"blend {lam}": blend(ranked, pop, lam) for lam in LAMBDAS[1:-1]}
            per_user[u] = {
                name: dict(zip(("NDCG@10", "Recall@10"), ndcg_recall(ranked_, target), strict=True))
                for name, ranked_ in lists.items()
            }
            per_user[u]["known"] = {
                name: statistics.median(counts.get(i, 0) for i in ranked_[:10]) for name, ranked_ in lists.items()
            }
        rec.close()
    names = ["pipeline", "popularity", *(f"blend {lam}" for lam in LAMBDAS[1:-1])]
    summary: dict[str, Any] = {}
    for name in names:
        nd = [per_user[u][name]["NDCG@10"] for u in users]
        summary[name] = {
            "NDCG@10": round(statistics.fmean(nd), 4),
            "Recall@10": round(statistics.fmean(per_user[u][name]["Recall@10"] for u in users), 4),
            "top-10 median interactions (mean over users)": round(
                statistics.fmean(per_user[u]["known"][name] for u in users), 1
            ),
        }
        if name != "pipeline":
            summary[name]["vs pipeline NDCG@10"] = paired_test(
                {u: per_user[u][name]["NDCG@10"] for u in users}, {u: per_user[u]["pipeline"]["NDCG@10"] for u in users}
            )
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": f"python bench/short_history.py --config {args.config} --phase {args.phase} --n {args.n}"
        + (f" --users {args.users}" if args.users else ""),
        "phase": args.phase,
        "n": args.n,
        "users": len(users),
        "seconds": round(time.time() - t0, 1),
        "summary": summary,
    }
    (out / f"{args.phase}-n{args.n}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
