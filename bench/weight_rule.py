"""The LLM weight under the ``paired`` rule, from a finished run's cached validation and test lists.

Until 2026-12-07 the harness took the validation grid's best LLM weight even when it only tied with weight 0 (rule
``max``); a weight that ties on validation lost on the test item (P1 NDCG@10 0.687 against 0.729 for the tuned
adapter on held-out lists). The ``paired`` rule keeps a weight only if it beats weight 0 on the validation users in a
paired t-test at alpha / (non-zero weights tried). This script applies both rules to every LLM system of a run whose
validation lists are cached (no store, no LLM: the per-user lists hold the LLM's scores) and, where the new rule
chooses 0, reads the system's test numbers off ``no-llm``'s cached lists on the same users: at weight 0 the ranker
does not ask the LLM (``ranker.llm_weight``), so the lists are retrieval's, which is what ``no-llm`` serves.

    python bench/weight_rule.py bench/eval-tuned.toml [--out docs/benchmarks/tuned/weight-rule.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from knowrec.eval.config import PIPELINE_SYSTEMS, load_config
from knowrec.eval.harness import Harness, UserCache, choose_llm_weight, llm_weight_scores
from knowrec.eval.metrics import mean
from knowrec.eval.report import paired_test


def cached_ndcg(folder: Path, name: str, proto: str, users: list[str]) -> dict[str, float] | None:
    cache = UserCache(folder / name / f"{proto}.jsonl")
    if not all(cache.done(u) for u in users):
        return None
    return {u: float(cache.records[u]["metrics"]["NDCG@10"]) for u in users}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here (default: print it)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    harness = Harness(cfg)
    ctx = harness.load()
    folder = harness.out / "cache"
    systems = cfg.systems
    rows = []
    for name in systems.pipeline:
        spec = PIPELINE_SYSTEMS[name]
        val = UserCache(folder / name / "val-p2.jsonl")
        if not spec["llm"] or not val.records:
            continue
        scope = harness.tuned_users(ctx, name) if "tune" in spec else ctx.llm_users
        per_weight = llm_weight_scores({u: val.records[u] for u in scope}, ctx.split.val, systems.llm_weights)
        old = choose_llm_weight(per_weight, "max")
        new = choose_llm_weight(per_weight, "paired", systems.llm_weight_alpha)
        row: dict = {"system": name, "users": len(scope), "old": old["llm_weight"], "new": new["llm_weight"]}
        row["val_gain"] = mean(list(per_weight[new["best"]].values())) - mean(list(per_weight[0.0].values()))
        row["p_val"] = new.get("test", {}).get("p_t")
        row["threshold"] = new.get("threshold")
        for proto in ("p2", "p1"):
            recorded = cached_ndcg(folder, name, proto, scope)
            served = cached_ndcg(folder, "no-llm", proto, scope) if new["llm_weight"] == 0.0 else None
            if new["llm_weight"] == old["llm_weight"]:
                served = recorded
            row[f"{proto}_old"] = mean(list(recorded.values())) if recorded else None
            row[f"{proto}_new"] = mean(list(served.values())) if served else None
            baseline = cached_ndcg(folder, "no-llm", proto, scope)
            row[f"{proto}_no_llm"] = mean(list(baseline.values())) if baseline else None
            if recorded and served and recorded != served:
                row[f"{proto}_p_old_vs_new"] = paired_test(recorded, served)["p_t"]
        rows.append(row)

    def f(x: float | None, nd: int = 4) -> str:
        return "—" if x is None else f"{x:.{nd}f}"

    lines = [
        "| system | users | weight, rule max | weight, rule paired | best − 0 on validation | p (t, best vs 0) | "
        "threshold | P2 NDCG@10 max → paired | P1 NDCG@10 max → paired | no-llm P2 / P1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = "—" if r["p_val"] is None else f"{r['p_val']:.3g}"
        thr = "—" if r["threshold"] is None else f"{r['threshold']:.4f}"
        p2 = f"{f(r['p2_old'])} → {f(r['p2_new'])}"
        p1 = f"{f(r['p1_old'])} → {f(r['p1_new'])}"
        if r.get("p1_p_old_vs_new") is not None:
            p1 += f" (p = {r['p1_p_old_vs_new']:.2g})"
        if r.get("p2_p_old_vs_new") is not None:
            p2 += f" (p = {r['p2_p_old_vs_new']:.2g})"
        lines.append(
            f"| {r['system']} | {r['users']} | {r['old']} | {r['new']} | {r['val_gain']:+.4f} | {p} | {thr} | {p2} | "
            f"{p1} | {f(r['p2_no_llm'])} / {f(r['p1_no_llm'])} |"
        )
    table = "\n".join(lines)
    if args.out is None:
        print(table)
        print(json.dumps(rows, indent=1))
        return
    text = args.out.read_text() if args.out.exists() else ""
    start, end = "<!-- weight-rule table -->", "<!-- /weight-rule table -->"
    if start in text and end in text:
        text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end) :]
    else:
        text += f"\n{start}\n{table}\n{end}\n"
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
