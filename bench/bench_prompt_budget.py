"""Does the prompt's token budget cost ranking accuracy? The LLM's own order, with and without the budget.

On the validation item of ``bench/eval-ml-latest-small.toml`` (its validation store, fitted on the training split),
every user is ranked by the verbalizer with ``llm_weight = 1`` (the final order is the LLM's alone, so the prompt is
all that differs) for each budget in ``--budgets``:

- P1: the same 20 fixed candidates per user (the validation item and 19 sampled negatives);
- P2: the pipeline's top 20 retrieved candidates (the LLM reorders them; the item may not be among them).

Per-user NDCG@10 of the two budgets are compared with a paired t-test and a Wilcoxon test; prompt tokens and rank
time are reported too. Results are cached per user (``--out/cache``), so an interrupted run resumes.

Usage:
    python bench/bench_prompt_budget.py --budgets 700,none --out docs/benchmarks/prompt-budget
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from scipy import stats

from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness, UserCache
from knowrec.eval.metrics import accuracy_metrics, rank_in_list

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "bench" / "eval-ml-latest-small.toml")
    ap.add_argument("--budgets", default="700,none")
    ap.add_argument("--users", type=int, default=None, help="the first N users (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "prompt-budget")
    ap.add_argument(
        "--summarise-only", action="store_true", help="write the report from the cache (users done in every budget)"
    )
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.summarise_only:
        write(summarise(args.budgets.split(","), Harness(cfg).load().users, args.out), args.out)
        return
    harness = Harness(cfg)
    ctx = harness.load()
    users = ctx.users[: args.users] if args.users else ctx.users
    budgets = args.budgets.split(",")
    started = time.time()
    # the budgets alternate user by user, so that an interrupted run still holds a paired sample
    recs = {}
    caches = {}
    for budget in budgets:
        value = None if budget == "none" else int(budget)
        recs[budget] = harness.recommender(ctx, "val", {"ranker": {"prompt_tokens": value, "llm_weight": 1.0}})
        caches[budget] = UserCache(args.out / "cache" / f"budget-{budget}.jsonl")
    for n, user in enumerate(users):
        for budget in budgets:
            if caches[budget].done(user):
                continue
            rec = recs[budget]
            target = ctx.split.val[user]
            cands = ctx.p1["val"][user]
            r1 = rec.recommend(user, k=len(cands), candidates=cands, diversity=0.0)
            r2 = rec.recommend(user, k=20, diversity=0.0)
            caches[budget].add(
                {
                    "user": user,
                    "p1_rank": rank_in_list([it.item_id for it in r1.items], target),
                    "p2_rank": rank_in_list([it.item_id for it in r2.items], target),
                    "tokens": [r1.usage.get("prompt_tokens", 0), r2.usage.get("prompt_tokens", 0)],
                    "rank_ms": [r1.timings_ms.get("rank", 0.0), r2.timings_ms.get("rank", 0.0)],
                    "fallback": r1.fallback or r2.fallback,
                }
            )
        if n % 25 == 0:
            print(f"{n}/{len(users)} users, {time.time() - started:.0f} s", flush=True)
    for rec in recs.values():
        rec.close()
    write(summarise(budgets, users, args.out), args.out)


def write(report: dict[str, Any], out: Path) -> None:
    report["command"] = "python " + " ".join(sys.argv)
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render(report))
    print(render(report))


def summarise(budgets: list[str], users: list[str], out: Path) -> dict[str, Any]:
    rows = {b: UserCache(out / "cache" / f"budget-{b}.jsonl").records for b in budgets}
    done = [u for u in users if all(u in rows[b] for b in budgets)]
    report: dict[str, Any] = {"users": len(done), "budgets": {}, "paired": {}}
    ndcg: dict[str, dict[str, list[float]]] = {}
    for b in budgets:
        r = [rows[b][u] for u in done]
        ndcg[b] = {p: [accuracy_metrics(x[f"{p}_rank"], (10,))["NDCG@10"] for x in r] for p in ("p1", "p2")}
        report["budgets"][b] = {
            "P1 NDCG@10": round(statistics.mean(ndcg[b]["p1"]), 4),
            "P2 NDCG@10": round(statistics.mean(ndcg[b]["p2"]), 4),
            "prompt tokens (mean, P2)": round(statistics.mean(x["tokens"][1] for x in r), 1),
            "rank ms (median, P2)": round(statistics.median(x["rank_ms"][1] for x in r), 1),
            "fallbacks": sum(1 for x in r if x["fallback"]),
        }
    if len(budgets) == 2:
        a, b = budgets
        for p in ("p1", "p2"):
            diff = [x - y for x, y in zip(ndcg[a][p], ndcg[b][p], strict=True)]
            t = stats.ttest_rel(ndcg[a][p], ndcg[b][p]) if any(diff) else None
            w = stats.wilcoxon(ndcg[a][p], ndcg[b][p]) if any(diff) else None
            report["paired"][p] = {
                "mean difference": round(statistics.mean(diff), 4),
                "p (t-test)": float(f"{t.pvalue:.2g}") if t else 1.0,
                "p (Wilcoxon)": float(f"{w.pvalue:.2g}") if w else 1.0,
            }
    return report


def render(rep: dict[str, Any]) -> str:
    budgets = list(rep["budgets"])
    lines = [
        "# Prompt token budget: the LLM's own ranking with and without it",
        "",
        f"- command: `{rep.get('command', '')}` ({rep.get('date', '')})",
        f"- ml-latest-small, validation item, {rep['users']} users, the bundled SmolLM2-135M (torch engine), "
        "verbalizer, `llm_weight = 1` (the order is the LLM's alone)",
        "- users: those done in every budget, in the evaluation's user order (an interrupted run is resumed by running "
        "the command again without `--summarise-only`)",
        "",
        "| budget | P1 NDCG@10 | P2 NDCG@10 | prompt tokens (mean, P2) | rank stage ms (median, P2) | fallbacks |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for b in budgets:
        r = rep["budgets"][b]
        lines.append(
            f"| {b} | {r['P1 NDCG@10']} | {r['P2 NDCG@10']} | {r['prompt tokens (mean, P2)']} "
            f"| {r['rank ms (median, P2)']} | {r['fallbacks']} |"
        )
    if rep["paired"]:
        lines += ["", f"Paired on the same users ({budgets[0]} − {budgets[1]}):", ""]
        lines += ["| protocol | mean NDCG@10 difference | p (t-test) | p (Wilcoxon) |", "|---|---:|---:|---:|"]
        for p, v in rep["paired"].items():
            lines.append(f"| {p.upper()} | {v['mean difference']} | {v['p (t-test)']} | {v['p (Wilcoxon)']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
