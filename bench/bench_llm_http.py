"""LLM serving benchmark: rankings per second and latency over HTTP, per ranking mode and concurrency.

Starts ``python -m llama_cpp.server`` with the bundled SmolLM2 GGUF (the CPU stand-in for vLLM; or pass ``--url``),
ingests a slice of the demo data, then runs ``--rankings`` full recommendations per (mode, concurrency) with the
HTTP client (``llm.backend=http``), ``concurrency`` of them in flight at once.

Usage:
    python bench/bench_llm_http.py --modes verbalizer,listwise,pointwise --concurrency 1,2,4,8 --rankings 8 \
        --out docs/benchmarks

Writes ``llm_http.json`` and ``llm_http.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import cpu_name, pct

from knowrec import Recommender, Settings
from knowrec.agent.llm.llama_cpp import bundled_llm_path


def start_server(log: Path, n_ctx: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_llm_path()), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", "smollm2"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited: see {log}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"llama_cpp.server did not answer in 120 s: see {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="An OpenAI-compatible API root (…/v1); default: start llama_cpp.server here.")
    ap.add_argument("--dialect", default="llama_cpp")
    ap.add_argument("--modes", default="verbalizer,listwise,pointwise")
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--rankings", type=int, default=8, help="Rankings per (mode, concurrency).")
    ap.add_argument("--rerank-top", type=int, default=10, help="Candidates the LLM sees per ranking.")
    ap.add_argument("--users", type=int, default=20, help="Demo users to ingest (the first N).")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = ap.parse_args()
    modes = args.modes.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="knowrec-bench-llm-"))
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(tmp / "server.log", n_ctx=4096)
        say(f"llama_cpp.server at {url}")
    report: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "server": "llama_cpp.server (bundled SmolLM2-135M-Instruct Q4_1)" if args.url is None else url,
        "rerank_top": args.rerank_top,
        "rankings_per_level": args.rankings,
        "results": [],
    }
    try:
        base = {
            "data_dir": tmp / "data",
            "progress": False,
            "llm": {"backend": "http", "base_url": url, "dialect": args.dialect, "concurrency": max(levels)},
            "ranker": {"rerank_top": args.rerank_top},
        }
        rec = Recommender(Settings(**base))
        say(f"ingesting the first {args.users} demo users")
        rec.ingest_demo(max_users=args.users)
        users = sorted({x.user_id for x in rec.store.interactions()}, key=lambda u: (len(u), u))
        for mode in modes:
            for level in levels:
                picks = [users[i % len(users)] for i in range(args.rankings)]
                # distinct queries per ranking so that no answer is a cache hit of an earlier identical request
                jobs = [(u, f"something for evening {n}-{level}") for n, u in enumerate(picks)]
                say(f"{mode}: concurrency {level}, {len(jobs)} rankings")
                t0 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=level) as pool:
                    recs = list(pool.map(lambda j, m=mode: rec.recommend(j[0], k=10, query=j[1], mode=m), jobs))
                wall = time.perf_counter() - t0
                rank_ms = [r.timings_ms.get("rank", 0.0) for r in recs]
                total_ms = [r.timings_ms.get("total", 0.0) for r in recs]
                row = {
                    "mode": mode,
                    "concurrency": level,
                    "rankings": len(recs),
                    "wall_s": round(wall, 2),
                    "rankings_per_s": round(len(recs) / wall, 3),
                    "rank_ms_p50": round(pct(rank_ms, 50)),
                    "rank_ms_p95": round(pct(rank_ms, 95)),
                    "total_ms_p50": round(pct(total_ms, 50)),
                    "total_ms_p95": round(pct(total_ms, 95)),
                    "prompt_tokens_mean": round(float(np.mean([r.usage.get("prompt_tokens", 0) for r in recs])), 1),
                    "completion_tokens_mean": round(
                        float(np.mean([r.usage.get("completion_tokens", 0) for r in recs])), 1
                    ),
                    "fallbacks": sum(r.fallback for r in recs),
                    "model": recs[0].model if recs else "",
                }
                report["results"].append(row)
                say(json.dumps(row))
        close = getattr(rec.llm, "close", None)
        if close:
            close()
        rec.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm_http.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "llm_http.md").write_text(render(report))
    print(render(report))


def render(rep: dict[str, Any]) -> str:
    lines = [
        "# LLM over HTTP: rankings per second and latency by mode and concurrency",
        "",
        f"Command: `{rep['command']}`  ",
        f"Date: {rep['date']}, git {rep['git']}; {rep['machine']['cpu']}, {rep['machine']['cores']} cores. "
        f"Server: {rep['server']} on the same cores as the client. Each row: {rep['rankings_per_level']} full "
        f"recommendations (retrieval + LLM ranking of the top {rep['rerank_top']} + diversify + explain), that many "
        "in flight at once; `rank` is the LLM stage alone.",
        "",
        "| mode | concurrency | rankings/s | rank p50 ms | rank p95 ms | total p50 ms | total p95 ms | prompt tok | "
        "completion tok | fallbacks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rep["results"]:
        lines.append(
            f"| {r['mode']} | {r['concurrency']} | {r['rankings_per_s']:.3f} | {r['rank_ms_p50']:,} | "
            f"{r['rank_ms_p95']:,} | {r['total_ms_p50']:,} | {r['total_ms_p95']:,} | {r['prompt_tokens_mean']:,} | "
            f"{r['completion_tokens_mean']} | {r['fallbacks']} |"
        )
    by = {(r["mode"], r["concurrency"]): r for r in rep["results"]}
    speed = [
        f"concurrency {c}: {by[('verbalizer', c)]['rankings_per_s'] / by[('listwise', c)]['rankings_per_s']:.2f}×"
        for (m, c) in by
        if m == "verbalizer" and ("listwise", c) in by
    ]
    if speed:
        lines += ["", "Verbalizer over listwise, rankings per second: " + ", ".join(speed) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
