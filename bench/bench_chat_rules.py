"""How long the chat's rules take to read a message: ``extract_rules`` over the messages of P4 dialogues.

The rules read every chat message before anything else (retrieval, the LLM); a rule that searches the catalogue per
message shows up in every turn. This replays what P4's simulated users said (``cache/<system>/p4.jsonl`` of an eval
run) against a data dir's stores and prints the CPU time per message (process time, so other jobs on the machine do
not inflate it), p50 / p95 / mean.

Usage:
    python bench/bench_chat_rules.py --dialogues docs/benchmarks/chat-ordinary/cache/no-llm/p4.jsonl --n 800

To compare with an older commit, run the same command from a ``git worktree`` of that commit (its ``knowrec`` comes
first on ``sys.path`` when the script runs from there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's knowrec, not an installed one

from _common import pct

from knowrec import Recommender, Settings
from knowrec.agent.chat.rules import StoreTitles, extract_rules
from knowrec.agent.chat.vocabulary import Vocabulary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogues", type=Path, required=True, help="a P4 cache file (cache/<system>/p4.jsonl)")
    ap.add_argument("--n", type=int, default=800, help="messages to read (the first N)")
    ap.add_argument("--data-dir", type=Path, default=None, help="the stores (default: the configured data dir)")
    args = ap.parse_args()

    says = [t["say"] for line in args.dialogues.open() for t in json.loads(line)["dialogue"]][: args.n]
    settings = Settings(ranker={"mode": "none"}, **({"data_dir": args.data_dir} if args.data_dir else {}))
    rec = Recommender(settings)
    vocab, titles = Vocabulary.build(rec.store), StoreTitles(rec.store)
    extract_rules(says[0], vocab, titles, [])  # warm: the vocabulary's caches, the first query
    took = []
    for text in says:
        t0 = time.process_time()
        extract_rules(text, vocab, titles, [])
        took.append((time.process_time() - t0) * 1000)
    rec.close()
    print(f"knowrec from {Path(sys.modules['knowrec'].__file__ or '').parent}")
    print(
        f"{len(took)} messages: CPU ms per message p50 {pct(took, 50):.2f}, p95 {pct(took, 95):.2f}, "
        f"mean {sum(took) / len(took):.2f}"
    )


if __name__ == "__main__":
    main()
