"""Reproduce the reference baseline numbers of the design's ``BENCHMARKS.md`` (P2 full ranking, ml-latest-small).

Protocol: ``preprocess(load_demo().interactions)`` then ``leave_one_out``; each baseline's grid is tuned on the
validation item (fit on the training sequences, history = train), the chosen setting is refitted on train +
validation item and ranks the test item against the catalogue minus that history; ties count against the target.

Usage:
    python bench/check_baselines.py                       # mostpop, itemknn, ease (about a minute)
    python bench/check_baselines.py --trained             # + bprmf and sasrec (tens of minutes on 2 CPU cores)
    python bench/check_baselines.py --only ease --json out.json
    python bench/check_baselines.py --only mostpop --variants   # + which protocol variant the reference used

Exits 1 when a reference number is missed by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from knowrec.datasets import load_demo
from knowrec.eval.baselines import BASELINES, evaluate_full, run_baseline, summarize
from knowrec.eval.data import Split, leave_one_out, preprocess
from knowrec.eval.metrics import ndcg_at

# Independent implementation, same preprocessing and split, P2 over all 610 users, pessimistic ties.
REFERENCE: dict[str, dict[str, float]] = {
    "mostpop": {"NDCG@10": 0.0205, "Recall@10": 0.0426},
    "itemknn": {"NDCG@10": 0.0255, "Recall@10": 0.0557},
    "ease": {"NDCG@10": 0.0411, "Recall@10": 0.0836},
}
# The reference ItemKNN row is untuned plain cosine (all neighbours, no shrinkage): that setting is what is checked;
# our tuned ItemKNN (which prunes neighbours) is printed beside it.
UNTUNED: dict[str, dict[str, Any]] = {"itemknn": {"k": None, "shrink": 0.0}}
# Published anchors (LlamaRec's table, same data and protocol); shown for orientation, not checked.
ANCHORS: dict[str, dict[str, float]] = {"sasrec": {"NDCG@10": 0.0522, "Recall@10": 0.0993}}


def _cells(test: dict[str, float], ref: dict[str, float] | None) -> str:
    cells = []
    for metric in ("NDCG@10", "Recall@10"):
        cells.append(f"{metric} {test[metric]:.4f}" + (f" (ref {ref[metric]:.4f})" if ref else ""))
    return " · ".join(cells)


def _misses(name: str, test: dict[str, float], tolerance: float) -> list[str]:
    ref = REFERENCE[name]
    return [f"{name} {m}" for m in ("NDCG@10", "Recall@10") if abs(test[m] - ref[m]) > tolerance]


def variants(split: Split) -> dict[str, dict[str, float]]:
    """Test NDCG@10 of the reference settings under protocol variants, to show which protocol the reference used.

    ``protocol``: refit on train + validation, history masked, pessimistic ties (what we use). ``no-refit``: the
    model fitted on train only ranks with history train + validation. ``optimistic``: ties count for the target.
    ``unmasked``: history items stay candidates. ``random-ties``: ties broken uniformly at random (expected rank).
    """
    out: dict[str, dict[str, float]] = {}
    settings: dict[str, dict[str, Any]] = {"mostpop": {}, "itemknn": {"k": None, "shrink": 0.0}, "ease": {"lam": 50}}
    for name, params in settings.items():
        row: dict[str, float] = {}
        for fit_phase in ("test", "val"):
            scorer = BASELINES[name](**params)
            scorer.fit(split.sequences(fit_phase), split.items)
            kinds = ["protocol", "optimistic", "unmasked", "random-ties"] if fit_phase == "test" else ["no-refit"]
            for kind in kinds:
                ndcg = []
                for user in split.users:
                    history = split.history(user, "test")
                    scores = scorer.score_all(user, history)
                    target = scorer.index[split.test[user]]
                    valid = np.ones(len(scores), dtype=bool)
                    if kind != "unmasked":
                        valid[[scorer.index[i] for i in history]] = False
                    valid[target] = False
                    above = int((valid & (scores > scores[target])).sum())
                    ties = int((valid & (scores == scores[target])).sum())
                    if kind == "optimistic":
                        ndcg.append(ndcg_at(above, 10))
                    elif kind == "random-ties":
                        ndcg.append(float(np.mean([ndcg_at(above + t, 10) for t in range(ties + 1)])))
                    else:
                        ndcg.append(ndcg_at(above + ties, 10))
                row[kind] = round(float(np.mean(ndcg)), 4)
        out[name] = row
        print(f"variants {name:8s} NDCG@10 " + " · ".join(f"{k} {v:.4f}" for k, v in row.items()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trained", action="store_true", help="also run bprmf and sasrec")
    parser.add_argument("--only", nargs="+", choices=sorted(BASELINES), help="run just these baselines")
    parser.add_argument("--tolerance", type=float, default=0.002)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--variants", action="store_true", help="also score protocol variants (which one matches)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    names = args.only or ["mostpop", "itemknn", "ease", *(["bprmf", "sasrec"] if args.trained else [])]
    start = time.perf_counter()
    split = leave_one_out(preprocess(load_demo().interactions))
    print(f"data: {split.stats()} ({time.perf_counter() - start:.1f} s)")

    results: dict[str, Any] = {}
    failed: list[str] = []
    for name in names:
        start = time.perf_counter()
        run = run_baseline(BASELINES[name], split, progress=lambda line: print("  tune", line, flush=True))
        total = time.perf_counter() - start
        results[name] = {
            "params": run.params,
            "val": run.val,
            "test": run.test,
            "grid": run.table,
            "refit_s": run.fit_s,
            "total_s": round(total, 1),
        }
        checked = name in REFERENCE and name not in UNTUNED
        ref = (REFERENCE.get(name) if checked else None) or ANCHORS.get(name)
        print(f"{name:8s} {run.params}: {_cells(run.test, ref)}  [refit {run.fit_s:.1f} s, total {total:.0f} s]")
        if checked:
            failed += _misses(name, run.test, args.tolerance)
        if name in UNTUNED:
            plain = BASELINES[name](**UNTUNED[name])
            plain.fit(split.sequences("test"), split.items)
            m = summarize(evaluate_full(plain, split, "test"))
            results[f"{name}_untuned"] = {"params": plain.params, "test": m}
            print(f"{name:8s} untuned {plain.params}: {_cells(m, REFERENCE[name])}")
            failed += _misses(name, m, args.tolerance)

    if args.variants:
        results["variants"] = variants(split)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if failed:
        print("outside tolerance:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
