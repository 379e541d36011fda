"""LLM stage per engine and mode: rank-stage latency, prompt tokens, efficiency against a bare forward pass.

For each scoring engine (``torch``, ``llama_cpp``), prompt budget (``ranker.prompt_tokens``) and ranking mode, one
recommendation (k=10, the top 20 candidates reranked) per sampled user of the full bundled demo. Every prompt the
LLM scores is recorded; afterwards the same prompts are evaluated bare (a fresh forward pass of the whole prompt,
last position only, no prefix reuse, no memo) by each engine, so that

    efficiency = rank-stage time ÷ the fastest engine's bare forward pass over the same prompts

(1.0 = the rank stage costs exactly one bare pass over its prompt tokens; pointwise's prompts share a prefix, so it
can be below 1). Every configuration sees the same users in the same order, and the engines' label
log-probabilities on the same prompts are compared (the largest absolute gap is reported).

Usage:
    python bench/bench_llm_engines.py --data-dir /tmp/demo-full --users 30 --out docs/benchmarks

``--data-dir`` is a data dir holding the full demo (``knowrec demo`` or ``Recommender.ingest_demo``); without it the
demo is ingested into a temporary one first (~3 min). Writes ``llm-engines.json`` and ``llm-engines.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_name, pct

from knowrec import Recommender, Settings
from knowrec.agent.llm.llama_cpp import LlamaCppClient, bundled_llm_path
from knowrec.agent.llm.torch_engine import RoutedClient, TorchClient


class Recorder:
    """Wraps the LLM client of a Recommender and keeps every scored prompt (and its label set)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.prompts: list[tuple[str, list[str]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def label_logprobs(self, prompt: str, labels: list[str]) -> dict[str, float]:
        self.prompts.append((prompt, list(labels)))
        return self.inner.label_logprobs(prompt, labels)


def bare_torch(llm: TorchClient, prompt: str) -> float:
    import torch

    model = llm._load()
    ids = torch.tensor([llm.tokens(prompt)], dtype=torch.long)
    t = time.perf_counter()
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - t


def bare_cpp(llm: LlamaCppClient, prompt: str) -> float:
    inner = llm._load()
    tokens = llm._tokens(prompt)
    inner.reset()
    inner._ctx.kv_cache_clear() if hasattr(inner._ctx, "kv_cache_clear") else None
    t = time.perf_counter()
    inner.eval(tokens)
    took = time.perf_counter() - t
    inner.reset()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default="torch,llama_cpp")
    ap.add_argument("--modes", default="verbalizer,pointwise")
    ap.add_argument("--budgets", default="none,700", help="ranker.prompt_tokens values ('none' = no budget)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = ap.parse_args()

    report: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "threads": args.threads,
        "runs": [],
    }
    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="knowrec-engines-"))
        data_dir = tmp
        Recommender(Settings(data_dir=data_dir, progress=True, llm={"backend": "none"})).ingest_demo(progress=True)

    cache = Path(tempfile.gettempdir()) / "knowrec-bench-llm-cache"
    torch_llm = TorchClient(bundled_llm_path(), n_threads=args.threads, cache_dir=cache)
    cpp_llm = LlamaCppClient(bundled_llm_path(), n_threads=args.threads)
    t = time.perf_counter()
    torch_llm.verify()
    report["torch_load_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    cpp_llm.verify()
    report["llama_cpp_load_s"] = round(time.perf_counter() - t, 1)

    base = Recommender(Settings(data_dir=data_dir, progress=False, llm={"backend": "none"}))
    users = sorted({x.user_id for x in base.store.interactions()}, key=lambda u: (len(u), u))
    random.Random(args.seed).shuffle(users)
    users = users[: args.users]
    base.close()
    report["users"] = users

    every_prompt: dict[str, list[str]] = {}
    for budget_s in args.budgets.split(","):
        budget = None if budget_s == "none" else int(budget_s)
        for mode in args.modes.split(","):
            for engine in args.engines.split(","):
                settings = Settings(
                    data_dir=data_dir,
                    progress=False,
                    llm={"scoring_engine": engine, "n_threads": args.threads},
                    ranker={"mode": mode, "prompt_tokens": budget},
                )
                rec = Recommender(settings)
                client = RoutedClient(torch_llm, cpp_llm) if engine == "torch" else cpp_llm
                torch_llm._states.clear()
                torch_llm._memo.clear()
                cpp_llm._memo.clear()
                rec._llm = Recorder(client)
                rec.recommend(users[-1], k=10)  # warm-up (models, caches), not counted
                rec._llm.prompts.clear()
                rank_ms: list[float] = []
                total_ms: list[float] = []
                tokens: list[int] = []
                per_user_prompts: list[list[tuple[str, list[str]]]] = []
                for u in users:
                    before = len(rec._llm.prompts)
                    r = rec.recommend(u, k=10)
                    rank_ms.append(r.timings_ms.get("rank", 0.0))
                    total_ms.append(r.timings_ms.get("total", 0.0))
                    tokens.append(r.usage.get("prompt_tokens", 0))
                    per_user_prompts.append(rec._llm.prompts[before:])
                rec.close()
                key = f"{mode}|{budget_s}"
                if engine == args.engines.split(",")[0]:
                    every_prompt[key] = [p for ps in per_user_prompts for p, _ in ps]
                run = {
                    "engine": engine,
                    "mode": mode,
                    "prompt_tokens_budget": budget,
                    "rank_ms": {"p50": round(pct(rank_ms, 50), 1), "p95": round(pct(rank_ms, 95), 1)},
                    "recommend_ms": {"p50": round(pct(total_ms, 50), 1), "p95": round(pct(total_ms, 95), 1)},
                    "prompt_tokens": {"mean": round(statistics.mean(tokens), 1), "max": max(tokens)},
                    "calls_per_request": round(statistics.mean(len(p) for p in per_user_prompts), 1),
                    "_rank_ms": rank_ms,
                    "_prompts": per_user_prompts,
                }
                report["runs"].append(run)
                print(engine, mode, budget_s, run["rank_ms"], run["prompt_tokens"], flush=True)

    # bare forward passes over the same prompts, both engines; agreement of the label log-probabilities
    bare: dict[str, dict[str, float]] = {"torch": {}, "llama_cpp": {}}
    gaps: list[float] = []
    argmax_same = 0
    compared = 0
    for run in report["runs"]:
        if run["mode"] != "verbalizer":  # pointwise's 20 prompts per request would take most of the run bare
            continue
        for ps in run["_prompts"]:
            for prompt, labels in ps:
                if prompt in bare["torch"]:
                    continue
                bare["torch"][prompt] = bare_torch(torch_llm, prompt)
                bare["llama_cpp"][prompt] = bare_cpp(cpp_llm, prompt)
                if len(labels) > 4 and compared < 60:  # verbalizer prompts: compare the engines
                    torch_llm._memo.clear()
                    torch_llm._states.clear()
                    cpp_llm._memo.clear()
                    a = torch_llm.label_logprobs(prompt, labels)
                    b = cpp_llm.label_logprobs(prompt, labels)
                    gaps.append(max(abs(a[x] - b[x]) for x in labels))
                    argmax_same += int(max(labels, key=a.__getitem__) == max(labels, key=b.__getitem__))
                    compared += 1
    report["agreement"] = {
        "prompts": compared,
        "max_abs_logprob_gap": round(max(gaps), 4) if gaps else None,
        "median_max_gap": round(statistics.median(gaps), 4) if gaps else None,
        "same_argmax": argmax_same,
    }
    for run in report["runs"]:
        if run["mode"] != "verbalizer":
            run.pop("_prompts")
            run.pop("_rank_ms")
            run["bare_forward_ms_p50"] = None
            run["efficiency"] = None
            continue
        floor = []
        per_engine = {e: [] for e in bare}
        for ps in run.pop("_prompts"):
            secs = {e: sum(bare[e][p] for p, _ in ps) for e in bare}
            floor.append(min(secs.values()))
            for e in bare:
                per_engine[e].append(secs[e])
        rank_s = [ms / 1000 for ms in run.pop("_rank_ms")]
        eff = [r / f for r, f in zip(rank_s, floor, strict=True) if f > 0]
        run["bare_forward_ms_p50"] = {e: round(1000 * pct(v, 50), 1) for e, v in per_engine.items()}
        run["efficiency"] = {"p50": round(pct(eff, 50), 2), "p95": round(pct(eff, 95), 2)}
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm-engines.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "llm-engines.md").write_text(render(report))
    print(f"wrote {args.out / 'llm-engines.md'}")


