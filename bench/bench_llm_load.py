"""How long the in-process torch engine takes to load the bundled model: the first load ever (from the GGUF, which
transformers reads and dequantises) and every later one (the dequantised weights kept in the cache folder).

Each load runs in a fresh process with an empty (first) or filled (later) cache folder. ``--unshared`` also times
the first load without :func:`knowrec.agent.llm.torch_engine._gguf_read_once` (transformers then parses the GGUF
three times and rebuilds gguf's tensor name map per module: the load as it was before), in the same run.

    python bench/bench_llm_load.py --repeats 3 --unshared --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_name


def _child(cache: str, unshared: bool, threads: int) -> None:
    from knowrec.agent.llm import torch_engine
    from knowrec.agent.llm.llama_cpp import bundled_llm_path

    if unshared:
        torch_engine._gguf_read_once = contextlib.nullcontext  # type: ignore[assignment]
    llm = torch_engine.TorchClient(bundled_llm_path(), n_threads=threads, cache_dir=Path(cache))
    t = time.perf_counter()
    import torch  # noqa: F401
    import transformers  # noqa: F401

    imports = time.perf_counter() - t
    llm.verify()
    seconds = time.perf_counter() - t
    probe = llm.label_logprobs(llm.format_chat([{"role": "user", "content": "A or B?"}]), ["A", "B"])
    print(json.dumps({"seconds": seconds, "imports": imports, "probe": probe}))


def _load(cache: Path, unshared: bool, threads: int) -> dict[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, __file__, "--child", str(cache), "--threads", str(threads)]
    out = subprocess.run(cmd + (["--unshared"] if unshared else []), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--unshared", action="store_true", help="also time the first load as it was before")
    ap.add_argument("--out", type=Path, default=None, help="folder for llm-load.md / .json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child, args.unshared, args.threads)
        return

    rows: dict[str, list[float]] = {"first (GGUF)": [], "later (cached)": []}
    if args.unshared:
        rows["first (GGUF), unshared reads"] = []
    probes = []
    imports: list[float] = []
    for n in range(args.repeats):
        for unshared in [False, True] if args.unshared else [False]:
            with tempfile.TemporaryDirectory(prefix="knowrec-load-") as tmp:
                first = _load(Path(tmp), unshared, args.threads)
                imports.append(first["imports"])
                rows["first (GGUF), unshared reads" if unshared else "first (GGUF)"].append(first["seconds"])
                probes.append(first["probe"])
                if not unshared:
                    later = _load(Path(tmp), False, args.threads)
                    imports.append(later["imports"])
                    rows["later (cached)"].append(later["seconds"])
                    probes.append(later["probe"])
        print(f"repeat {n + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in rows.items()))
    gap = max(abs(p[label] - probes[0][label]) for p in probes for label in ("A", "B"))
    report = {
        "command": "python bench/bench_llm_load.py " + " ".join(sys.argv[1:]),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": args.threads,
        "seconds": rows,
        "import_seconds": imports,
        "largest_probe_gap": gap,
    }
    lines = [
        "# Loading the in-process torch model",
        "",
        f"- command: `{report['command']}` ({report['when']})",
        f"- machine: {report['machine']}; {args.threads} threads; each load in a fresh process",
        "- first: an empty cache folder, so transformers reads and dequantises the bundled GGUF (then the weights are "
        "kept); later: the kept fp32 weights; unshared reads: the first load without the engine's one-parse reading "
        "(the load before this benchmark's commit)",
        "- each time includes the imports a new process pays on its first call (torch and transformers themselves: "
        f"median {statistics.median(imports):.1f} s; their model and tokenizer modules load lazily inside the load)",
        f"- the same label log-probabilities from every load (largest gap {gap:.2g})",
        "",
        "| load | runs | median s | min s | max s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in rows.items():
        lines.append(
            f"| {name} | {len(values)} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "llm-load.md").write_text(text)
        (args.out / "llm-load.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
