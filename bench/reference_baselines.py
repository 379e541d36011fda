"""The reference table of BENCHMARKS.md, reproduced: MostPop, ItemKNN and EASE as that table defines them.

The table's ItemKNN is plain item-item cosine on binary interactions (every neighbour, no shrink) and its EASE has
λ = 50; our `itemknn` baseline tunes its neighbourhood on the validation item instead (small neighbourhoods win:
P2 NDCG@10 0.0399 against the plain cosine's 0.0255), so this script fixes the settings and runs the same harness
(leave-one-out by time, ties against the ground truth, fitted on train + validation item, all 610 users):

    python bench/reference_baselines.py [--out docs/benchmarks/reference]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from knowrec.eval.baselines import EASEScorer, ItemKNNScorer
from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness

# the independent implementation's numbers (BENCHMARKS.md): P2 NDCG@10, P2 Recall@10, P1 NDCG@10 (seed-dependent)
REFERENCE = {"mostpop": (0.0205, 0.0426, 0.488), "itemknn": (0.0255, 0.0557, 0.585), "ease": (0.0411, 0.0836, 0.640)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/reference"))
    args = ap.parse_args()
    ItemKNNScorer.grid = [{"k": None, "shrink": 0.0}]
    EASEScorer.grid = [{"lam": 50}]
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = args.out / "reference.toml"
    cfg.write_text(
        '[run]\nout = "run"\n[protocols]\nnames = ["p2", "p1"]\n'
        '[systems]\nbaselines = ["mostpop", "itemknn", "ease"]\npipeline = []\n'
    )
    res = Harness(load_config(cfg)).run()
    rows = [
        "| system | P2 NDCG@10 | reference | P2 Recall@10 | reference | P1 NDCG@10 | reference (±0.02) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (ndcg, recall, p1) in REFERENCE.items():
        m2 = res["systems"][name]["protocols"]["p2"]["metrics"]
        m1 = res["systems"][name]["protocols"]["p1"]["metrics"]
        rows.append(
            f"| {name} | {m2['NDCG@10']:.4f} | {ndcg:.4f} | {m2['Recall@10']:.4f} | {recall:.4f} "
            f"| {m1['NDCG@10']:.3f} | {p1:.3f} |"
        )
    table = "\n".join(rows)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "metrics.json").write_text(
        json.dumps({n: res["systems"][n]["protocols"] for n in REFERENCE}, indent=1, default=str) + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
