"""A wish that names a tag: does the chat find the user's next film when asked for it by one of its tags?

P4's simulated users reveal genres, people, eras and films they liked, never a keyword: the chat's reading of a
free-text wish ("a heist movie", "something with a twist ending") goes unmeasured there. This probe asks, for each
user of the P4 split whose held-out next film carries a usable tag, one question in a fresh session: "I'm in the mood
for a <tag> movie", with the tag the film's rarest one that 3 to 50 films carry (words only, at most three). It
records whether the film is among the k picks (Success@k), and how many picks carry the tag.

Usage (the stores of a P4 run: the test split's graph, index and fitted models; copied, never written):
    python bench/chat_tag_wish.py --store docs/benchmarks/chat-genres/stores/test \
        --dialogues docs/benchmarks/chat-genres/cache/no-llm/p4.jsonl --out docs/benchmarks/chat-tag-wish/NAME.json

Run it on two commits (a ``git worktree`` for the other) and compare with ``--compare A.json B.json`` (paired sign
test on the users where one finds the film and the other does not).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def _sign_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(a: Path, b: Path) -> None:
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    ua, ub = {r["user"]: r for r in ra["rows"]}, {r["user"]: r for r in rb["rows"]}
    users = sorted(set(ua) & set(ub))
    wins = sum(1 for u in users if ub[u]["hit"] and not ua[u]["hit"])
    losses = sum(1 for u in users if ua[u]["hit"] and not ub[u]["hit"])
    for name, rows in ((a, ua), (b, ub)):
        hits = sum(rows[u]["hit"] for u in users) / len(users)
        tagged = sum(rows[u]["tagged"] for u in users) / sum(rows[u]["shown"] or 1 for u in users)
        print(f"{name}: users {len(users)}  Success@k {hits:.3f}  picks carrying the tag {tagged:.3f}")
    print(
        f"B finds the film where A does not: {wins}; the reverse: {losses}; sign test p = {_sign_p(wins, losses):.2g}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path)
    ap.add_argument("--dialogues", type=Path, help="a P4 run's p4.jsonl: its users and their held-out films")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
        return

    from knowrec import Recommender, Settings

    work = Path(tempfile.mkdtemp(prefix="chat-tag-wish-"))
    data = work / "store"
    shutil.copytree(args.store, data)
    rec = Recommender(
        Settings(
            data_dir=data,
            progress=False,
            ranker={"mode": "none"},
            llm={"backend": "none"},
            chat={"record_feedback": False, "extract_with_llm": False, "sessions_file": str(work / "s.sqlite")},
        )
    )
    pairs = [(r["user"], r["target"]) for r in map(json.loads, args.dialogues.read_text().splitlines())]
    store = rec.store
    rows: list[dict[str, Any]] = []
    started = time.time()
    for user, target in pairs:
        tags = [f for f in store.facts([target])[target] if f.relation == "tag"]
        usable = []
        for f in tags:
            label = (f.tail_label or f.tail.split(":", 1)[-1]).strip()
            if not re.fullmatch(r"[A-Za-z]+(?: [A-Za-z]+){0,2}", label):
                continue
            n = store.entity_degrees([f.tail])[f.tail]
            if 3 <= n <= 50:
                usable.append((n, label.lower(), f.tail))
        if not usable:
            continue
        n, label, tag = min(usable)
        sid = rec.new_session(user)
        turn = rec.chat(sid, f"I'm in the mood for a {label} movie", user_id=user, k=args.k)
        picks = [it.item_id for it in turn.recommendation.items] if turn.recommendation else []
        carrying = store.item_entities(picks)
        rows.append(
            {
                "user": user,
                "target": target,
                "tag": label,
                "tag_items": n,
                "hit": target in picks,
                "shown": len(picks),
                "tagged": sum(1 for p in picks if tag in carrying.get(p, set())),
            }
        )
    rec.close()
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": "python bench/chat_tag_wish.py --store "
        + f"{args.store} --dialogues {args.dialogues} --out {args.out} --k {args.k}",
        "users": len(pairs),
        "asked": len(rows),
        "success": round(sum(r["hit"] for r in rows) / max(len(rows), 1), 4),
        "seconds": round(time.time() - started, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(rows)} of {len(pairs)} users asked; Success@{args.k} {result['success']}; {result['seconds']} s")


if __name__ == "__main__":
    main()