def render(rep: dict[str, Any]) -> str:
    agree = rep["agreement"]
    lines = [
        "# LLM stage: engines, modes, prompt budget",
        "",
        f"- command: `{rep['command']}` (commit {rep['git']}, {rep['date']})",
        f"- machine: {rep['machine']['cpu']}, {rep['machine']['cores']} cores, Python {rep['machine']['python']}; "
        f"{rep['threads']} threads per engine",
        f"- the full bundled demo, {len(rep['users'])} users sampled with a fixed seed, one recommendation each (k=10, "
        "top 20 reranked, learned fusion, template reasons); one warm-up call per configuration not counted",
        f"- model loads: torch {rep['torch_load_s']} s (dequantised weights cached after the first load), "
        f"llama.cpp {rep['llama_cpp_load_s']} s",
        "- *efficiency* = rank-stage time ÷ the faster engine's bare forward pass (whole prompt, last position only, "
        "no reuse) over the same prompts",
        "",
        "| engine | mode | budget | prompt tokens (mean / max) | calls | rank p50 | rank p95 | recommend p50 "
        "| bare pass p50 torch / llama.cpp | efficiency p50 / p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rep["runs"]:
        b = r["bare_forward_ms_p50"]
        bare = f"{b['torch']:.0f} / {b['llama_cpp']:.0f} ms" if b else "–"
        eff = f"{r['efficiency']['p50']} / {r['efficiency']['p95']}" if r["efficiency"] else "–"
        lines.append(
            f"| {r['engine']} | {r['mode']} | {r['prompt_tokens_budget'] or 'none'} "
            f"| {r['prompt_tokens']['mean']:.0f} / {r['prompt_tokens']['max']} | {r['calls_per_request']} "
            f"| {r['rank_ms']['p50']:.0f} ms | {r['rank_ms']['p95']:.0f} ms | {r['recommend_ms']['p50']:.0f} ms "
            f"| {bare} | {eff} |"
        )
    lines += [
        "",
        f"Agreement of the engines on {agree['prompts']} verbalizer prompts (label log-probabilities of the same "
        f"prompt): largest gap {agree['max_abs_logprob_gap']}, median of the per-prompt largest gap "
        f"{agree['median_max_gap']}; the same top label on {agree['same_argmax']} of {agree['prompts']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
