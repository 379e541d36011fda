"""The accuracy effect of extracted facts: `knowrec eval` with and without them, paired per user.

Reads the per-user caches of two runs (bench/eval-kg-extract-with.toml, bench/eval-kg-extract-without.toml) and
reports, on all users and on the users whose test item is a film that got extracted facts (the films without DBpedia
facts that have tags, in the evaluation's catalogue): P3 recall of the KG generator and of the fused list (system
``retrieval-only``) and P2 NDCG@10 / Recall@10 of ``no-llm``, each with a paired t-test and Wilcoxon test.

Usage:
    python bench/kg_extract_effect.py [--with DIR] [--without DIR] [--out docs/benchmarks/kg-extract/effect.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness
from knowrec.eval.report import paired_test
from knowrec.extraction.extract import load_results

METRICS = {
    ("retrieval-only", "p3"): ["kg:Recall@20", "kg:Recall@50", "kg:Recall@100", "fused:Recall@20", "fused:Recall@50"],
    ("no-llm", "p2"): ["NDCG@10", "Recall@10"],
}


def per_user(run: Path, system: str, protocol: str, metric: str) -> dict[str, float]:
    out = {}
    for line in (run / "cache" / system / f"{protocol}.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[str(rec["user"])] = float(rec["metrics"][metric])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--with", dest="with_", type=Path, default=Path("bench/eval-kg-extract-with.toml"))
    ap.add_argument("--without", type=Path, default=Path("bench/eval-kg-extract-without.toml"))
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/kg-extract/effect.json"))
    args = ap.parse_args()
    cfg_with, cfg_without = load_config(args.with_), load_config(args.without)
    assert cfg_with.dataset.extracted_facts is not None
    ctx = Harness(cfg_without).load()
    extracted = load_results(cfg_with.dataset.extracted_facts)
    with_facts = {f.head for f in extracted} & set(ctx.split.items)
    asked = {
        str(json.loads(line)["item"]) for line in Path(cfg_with.dataset.extracted_facts).read_text().splitlines()
    } & set(ctx.split.items)
    subsets = {
        "all users": set(ctx.split.users),
        "test item was read (tagged, no DBpedia facts)": {u for u in ctx.split.users if ctx.split.test[u] in asked},
        "test item got extracted facts": {u for u in ctx.split.users if ctx.split.test[u] in with_facts},
    }
    result: dict[str, Any] = {
        "films_read": len(asked),
        "films_with_extracted_facts": len(with_facts),
        "extracted_facts_in_catalogue": sum(1 for f in extracted if f.head in set(ctx.split.items)),
        "subsets": {},
    }
    for name, users in subsets.items():
        rows = {}
        for (system, protocol), metrics in METRICS.items():
            for metric in metrics:
                a = per_user(cfg_with.run.out, system, protocol, metric)
                b = per_user(cfg_without.run.out, system, protocol, metric)
                test = paired_test(
                    {u: v for u, v in a.items() if u in users}, {u: v for u, v in b.items() if u in users}
                )
                rows[f"{system} {protocol} {metric}"] = {k: round(v, 4) for k, v in test.items()}
        result["subsets"][name] = {"users": len(users), "metrics": rows}
    text = json.dumps(result, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
