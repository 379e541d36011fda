"""Is an embedded Chroma index the same when built twice from the same vectors?

Builds two ``ChromaItemIndex`` folders from identical, seeded vectors (same ids, same order, same code) and counts
the queries whose top-k differ between the two builds, the top-k's recall against the exact one, and the time per
query — for Chroma's HNSW graph (``exact_max_items=0``) and for the exact search an embedded index now does up to
``retrieval.exact_search_items`` items. Found while checking that issue 15's refactoring changed no evaluation number
(docs/benchmarks/surface-50.md): with HNSW the pipeline's runs differ from one another through this alone.

    python bench/chroma_determinism.py [--items 3650] [--dim 384] [--queries 1500] [--k 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from knowrec.kg_store.chroma_index import ChromaItemIndex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=3650)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1500)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    vectors = rng.normal(size=(args.items, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(i) for i in range(args.items)]
    lookup = dict(zip(ids, vectors, strict=True))

    class Lookup:
        dim, name = args.dim, "lookup"

        def embed(self, texts: list[str]) -> np.ndarray:
            return np.stack([lookup[t] for t in texts])

    root = Path(tempfile.mkdtemp(prefix="chroma-det-"))
    exact = np.argsort(-(vectors[: args.queries] @ vectors.T), axis=1)[:, 1 : args.k + 1]
    try:
        for mode, limit in (("hnsw", 0), ("exact", max(args.items, 1))):
            builds = []
            for n in (1, 2):
                index = ChromaItemIndex(Lookup(), path=root / f"{mode}{n}", exact_max_items=limit)
                index.upsert(ids, ids)
                builds.append(index)
            builds[0].query(vectors[0], args.k)  # the exact index reads its vectors on the first query
            differ = 0
            times = []
            recall = []
            for q, i in enumerate(ids[: args.queries]):
                started = time.perf_counter()
                first = [x for x, _ in builds[0].query(lookup[i], args.k, exclude={i})]
                times.append(time.perf_counter() - started)
                second = [x for x, _ in builds[1].query(lookup[i], args.k, exclude={i})]
                differ += first != second
                recall.append(len({int(x) for x in first} & set(exact[q])) / args.k)
            print(
                json.dumps(
                    {
                        "search": mode,
                        "items": args.items,
                        "dim": args.dim,
                        "k": args.k,
                        "queries": args.queries,
                        "queries_whose_top_k_differ_between_builds": differ,
                        "recall_at_k_vs_exact": round(float(np.mean(recall)), 4),
                        "query_ms_p50": round(1000 * float(np.median(times)), 3),
                        "query_ms_p95": round(1000 * float(np.percentile(times, 95)), 3),
                    }
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
