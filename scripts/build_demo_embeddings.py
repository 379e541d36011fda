"""Embed the full bundled demo's item documents with the bundled embedder and ship the vectors in the package
(``knowrec/datasets/demo/embeddings.npz``).

Ingesting the demo, or a slice of it, then reads these vectors instead of running the model over 9,742 texts (about
70 s on 2 cores). They are used only by the model that made them (its fingerprint is stored with them) and only for
the exact texts (keyed by their hash), so a change to the item documents or to the embedder just embeds again. Rerun
this after changing the demo data or :func:`knowrec.kg_store.ingest.item_document`:

    python scripts/build_demo_embeddings.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.progress import Progress

from knowrec.datasets import demo_embeddings_path, load_demo
from knowrec.kg_store.embedder import (
    PrecomputedVectors,
    SentenceTransformerEmbedder,
    bundled_embedder_path,
    model_fingerprint,
)
from knowrec.kg_store.ingest import item_documents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    started = time.perf_counter()
    docs = list(item_documents(load_demo()).values())
    model = bundled_embedder_path()
    embedder = SentenceTransformerEmbedder(model)  # no precomputed table: every text through the model
    parts = []
    with Progress() as bar:
        task = bar.add_task("embed", total=len(docs))
        for start in range(0, len(docs), args.batch):
            parts.append(embedder.embed(docs[start : start + args.batch]))
            bar.advance(task, len(parts[-1]))
    out = demo_embeddings_path()
    PrecomputedVectors.save(out, docs, np.concatenate(parts), model=model_fingerprint(model))
    print(f"{len(docs)} documents → {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
