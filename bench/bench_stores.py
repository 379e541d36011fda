"""Store benchmark: the embedded stores (SQLite, Chroma folder) against the servers (Neo4j, Chroma server).

Ingests the bundled demo data into both set-ups, then recommends for a sample of users with the LLM off and times
every store call the pipeline makes. Item vectors are computed once with the bundled embedder and cached on disk, so
the index numbers measure the store, not the encoder.

Usage (servers first, see docs/servers.md):
    scripts/neo4j/neo4j-dev start 7687
    chroma run --path /tmp/kr-chroma --host 127.0.0.1 --port 8000 &
    python bench/bench_stores.py --neo4j-uri bolt://127.0.0.1:7687 --chroma-url http://127.0.0.1:8000 \
        --users 100 --out docs/benchmarks

Writes ``stores.json`` and ``stores.md`` into ``--out``. The Neo4j database is WIPED first: point it at a scratch
server only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import cpu_name, pct

from knowrec import Recommender, Settings
from knowrec.datasets import demo_models_path, load_demo
from knowrec.kg_store.chroma_index import ChromaItemIndex
from knowrec.kg_store.embedder import SentenceTransformerEmbedder, bundled_embedder_path

GRAPH_CALLS = (
    "history",
    "kg_candidates",
    "paths",
    "paths_many",
    "facts",
    "get_facts",
    "items",
    "item_entities",
    "popular",
)
INDEX_CALLS = ("vectors", "query")


class CachedEmbedder:
    """The bundled embedder with an on-disk cache keyed by document hash (so the benchmark embeds only once)."""

    def __init__(self, cache: Path) -> None:
        self._inner = SentenceTransformerEmbedder(bundled_embedder_path(), batch_size=64)
        self._cache_file = cache
        self._vecs: dict[str, np.ndarray] = {}
        if cache.exists():
            with np.load(cache) as z:
                self._vecs = {k: z[k] for k in z.files}

    @property
    def dim(self) -> int:
        return self._inner.dim

    @property
    def name(self) -> str:
        return self._inner.name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = [i for i, k in enumerate(keys) if k not in self._vecs]
        if missing:
            vecs = self._inner.embed([texts[i] for i in missing])
            for i, v in zip(missing, vecs, strict=True):
                self._vecs[keys[i]] = v
        return np.stack([self._vecs[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def save(self) -> None:
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self._cache_file, **self._vecs)


class Timed:
    """Wraps a store; records the wall time of every method call under the method's name."""

    def __init__(self, inner: Any, log: dict[str, list[float]]) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._log[name].append((time.perf_counter() - t0) * 1000)

        return call


def wipe_neo4j(uri: str, user: str, password: str | None) -> None:
    from neo4j import GraphDatabase

    auth = (user, password) if password else None
    with GraphDatabase.driver(uri, auth=auth) as driver:
        while True:
            records, _, _ = driver.execute_query("MATCH (n) WITH n LIMIT 20000 DETACH DELETE n RETURN count(*) AS n")
            if records[0]["n"] == 0:
                break


