"""How well ``knowrec kg extract`` recovers known facts from text, and what it costs.

Synthetic mode (default): the descriptions of ``bench/make_kg_text.py`` (written from the demo's DBpedia facts, so
the truth is known) are extracted back into a store that holds the whole demo graph *except the DBpedia facts of
the described films* (their people stay known through other films, as in a real catalogue). Reported: precision
and recall of (film, relation, object) per relation (objects compared by normalised label), distractor names
extracted, the evidence-drop rate, resolution accuracy (an object naming a true entity resolves to that entity's
id, or to a new entity when the store does not know it), and items per second.

Threshold mode (``--threshold``): chooses ``extract.similarity_threshold`` on data. Positive pairs: stored person
labels written another way (a dropped middle name, initials, a typo) against their entity; negative pairs: names of
people absent from the store against their nearest stored label. The cosine that best separates them is reported.

Usage:
    python bench/bench_kg_extract.py --n 60 --out docs/benchmarks/kg-extract/bundled.json
    python bench/bench_kg_extract.py --threshold --out docs/benchmarks/kg-extract/threshold.json
    python bench/bench_kg_extract.py --sample docs/benchmarks/kg-extract/tags/results.jsonl --n 40 --out …/judged.json
    KNOWREC_LLM__BACKEND=http KNOWREC_LLM__BASE_URL=http://gpu:8000/v1 python bench/bench_kg_extract.py …
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from knowrec import Settings
from knowrec.config import ExtractConfig
from knowrec.datasets import demo_path
from knowrec.datasets.movielens import load_movielens
from knowrec.extraction import EntityResolver, ExtractionRun, FactExtractor, default_schema
from knowrec.extraction.text import normalise
from knowrec.kg_store.base import GraphBatch
from knowrec.kg_store.sqlite import SQLiteGraphStore
from knowrec.recommender import Recommender

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_name

NOT_DBPEDIA = {"genre", "year", "tag"}


def _store(path: Path, described: set[str], texts: dict[str, str]) -> SQLiteGraphStore:
    ds = load_movielens(demo_path(), max_users=1)
    items = [it.model_copy(update={"text": texts[it.id]}) if it.id in texts else it for it in ds.items]
    facts = [f for f in ds.facts if not (f.head in described and f.relation not in NOT_DBPEDIA)]
    store = SQLiteGraphStore(path)
    store.write(GraphBatch(items=items, facts=facts))
    return store


def synthetic(args: argparse.Namespace) -> dict[str, Any]:
    records = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()][: args.n]
    texts = {r["item_id"]: r["text"] for r in records}
    work = Path(tempfile.mkdtemp(prefix="kgx-"))
    store = _store(work / "graph.sqlite", set(texts), texts)
    stored_entities = [e for batch in store.iter_entities() for e in batch]
    known = {e.id for e in stored_entities}
    settings = Settings(data_dir=work)
    rec = Recommender(settings, store=store)
    llm = rec.llm
    assert llm is not None
    cfg = ExtractConfig(constrain_objects=not args.free, similarity_threshold=args.similarity)
    schema = default_schema("movies")
    resolver = EntityResolver(stored_entities, schema, rec.embedder, cfg.similarity_threshold)
    concurrency = args.concurrency or (settings.llm.concurrency if settings.llm.backend == "http" else 1)
    run = ExtractionRun(store, FactExtractor(llm, schema, cfg), resolver, work / "extract", concurrency=concurrency)
    items = store.items(list(texts))
    started = time.perf_counter()
    summary = run.run([items[r["item_id"]] for r in records])
    seconds = time.perf_counter() - started

    truth: dict[str, set[tuple[str, str]]] = defaultdict(set)
    tails: dict[tuple[str, str], str] = {}
    for r in records:
        for f in r["facts"]:
            truth[f["relation"]].add((r["item_id"], normalise(f["tail_label"])))
            tails[(r["item_id"], normalise(f["tail_label"]))] = f["tail"]
    distractors = {(r["item_id"], normalise(d)) for r in records for d in r["distractors"]}
    got: dict[str, set[tuple[str, str]]] = defaultdict(set)
    resolution: Counter[str] = Counter()
    distracted = 0
    for line in (work / "extract" / "results.jsonl").read_text().splitlines():
        rec_ = json.loads(line)
        for f in rec_["facts"]:
            key = (rec_["item"], normalise(f["object"]))
            got[f["relation"]].add(key)
            distracted += key in distractors
            if key in tails:  # the object names a true entity of this film: did it resolve to that entity?
                want = tails[key]
                ok = f["entity"] == want if want in known else f["entity"].startswith("kx:")
                resolution["correct" if ok else "wrong"] += 1
    per_relation = {}
    for rel in sorted(set(truth) | set(got)):
        tp = len(truth[rel] & got[rel])
        per_relation[rel] = {
            "truth": len(truth[rel]),
            "extracted": len(got[rel]),
            "correct": tp,
            "precision": round(tp / len(got[rel]), 3) if got[rel] else None,
            "recall": round(tp / len(truth[rel]), 3) if truth[rel] else None,
        }
    all_truth = set().union(*truth.values()) if truth else set()
    all_got = set().union(*got.values()) if got else set()
    tp_rel = sum(len(truth[r] & got[r]) for r in truth)
    n_got = sum(len(v) for v in got.values())
    n_truth = sum(len(v) for v in truth.values())
    return {
        "mode": "free" if args.free else "constrained",
        "items": len(records),
        "model": llm.model_id,
        "backend": settings.llm.backend,
        "concurrency": concurrency,
        "cpu": cpu_name(),
        "precision": round(tp_rel / n_got, 3) if n_got else None,
        "recall": round(tp_rel / n_truth, 3) if n_truth else None,
        "object_precision": round(len(all_truth & all_got) / len(all_got), 3) if all_got else None,
        "object_recall": round(len(all_truth & all_got) / len(all_truth), 3) if all_truth else None,
        "distractors_extracted": distracted,
        "distractors_in_texts": len(distractors),
        "evidence_drop_rate": round(sum(summary.dropped.values()) / summary.proposed, 3) if summary.proposed else None,
        "dropped": summary.dropped,
        "failed": summary.failed,
        "resolution": dict(resolution),
        "resolution_accuracy": round(resolution["correct"] / sum(resolution.values()), 3) if resolution else None,
        "resolved_by": summary.resolved,
        "seconds": round(seconds, 1),
        "items_per_second": round(len(records) / seconds, 3),
        "per_relation": per_relation,
    }


def threshold(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    ds = load_movielens(demo_path(), max_users=1)
    people: dict[str, str] = {}
    for f in ds.facts:
        if f.relation in ("director", "starring", "writer") and f.tail_label and "(" not in f.tail_label:
            people[f.tail] = f.tail_label
    ids = sorted(people)
    rng.shuffle(ids)
    absent, present = set(ids[: args.pairs]), ids[args.pairs :]
    from knowrec.types import Entity

    schema = default_schema("movies")
    entities = [Entity(id=i, label=people[i], relations=("director",)) for i in present]
    rec = Recommender(Settings(data_dir=Path(tempfile.mkdtemp())))
    resolver = EntityResolver(entities, schema, rec.embedder, threshold=1.0)

    def variant(name: str) -> str:
        parts = name.split()
        kind = rng.randrange(3)
        if kind == 0 and len(parts) >= 3:
            return f"{parts[0]} {parts[-1]}"  # a middle name dropped
        if kind == 1 and len(parts) >= 2:
            return f"{parts[0][0]}. {' '.join(parts[1:])}"  # an initial
        k = rng.randrange(len(name))
        return name[:k] + name[k + 1 :] if len(name) > 4 else name + "e"  # a letter dropped

    pos, neg = [], []
    for i in rng.sample(present, args.pairs):
        v = variant(people[i])
        if normalise(v) == normalise(people[i]):
            continue
        top = resolver.similarity_candidates(v, ("person",), n=1)
        pos.append((top[0][1], top[0][0] == i) if top else (0.0, False))
    for i in sorted(absent):
        top = resolver.similarity_candidates(people[i], ("person",), n=1)
        neg.append(top[0][1] if top else 0.0)
    table = []
    for t in np.arange(0.70, 1.0001, 0.01):
        right = sum(1 for sim, ok in pos if sim >= t and ok)
        wrong = sum(1 for sim, ok in pos if sim >= t and not ok) + sum(1 for sim in neg if sim >= t)
        apart = sum(1 for sim in neg if sim < t)
        table.append(
            {
                "threshold": round(float(t), 2),
                "accuracy": round((right + apart) / (len(pos) + len(neg)), 3),
                "merged_right": right,
                "merged_wrong": wrong,
                "merge_precision": round(right / (right + wrong), 3) if right + wrong else None,
                "variants_merged": round(right / len(pos), 3),
            }
        )
    # A wrong merge puts a fact on someone else (it spreads through every path); a missed one leaves a duplicate
    # entity. So: the lowest threshold whose merges are at least 95% right, else the most accurate.
    precise = [r for r in table if r["merge_precision"] is not None and r["merge_precision"] >= 0.95]
    best = precise[0] if precise else max(table, key=lambda r: r["accuracy"])
    return {
        "positives": len(pos),
        "negatives": len(neg),
        "rule": "lowest threshold with merge precision >= 0.95",
        "best": best,
        "most_accurate": max(table, key=lambda r: r["accuracy"]),
        "table": table,
        "positive_similarity_p10_p50": [round(float(np.percentile([s for s, _ in pos], q)), 3) for q in (10, 50)],
        "negative_similarity_p50_p90": [round(float(np.percentile(neg, q)), 3) for q in (50, 90)],
    }


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """A seeded sample of the facts a run kept, with the text they rest on, for a person to judge (precision on real
    text, where no truth exists). The verdicts are added by hand to the written file."""
    rng = random.Random(args.seed)
    records = [json.loads(line) for line in Path(args.sample).read_text().splitlines() if line.strip()]
    ds = load_movielens(demo_path(), max_users=1)
    items = {it.id: it for it in ds.items}
    kept = [(r["item"], f) for r in records for f in r["facts"]]
    chosen = sorted(rng.sample(range(len(kept)), min(args.n, len(kept))))
    rows = []
    for k in chosen:
        item_id, f = kept[k]
        rows.append(
            {
                "item": item_id,
                "title": items[item_id].title,
                "text": items[item_id].text,
                "fact": f"{f['relation']} → {f['label']} ({f['entity']})",
                "verdict": None,
            }
        )
    return {"run": args.sample, "facts_kept": len(kept), "sampled": len(rows), "seed": args.seed, "facts": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="docs/benchmarks/kg-extract/synthetic.jsonl")
    ap.add_argument("--n", type=int, default=60, help="descriptions to extract (the first n of --data)")
    ap.add_argument("--free", action="store_true", help="free-string objects and evidence (no enum of names)")
    ap.add_argument("--similarity", type=float, default=ExtractConfig().similarity_threshold)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--threshold", action="store_true", help="choose the similarity threshold instead")
    ap.add_argument("--sample", default=None, help="a results.jsonl: sample --n of its kept facts to judge by hand")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = threshold(args) if args.threshold else sample(args) if args.sample else synthetic(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
