"""Do two ingests of the same data give the same fitted models and the same lists?

Ingests the first ``--users`` users of the bundled demo into two fresh data dirs (each its own SQLite store and
Chroma folder, built by the same code), fits both, and compares what came out: the fitted files byte for byte, the
fusion's validation numbers, and every user's list without the LLM. Before the embedded index searched exactly
(``retrieval.exact_search_items``), Chroma's HNSW graph differed between two builds of the same vectors, and the
fusion with it (docs/benchmarks/surface-50.md).

    python bench/reproducible_fit.py [--users 80] [--exact-search-items 50000] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from knowrec import Recommender
from knowrec.config import Settings


def digest(folder: Path) -> dict[str, str]:
    """SHA-1 of every file under ``folder`` but the manifest (which holds the fit's times)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()[:16]
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=80)
    ap.add_argument("--exact-search-items", type=int, default=50_000, help="0: Chroma's HNSW graph")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="knowrec-repro-"))
    runs = []
    try:
        for n in (1, 2):
            settings = Settings(
                data_dir=root / f"run{n}",
                progress=False,
                retrieval={"exact_search_items": args.exact_search_items},
            )
            started = time.perf_counter()
            rec = Recommender(settings)
            rec.ingest_demo(max_users=args.users, progress=False)  # ingest ends with a fit
            users = sorted({x.user_id for x in rec.store.interactions()}, key=int)
            lists = {u: [it.item_id for it in rec.recommend(u, k=20, mode="none").items] for u in users}
            manifest = json.loads((settings.models_path / "manifest.json").read_text())
            runs.append(
                {
                    "files": digest(settings.models_path),
                    "fusion_valid": {k: v for k, v in manifest.get("fusion", {}).items() if k.startswith("valid_")},
                    "lists": lists,
                    "wall_s": round(time.perf_counter() - started, 1),
                }
            )
            rec.close()
        a, b = runs
        same_files = [f for f in a["files"] if a["files"][f] == b["files"].get(f)]
        report = {
            "users": args.users,
            "exact_search_items": args.exact_search_items,
            "model_files": len(a["files"]),
            "model_files_identical": len(same_files),
            "model_files_differing": sorted(set(a["files"]) - set(same_files)),
            "fusion_valid_run1": a["fusion_valid"],
            "fusion_valid_run2": b["fusion_valid"],
            "lists_identical": sum(a["lists"][u] == b["lists"].get(u) for u in a["lists"]),
            "lists": len(a["lists"]),
            "wall_s": [a["wall_s"], b["wall_s"]],
        }
        text = json.dumps(report, indent=1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
