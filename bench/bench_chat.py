"""Chat benchmark: time per chat turn with the bundled model, then concurrent sessions against a real server.

1. In process: ``Recommender.chat`` over a scripted few-turn conversation, repeated in fresh sessions; p50/p95 per
   turn overall and per script position, and the time until the picks in retrieval order are shown (the
   ``ranking`` progress event, before the LLM reranks them).
2. Over HTTP: ``knowrec serve`` (uvicorn) on a free loopback port; 1, 4 and 16 clients, each in its own session,
   each sending a bounded number of turns back to back as streamed OpenAI chat completions
   (``POST /v1/chat/completions``, ``stream: true``, ``X-Session-Id``); time to the first content token and to the
   end of the answer, throughput and every error.

Usage:
    python bench/bench_chat.py                                   # ingests the demo slice (--max-users) first
    python bench/bench_chat.py --data-dir ~/.local/share/knowrec --repeats 5 --clients 1,4,16 --turns 2

The data dir is copied to a temporary folder first (chat writes sessions and feedback). Writes ``chat.json`` and
``chat.md`` into ``--out`` (default docs/benchmarks), with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _common import cpu_name, free_port

from knowrec import ChatProgress, Recommender, Settings

SCRIPT = (
    "recommend me some animated movies",
    "more",
    "something from the 90s",
    "no comedies please",
    "more like the first one",
)


def pct(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if len(values) else float("nan")


def summary(ms: Sequence[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "max_ms": round(max(ms), 1) if ms else 0.0}


def settings_for(data_dir: Path, mode: str | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"data_dir": data_dir, "progress": False}
    if mode:
        kw["ranker"] = {"mode": mode}
    return kw


def known_users(data_dir: Path) -> list[str]:
    rec = Recommender(Settings(data_dir=data_dir, progress=False))
    users = sorted({i.user_id for i in rec.store.interactions()}, key=lambda u: (len(u), u))
    rec.close()
    return users


def bench_sdk(
    data_dir: Path, script: Sequence[str], repeats: int, k: int, mode: str | None, users: Sequence[str]
) -> dict[str, Any]:
    rec = Recommender(Settings(**settings_for(data_dir, mode)))
    rec.chat(rec.new_session(), script[0], k=k)  # warm-up: loads the model, embedder and vocabulary
    per_turn: list[float] = []
    shown: list[float] = []
    by_pos: dict[int, list[float]] = {i: [] for i in range(len(script))}
    actions: dict[str, int] = {}
    for r in range(repeats):
        sid = rec.new_session(users[r % len(users)] if users else None)  # a different user each time: no repeats
        for i, msg in enumerate(script):
            t = time.perf_counter()

            def heard(ev: ChatProgress, t: float = t) -> None:
                if ev.stage == "ranking":
                    shown.append(1000 * (time.perf_counter() - t))

            turn = rec.chat(sid, msg, k=k, on_progress=heard)
            ms = 1000 * (time.perf_counter() - t)
            per_turn.append(ms)
            by_pos[i].append(ms)
            actions[turn.action] = actions.get(turn.action, 0) + 1
        print(f"sdk: conversation done, last turn {per_turn[-1]:.0f} ms", flush=True)
    model = rec.settings.llm.backend if rec.llm is None else rec.llm.model_id
    rec.close()
    return {
        "turns": summary(per_turn),
        "picks_shown": summary(shown),
        "by_message": [{"message": m, **summary(by_pos[i])} for i, m in enumerate(script)],
        "actions": actions,
        "model": model,
    }


def start_server(data_dir: Path, mode: str | None, log_path: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {**os.environ, "KNOWREC_PROGRESS": "false"}
    env.pop("KNOWREC_SERVER__API_KEY", None)
    if mode:
        env["KNOWREC_RANKER__MODE"] = mode
    cmd = [sys.executable, "-m", "knowrec.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    log = log_path.open("wb")
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"knowrec serve exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("knowrec serve did not start within 120 s")


def bench_http(
    base: str, clients: int, turns: int, script: Sequence[str], k: int, timeout_s: float, users: Sequence[str]
) -> dict[str, Any]:
    lat: list[float] = []
    first: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=base, timeout=timeout_s) as http:
            try:
                user = users[(clients + n) % len(users)] if users else None
                r = http.post("/v1/sessions", json={"user_id": user})
                r.raise_for_status()
                sid = r.json()["session_id"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                with lock:
                    errors.append(f"client {n}: new session: {exc!r}")
                return
            for i in range(turns):
                msg = script[i % len(script)]
                body = {"model": "knowrec", "messages": [{"role": "user", "content": msg}], "k": k, "stream": True}
                t = time.perf_counter()
                t_first: float | None = None
                err: str | None = None
                try:
                    with http.stream("POST", "/v1/chat/completions", json=body, headers={"X-Session-Id": sid}) as r:
                        if r.status_code != 200:
                            err = f"HTTP {r.status_code}: {r.read()[:200]!r}"
                        for line in r.iter_lines() if err is None else ():
                            if not line.startswith("data: {"):
                                continue
                            chunk = json.loads(line.removeprefix("data: "))
                            if "error" in chunk:
                                err = str(chunk["error"])[:200]
                            elif t_first is None and chunk["choices"][0]["delta"].get("content"):
                                t_first = time.perf_counter()
                except httpx.HTTPError as exc:
                    err = repr(exc)
                ms = 1000 * (time.perf_counter() - t)
                with lock:
                    if err is None:
                        lat.append(ms)
                        if t_first is not None:
                            first.append(1000 * (t_first - t))
                    else:
                        errors.append(f"client {n} turn {i}: {err}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    print(f"http: {clients} clients, {len(lat)} turns ok, {len(errors)} errors, {wall:.1f} s", flush=True)
    return {
        "clients": clients,
        "turns_per_client": turns,
        **summary(lat),
        "first_token": summary(first),
        "ok": len(lat),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 2),
        "turns_per_s": round(len(lat) / wall, 3) if wall else 0.0,
    }


def render(r: dict[str, Any]) -> str:
    sdk = r["sdk"]
    lines = [
        "# Chat benchmark",
        "",
        f"Produced by `{r['command']}` on {r['machine']['cpu']} ({r['machine']['cores']} cores), "
        f"{r['date']}; model `{sdk['model']}`, ranker mode `{r['ranker_mode']}`, k = {r['k']}, "
        f"data: {r['data']}.",
        "",
        "## Time per chat turn (in process, `Recommender.chat`)",
        "",
        f"{r['repeats']} scripted conversations of {len(r['script'])} turns each, after one warm-up turn; each "
        f"conversation is a session of a different known user (of {r['users']}), so no two answers are alike.",
        "",
        "| message | turns | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    shown = sdk.get("picks_shown", {})
    for row in sdk["by_message"]:
        lines.append(f"| {row['message']} | {row['n']} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} |")
    t = sdk["turns"]
    lines += [
        f"| **all turns** | {t['n']} | **{t['p50_ms']}** | **{t['p95_ms']}** | {t['max_ms']} |",
        f"| *picks shown* (retrieval order, before the LLM rerank) | {shown.get('n', 0)} | {shown.get('p50_ms')} | "
        f"{shown.get('p95_ms')} | {shown.get('max_ms')} |",
        "",
        "Actions taken: " + ", ".join(f"{a} {n}" for a, n in sorted(sdk["actions"].items())) + ".",
        "",
        "## Concurrent sessions over HTTP (`knowrec serve`, uvicorn on loopback)",
        "",
        "Each client opens its own session (a different known user) and sends its turns back to back as streamed "
        "OpenAI chat completions (`POST /v1/chat/completions`, `stream: true`, `X-Session-Id`); one warm-up turn "
        "first. *first token*: until the answer's first line arrives (sent once retrieval has run, before the LLM "
        "ranks); *answer*: until the stream ends.",
        "With the in-process model the server runs one LLM call at a time, so latency grows with the number of "
        "clients while throughput stays about flat; an LLM server (vLLM) lets calls overlap.",
        "",
        "| clients | turns/client | ok | errors | first token p50 ms | first token p95 ms | answer p50 ms | "
        "answer p95 ms | max ms | turns/s | wall s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in r["http"]:
        ft = h.get("first_token", {})
        lines.append(
            f"| {h['clients']} | {h['turns_per_client']} | {h['ok']} | {h['errors']} | {ft.get('p50_ms')} | "
            f"{ft.get('p95_ms')} | {h['p50_ms']} | {h['p95_ms']} | {h['max_ms']} | {h['turns_per_s']} | "
            f"{h['wall_s']} |"
        )
    errs = [e for h in r["http"] for e in h["error_samples"]]
    if errs:
        lines += ["", "Errors (first few):", "", *[f"- `{e}`" for e in errs]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None, help="An ingested data dir (default: ingest the demo).")
    ap.add_argument("--max-users", type=int, default=50, help="Without --data-dir: demo users to ingest.")
    ap.add_argument("--repeats", type=int, default=5, help="In-process scripted conversations.")
    ap.add_argument("--script", default="|".join(SCRIPT), help="The conversation, messages separated by |.")
    ap.add_argument("--clients", default="1,4,16", help="Concurrency levels for the HTTP part.")
    ap.add_argument("--turns", type=int, default=2, help="Turns per client in the HTTP part.")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--mode", default=None, help="Ranker mode (default: settings).")
    ap.add_argument("--timeout", type=float, default=1800.0, help="Per-request limit in the HTTP part (s).")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = ap.parse_args()
    script = [m.strip() for m in args.script.split("|") if m.strip()]

    with tempfile.TemporaryDirectory(prefix="knowrec-bench-chat-") as tmp:
        data_dir = Path(tmp) / "data"
        if args.data_dir is not None:
            shutil.copytree(args.data_dir.expanduser(), data_dir)
            data = f"copy of {args.data_dir}"
        else:
            t = time.perf_counter()
            Recommender(Settings(data_dir=data_dir, progress=False)).ingest_demo(max_users=args.max_users)
            data = f"bundled demo, first {args.max_users} users (ingested in {time.perf_counter() - t:.0f} s)"
        print("data:", data, flush=True)
        report: dict[str, Any] = {
            "command": "python " + shlex.join(["bench/bench_chat.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"),
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
            "data": data,
            "script": script,
            "repeats": args.repeats,
            "k": args.k,
            "ranker_mode": args.mode or Settings(data_dir=data_dir).ranker.mode,
        }
        users = known_users(data_dir)
        report["users"] = len(users)
        report["sdk"] = bench_sdk(data_dir, script, args.repeats, args.k, args.mode, users)
        report["http"] = []
        if not args.skip_http:
            base, proc = start_server(data_dir, args.mode, Path(tmp) / "server.log")
            try:
                warm = httpx.post(base + "/v1/sessions/warm-up/messages", json={"message": script[0]}, timeout=600)
                warm.raise_for_status()  # the server loads its model and vocabulary before anything is timed
                for c in [int(x) for x in args.clients.split(",") if x.strip()]:
                    report["http"].append(bench_http(base, c, args.turns, script, args.k, args.timeout, users))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chat.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "chat.md").write_text(render(report))
    print(f"wrote {args.out / 'chat.md'}", flush=True)


if __name__ == "__main__":
    main()