def run_setup(
    label: str,
    settings: Settings,
    embedder: CachedEmbedder,
    index: Any,
    users: list[str],
    k: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    calls: dict[str, list[float]] = defaultdict(list)
    rec = Recommender(settings, embedder=embedder)
    store = Timed(rec.store, calls)
    rec = Recommender(settings, embedder=embedder, store=store, index=Timed(index, calls))  # type: ignore[arg-type]
    ds = load_demo()
    rows = len(ds.items) + len(ds.facts) + len(ds.interactions)
    progress(f"{label}: ingest")
    t0 = time.perf_counter()
    rec.ingest_dataset(ds, reuse=demo_models_path())
    total = time.perf_counter() - t0
    write_ms = sum(calls["write"])
    upsert_ms = sum(calls["upsert"])
    progress(f"{label}: ingest again (idempotent)")
    calls.clear()
    t1 = time.perf_counter()
    rec.ingest_dataset(load_demo(), reuse=demo_models_path())
    again = time.perf_counter() - t1
    write_again_ms = sum(calls["write"])

    progress(f"{label}: {len(users)} recommendations")
    for u in users[:3]:  # warm-up: caches, JIT, connection pool
        rec.recommend(u, k=k)
    calls.clear()
    per_rec_graph: list[float] = []
    per_rec_index: list[float] = []
    per_rec_total: list[float] = []
    n_graph_calls: list[int] = []
    for u in users:
        before = {name: len(v) for name, v in calls.items()}
        before_sum = {name: sum(v) for name, v in calls.items()}
        t = time.perf_counter()
        rec.recommend(u, k=k)
        per_rec_total.append((time.perf_counter() - t) * 1000)
        per_rec_graph.append(sum(sum(calls[c]) - before_sum.get(c, 0.0) for c in GRAPH_CALLS))
        per_rec_index.append(sum(sum(calls[c]) - before_sum.get(c, 0.0) for c in INDEX_CALLS))
        n_graph_calls.append(sum(len(calls[c]) - before.get(c, 0) for c in GRAPH_CALLS))
    rec.store.close()
    return {
        "ingest": {
            "rows": rows,
            "items": len(ds.items),
            "facts": len(ds.facts),
            "interactions": len(ds.interactions),
            "total_s": round(total, 2),
            "graph_write_s": round(write_ms / 1000, 2),
            "graph_rows_per_s": round(rows / (write_ms / 1000)),
            "index_upsert_s": round(upsert_ms / 1000, 2),
            "index_docs_per_s": round(len(ds.items) / (upsert_ms / 1000)) if upsert_ms else None,
            "again_total_s": round(again, 2),
            "again_graph_write_s": round(write_again_ms / 1000, 2),
        },
        "per_call_ms": {
            name: {"calls": len(v), "p50": round(pct(v, 50), 2), "p95": round(pct(v, 95), 2)}
            for name, v in sorted(calls.items())
            if name in GRAPH_CALLS or name in INDEX_CALLS
        },
        "per_recommendation_ms": {
            "graph": {"p50": round(pct(per_rec_graph, 50), 1), "p95": round(pct(per_rec_graph, 95), 1)},
            "index": {"p50": round(pct(per_rec_index, 50), 1), "p95": round(pct(per_rec_index, 95), 1)},
            "total": {"p50": round(pct(per_rec_total, 50), 1), "p95": round(pct(per_rec_total, 95), 1)},
            "graph_calls": {"p50": pct(n_graph_calls, 50), "max": max(n_graph_calls)},
        },
    }


def render(rep: dict[str, Any]) -> str:
    emb, srv = rep["setups"]["embedded"], rep["setups"]["servers"]
    lines = [
        "# Store benchmark: embedded (SQLite + Chroma folder) vs servers (Neo4j + Chroma server)",
        "",
        f"Command: `{rep['command']}`  ",
        f"Date: {rep['date']}, git {rep['git']}; {rep['machine']['cpu']}, {rep['machine']['cores']} cores, "
        f"Python {rep['machine']['python']}; Neo4j {rep['neo4j_version']}, chromadb {rep['chromadb_version']}. "
        "Servers on loopback, on the same 2 cores as the client.",
        "",
        f"Data: the bundled demo ({emb['ingest']['items']:,} items, {emb['ingest']['facts']:,} facts, "
        f"{emb['ingest']['interactions']:,} interactions = {emb['ingest']['rows']:,} rows). Item vectors come from a "
        "disk cache of the bundled all-MiniLM-L6-v2, so index times measure Chroma, not the encoder.",
        "",
        "## Ingest",
        "",
        "| | embedded | servers |",
        "|---|---:|---:|",
        f"| graph write (one transaction), s | {emb['ingest']['graph_write_s']} (SQLite) | "
        f"{srv['ingest']['graph_write_s']} (Neo4j) |",
        f"| graph rows/s | {emb['ingest']['graph_rows_per_s']:,} | {srv['ingest']['graph_rows_per_s']:,} |",
        f"| index upsert of {emb['ingest']['items']:,} vectors, s | {emb['ingest']['index_upsert_s']} | "
        f"{srv['ingest']['index_upsert_s']} |",
        f"| whole ingest (validate, EASE fit, index, graph), s | {emb['ingest']['total_s']} | "
        f"{srv['ingest']['total_s']} |",
        f"| same data again (0 new rows), s | {emb['ingest']['again_total_s']} | {srv['ingest']['again_total_s']} |",
        "",
        f"## Store calls per recommendation ({rep['users']} users, k={rep['k']}, LLM off)",
        "",
        "| | embedded p50 | embedded p95 | servers p50 | servers p95 |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, name in (("graph", "all graph calls"), ("index", "all index calls"), ("total", "whole recommendation")):
        a, b = emb["per_recommendation_ms"][key], srv["per_recommendation_ms"][key]
        lines.append(f"| {name}, ms | {a['p50']} | {a['p95']} | {b['p50']} | {b['p95']} |")
    lines += [
        "",
        f"Graph calls per recommendation: median {emb['per_recommendation_ms']['graph_calls']['p50']:.0f} "
        f"(max {emb['per_recommendation_ms']['graph_calls']['max']}).",
        "",
        "### Per call",
        "",
        "| call | calls | SQLite p50 | SQLite p95 | Neo4j p50 | Neo4j p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in GRAPH_CALLS:
        a, b = emb["per_call_ms"].get(name), srv["per_call_ms"].get(name)
        if a and b and a["calls"]:
            lines.append(f"| `{name}` | {a['calls']} | {a['p50']} | {a['p95']} | {b['p50']} | {b['p95']} |")
    lines += [
        "",
        "| call | calls | Chroma embedded p50 | p95 | Chroma server p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in INDEX_CALLS:
        a, b = emb["per_call_ms"].get(name), srv["per_call_ms"].get(name)
        if a and b:
            lines.append(f"| `{name}` | {a['calls']} | {a['p50']} | {a['p95']} | {b['p50']} | {b['p95']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neo4j-uri", required=True)
    ap.add_argument("--neo4j-user", default="neo4j")
    ap.add_argument("--neo4j-password", default=os.environ.get("KNOWREC_GRAPH_PASSWORD"))
    ap.add_argument("--chroma-url", required=True)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "knowrec" / "bench-demo-vectors.npz")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = ap.parse_args()

    def progress(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    import chromadb
    from neo4j import GraphDatabase

    auth = (args.neo4j_user, args.neo4j_password) if args.neo4j_password else None
    with GraphDatabase.driver(args.neo4j_uri, auth=auth) as driver:
        neo4j_version = driver.get_server_info().agent

    embedder = CachedEmbedder(args.cache)
    progress("embedding the demo items (cached after the first run)")
    ds = load_demo()
    from knowrec.kg_store.ingest import item_document

    facts_by_item: dict[str, list[Any]] = defaultdict(list)
    for f in ds.facts:
        facts_by_item[f.head].append(f)
    embedder.embed([item_document(it, facts_by_item.get(it.id, [])) for it in ds.items])
    embedder.save()

    users = sorted({x.user_id for x in ds.interactions})
    users = random.Random(args.seed).sample(users, min(args.users, len(users)))
    quiet = {"llm": {"backend": "none"}, "ranker": {"mode": "none"}, "progress": False}
    report: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "neo4j_version": neo4j_version,
        "chromadb_version": chromadb.__version__,
        "users": len(users),
        "k": args.k,
        "setups": {},
    }
    with tempfile.TemporaryDirectory(prefix="knowrec-bench-stores-") as tmp:
        s_emb = Settings(data_dir=Path(tmp) / "embedded", **quiet)
        idx_emb = ChromaItemIndex(embedder, path=s_emb.chroma_path)
        report["setups"]["embedded"] = run_setup("embedded", s_emb, embedder, idx_emb, users, args.k, progress)

        wipe_neo4j(args.neo4j_uri, args.neo4j_user, args.neo4j_password)
        collection = f"bench_{int(time.time())}"
        s_srv = Settings(
            data_dir=Path(tmp) / "servers",
            graph_uri=args.neo4j_uri,
            graph_user=args.neo4j_user,
            graph_password=args.neo4j_password,
            chroma_url=args.chroma_url,
            **quiet,
        )
        idx_srv = ChromaItemIndex(embedder, url=args.chroma_url, collection=collection)
        try:
            report["setups"]["servers"] = run_setup("servers", s_srv, embedder, idx_srv, users, args.k, progress)
        finally:
            chromadb.HttpClient(host=idx_srv.host, port=idx_srv.port).delete_collection(collection)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stores.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "stores.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
