"""Generation per engine: listwise ranking and chat profile extraction, both JSON-schema constrained.

The in-process model generates on llama.cpp (its grammar) or on PyTorch (``transformers`` ``generate`` with an
xgrammar logits processor). This measures both on the same requests of the full bundled demo, so the default
``llm.generation_engine`` is picked by measurement:

- listwise: one recommendation (k=10, the top 20 candidates reranked) per sampled user; rank-stage p50/p95, answers
  that needed a fallback, and how often the two engines return the same top-10 order;
- extraction: the chat's profile-extraction call on free-text messages (the call the chat makes when its rules leave
  words unread); latency p50/p95, valid answers, and agreement of the parsed profiles.

Usage:
    python bench/bench_llm_generation.py --data-dir /tmp/demo-full --users 20 --out docs/benchmarks

Writes ``llm-generation.json`` and ``llm-generation.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from _common import cpu_name, pct

from knowrec import ChatProfile, Recommender, Settings

MESSAGES = (
    "something with spaceships and a bit of romance",
    "I loved Heat, want more gritty crime but nothing too long",
    "a feel-good film for a rainy sunday with my kids",
    "dark psychological thrillers, no horror please",
    "old westerns with clint eastwood",
    "funny movies from the 80s like ghostbusters",
    "something by christopher nolan but not batman",
    "animated films that adults enjoy too",
)


def engine_settings(data_dir: Path, engine: str, mode: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        progress=False,
        ranker={"mode": mode},
        llm={"generation_engine": engine, "scoring_engine": "torch"},
        chat={"extract_with_llm": True},
    )


def run_engine(data_dir: Path, engine: str, users: list[str], messages: list[str]) -> dict[str, Any]:
    rec = Recommender(engine_settings(data_dir, engine, "listwise"))
    rec.recommend(users[0], k=10)  # warm-up: model, grammar compiler, caches
    rank_ms: list[float] = []
    orders: dict[str, list[str]] = {}
    fallbacks = 0
    for u in users:
        r = rec.recommend(u, k=10, diversity=0.0)
        rank_ms.append(r.timings_ms["rank"])
        orders[u] = [it.item_id for it in r.items]
        fallbacks += int(r.fallback)
    agent = rec._chat_agent
    vocab = agent.vocab()
    ext_ms: list[float] = []
    parsed: dict[str, Any] = {}
    failed = 0
    for msg in messages:
        t = time.perf_counter()
        delta = agent._llm_delta(msg, vocab, ChatProfile(), [])
        ext_ms.append(1000 * (time.perf_counter() - t))
        failed += int(delta is None)
        parsed[msg] = None if delta is None else delta.__dict__
    model = rec.llm.model_id if rec.llm is not None else "none"
    rec.close()
    print(f"{engine}: listwise p50 {pct(rank_ms, 50)} ms, extraction p50 {pct(ext_ms, 50)} ms", flush=True)
    return {
        "engine": engine,
        "model": model,
        "listwise": {"p50_ms": pct(rank_ms, 50), "p95_ms": pct(rank_ms, 95), "fallbacks": fallbacks},
        "extraction": {"p50_ms": pct(ext_ms, 50), "p95_ms": pct(ext_ms, 95), "failed": failed},
        "orders": orders,
        "parsed": parsed,
    }


def render(rep: dict[str, Any]) -> str:
    a = rep["engines"][0]
    lines = [
        "# Generation per engine (JSON-schema constrained)",
        "",
        f"Produced by `{rep['command']}` on {rep['machine']['cpu']} ({rep['machine']['cores']} cores), {rep['date']}; "
        f"model `{a['model']}`; {rep['users']} users of the full demo (seed {rep['seed']}), "
        f"{len(rep['messages'])} free-text chat messages.",
        "",
        "| engine | listwise rank p50 ms | p95 ms | fallbacks | extraction p50 ms | p95 ms | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in rep["engines"]:
        lw, ex = e["listwise"], e["extraction"]
        lines.append(
            f"| {e['engine']} | {lw['p50_ms']:.0f} | {lw['p95_ms']:.0f} | {lw['fallbacks']} | {ex['p50_ms']:.0f} | "
            f"{ex['p95_ms']:.0f} | {ex['failed']} |"
        )
    lines += [
        "",
        f"Same top-10 list from both engines: {rep['same_order']} of {rep['users']} users; same parsed profile: "
        f"{rep['same_profile']} of {len(rep['messages'])} messages (greedy decoding on the same weights; llama.cpp "
        "quantises activations in its matrix products, torch runs fp32, so near-ties can break differently).",
        "",
        "listwise: one `recommend(k=10)` per user, the top 20 candidates reranked by the LLM's generated order "
        "(rank stage only). extraction: `ChatAgent._llm_delta` on each message (prompt + constrained JSON).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, help="A data dir holding the full demo.")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default="llama_cpp,torch")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    ap.add_argument("--render-only", action="store_true", help="Rewrite the .md from the .json in --out.")
    args = ap.parse_args()
    if args.render_only:
        (args.out / "llm-generation.md").write_text(render(json.loads((args.out / "llm-generation.json").read_text())))
        return
    if args.data_dir is None:
        ap.error("--data-dir is required")
    probe = Recommender(Settings(data_dir=args.data_dir, progress=False, llm={"backend": "none"}))
    all_users = sorted({i.user_id for i in probe.store.interactions()}, key=lambda u: (len(u), u))
    probe.close()
    users = random.Random(args.seed).sample(all_users, min(args.users, len(all_users)))
    messages = list(MESSAGES)
    engines = [run_engine(args.data_dir, e, users, messages) for e in args.engines.split(",")]
    a, b = engines[0], engines[-1]
    rep = {
        "command": "python " + shlex.join(["bench/bench_llm_generation.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "users": len(users),
        "seed": args.seed,
        "messages": messages,
        "engines": engines,
        "same_order": sum(a["orders"][u] == b["orders"][u] for u in users),
        "same_profile": sum(a["parsed"][m] == b["parsed"][m] for m in messages),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm-generation.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    (args.out / "llm-generation.md").write_text(render(rep))
    print(f"wrote {args.out / 'llm-generation.md'}", flush=True)


if __name__ == "__main__":
    main()
