"""Print the README's headline table from an evaluation run's results.json.

Usage:
    python bench/headline.py docs/benchmarks/ml-latest-small/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ANCHORS = [
    ("SASRec (LlamaRec's table)", "0.0522", "0.0993", ""),
    ("BERT4Rec (LlamaRec's table)", "0.0366", "0.0785", ""),
    ("LRURec (LlamaRec's table)", "0.0705", "0.1426", ""),
    ("LlamaRec (Llama-2-7B reranking LRURec top-20)", "0.0759", "0.1524", ""),
]


def main() -> None:
    res = json.loads(Path(sys.argv[1]).read_text())
    print("| system | users (P2) | P2 NDCG@10 | P2 Recall@10 | P1 NDCG@10 | P1 HR@1 |")
    print("|---|---|---|---|---|---|")
    for name, entry in res["systems"].items():
        p1 = entry["protocols"].get("p1", {}).get("metrics", {})
        p2 = entry["protocols"].get("p2", {})
        m2 = p2.get("metrics", {})
        tag = " (LLM)" if entry.get("uses_llm") else ""
        print(
            f"| {name}{tag} | {p2.get('users', '—')} | {m2.get('NDCG@10', float('nan')):.4f} |"
            f" {m2.get('Recall@10', float('nan')):.4f} | {p1.get('NDCG@10', float('nan')):.3f} |"
            f" {p1.get('HR@1', float('nan')):.3f} |"
        )
    for name, ndcg, rec, _ in ANCHORS:
        print(f"| *published:* {name} | 610 | {ndcg} | {rec} | — | — |")


if __name__ == "__main__":
    main()
