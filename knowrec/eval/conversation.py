"""Protocol P4: conversations with simulated users (:mod:`knowrec.eval.simulator`), scored turn by turn.

Every system hears the same scripted dialogue per user (the simulator's script does not depend on the answers) and
answers each message with ``k`` items; the dialogue ends when the target is shown or after ``turns`` messages. Per
user, ``cache/<system>/p4.jsonl`` keeps the whole dialogue (what was said, what was shown, how long each answer took)
and its metrics:

- ``Success@k@t``: the target was shown by turn ``t``;
- ``repeats``: items shown again that an earlier turn showed; ``repeats_after_more``: the same, on "more" turns;
- ``violations``: items shown that carry a genre the user excluded earlier in the dialogue;
- ``short``: answers with fewer than ``k`` items;
- ``turn_ms``: the answers' mean latency.

Systems: ``knowrec`` (the chat agent over the whole pipeline, its LLM weight chosen on validation), ``no-llm`` (the
same agent, no LLM for extraction or ranking) and ``constrained-pop`` (the most popular items that satisfy what has
been revealed so far, read from the simulator's own structured record: an oracle parse).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from knowrec.eval.metrics import mean, percentiles
from knowrec.eval.simulator import Revealed, SimulatedUser, TargetProfile, Utterance

if TYPE_CHECKING:
    from knowrec.datasets import Dataset
    from knowrec.recommender import Recommender

__all__ = ["Catalogue", "ChatSystem", "ConstrainedPopularity", "RecommenderChat", "run_dialogue", "summarise_p4"]


class Catalogue:
    """Genres, people and years of the items (from a dataset's facts), for the simulator and the metrics."""

    def __init__(self, dataset: Dataset, items: Sequence[str]) -> None:
        keep = set(items)
        self.titles = {it.id: it.title for it in dataset.items if it.id in keep}
        self.genres: dict[str, set[str]] = {i: set() for i in keep}
        self.people: dict[str, list[tuple[str, str]]] = {i: [] for i in keep}
        self.years: dict[str, int] = {}
        for f in dataset.facts:
            if f.head not in keep:
                continue
            label = f.tail_label or f.tail
            if f.relation == "genre":
                self.genres[f.head].add(label)
            elif f.relation in ("director", "starring"):
                self.people[f.head].append((f.relation, label))
            elif f.relation == "year" and label.isdigit():
                self.years[f.head] = int(label)
        for it in dataset.items:
            year = str(it.attributes.get("year", ""))
            if it.id in keep and it.id not in self.years and year.isdigit():
                self.years[it.id] = int(year)
        counts = Counter(g for gs in self.genres.values() for g in gs if g != "(no genres listed)")
        self.common_genres = [g for g, _ in counts.most_common()]

    def target(self, item_id: str) -> TargetProfile:
        people = sorted(self.people.get(item_id, []), key=lambda p: p[0] != "director")
        return TargetProfile(
            item_id=item_id,
            title=self.titles.get(item_id, item_id),
            genres=tuple(sorted(g for g in self.genres.get(item_id, ()) if g != "(no genres listed)")),
            year=self.years.get(item_id),
            people=tuple(people),
        )

    def names(self, item_id: str) -> set[str]:
        return {name for _, name in self.people.get(item_id, [])}


class ChatSystem(Protocol):
    """A conversational recommender under test: one session per simulated user."""

    def start(self, user: str) -> str: ...

    def answer(self, session: str, user: str, utterance: Utterance, k: int) -> tuple[list[str], str]:
        """The items shown (at most ``k``) and the answer's text."""
        ...


class RecommenderChat:
    """:meth:`knowrec.Recommender.chat` as a :class:`ChatSystem` (the user's stored history is its history)."""

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec

    def start(self, user: str) -> str:
        return f"p4:{user}:{uuid.uuid4().hex[:8]}"  # fresh even when an interrupted user is run again

    def answer(self, session: str, user: str, utterance: Utterance, k: int) -> tuple[list[str], str]:
        turn = self.rec.chat(session, utterance.text, user_id=user, k=k)
        return list(turn.items), turn.text


class ConstrainedPopularity:
    """The most popular items (training interactions) that satisfy every revealed constraint, never one the user
    rated or one already shown. When fewer than ``k`` are left, the included people, then the later genres, then the
    era are dropped in that order; exclusions always hold."""

    def __init__(self, counts: dict[str, int], catalogue: Catalogue, seen: Callable[[str], set[str]]) -> None:
        self.order = sorted(counts, key=lambda i: (-counts[i], i))
        self.cat = catalogue
        self.seen = seen
        self._shown: dict[str, set[str]] = {}

    def start(self, user: str) -> str:
        session = f"p4:{user}"
        self._shown[session] = set()
        return session

    def _fits(self, item: str, r: Revealed) -> bool:
        genres = self.cat.genres.get(item, set())
        if not set(r.genres) <= genres or genres & set(r.exclude_genres):
            return False
        if r.people and not set(r.people) & self.cat.names(item):
            return False
        if r.era is not None:
            year = self.cat.years.get(item)
            return year is not None and r.era[0] <= year <= r.era[1]
        return True

    def answer(self, session: str, user: str, utterance: Utterance, k: int) -> tuple[list[str], str]:
        shown = self._shown[session]
        banned = shown | self.seen(user)
        r = utterance.revealed.copy()
        relax = [("people", []), ("genres", r.genres[:1]), ("era", None)]
        picked: list[str] = []
        while True:
            picked += [i for i in self.order if i not in banned and i not in picked and self._fits(i, r)][
                : k - len(picked)
            ]
            if len(picked) >= k or not relax:
                break
            name, value = relax.pop(0)
            setattr(r, name, value)
        shown.update(picked)
        return picked, ""


def run_dialogue(
    system: ChatSystem,
    user: str,
    script: Sequence[Utterance],
    target: str,
    k: int,
    catalogue: Catalogue,
) -> dict[str, Any]:
    """Play one scripted dialogue against ``system``; the per-user record (dialogue and metrics)."""
    session = system.start(user)
    shown_before: set[str] = set()
    turns: list[dict[str, Any]] = []
    success: int | None = None
    repeats = repeats_after_more = violations = short = 0
    for utt in script:
        t = time.perf_counter()
        items, text = system.answer(session, user, utt, k)
        ms = 1000 * (time.perf_counter() - t)
        again = [i for i in items if i in shown_before]
        repeats += len(again)
        if utt.intent == "more":
            repeats_after_more += len(again)
        excluded = set(utt.revealed.exclude_genres)
        bad = [i for i in items if catalogue.genres.get(i, set()) & excluded]
        violations += len(bad)
        short += int(len(items) < k)
        hit = target in items
        turns.append(
            {
                "turn": utt.turn,
                "say": utt.text,
                "intent": utt.intent,
                "items": items,
                "answer": text,
                "ms": round(ms, 1),
                "hit": hit,
                "repeated": again,
                "violations": bad,
            }
        )
        shown_before.update(items)
        if hit:
            success = utt.turn
            break
    n = len(script)
    metrics: dict[str, float] = {
        f"Success@{k}@{t}": float(success is not None and success <= t) for t in range(1, n + 1)
    }
    metrics.update(
        {
            "repeats": float(repeats),
            "repeats_after_more": float(repeats_after_more),
            "violations": float(violations),
            "short": float(short),
            "turn_ms": mean(x["ms"] for x in turns),
        }
    )
    return {"user": user, "target": target, "success_turn": success, "dialogue": turns, "metrics": metrics}


def summarise_p4(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over users, plus mean turns to success (among successes) and turn-latency percentiles."""
    keys = sorted({k for r in records for k in r["metrics"]})
    wins = [r["success_turn"] for r in records if r["success_turn"] is not None]
    more_turns = sum(1 for r in records for t in r["dialogue"] if t["intent"] == "more")
    return {
        "users": len(records),
        "metrics": {k: mean(r["metrics"][k] for r in records) for k in keys},
        "mean_turns_to_success": mean(float(w) for w in wins) if wins else float("nan"),
        "successes": len(wins),
        "more_turns": more_turns,
        "turn_ms": percentiles([t["ms"] for r in records for t in r["dialogue"]]),
    }


def simulated_user(
    user: str, target: str, liked: Sequence[str], catalogue: Catalogue, seed: int, more_rate: float = 0.25
) -> SimulatedUser:
    """The simulated user of one test user (``liked``: its liked training items, most recent first)."""
    return SimulatedUser(
        catalogue.target(target),
        [(i, catalogue.titles.get(i, i), sorted(catalogue.genres.get(i, ()))) for i in liked],
        seed=seed,
        user=user,
        common_genres=catalogue.common_genres,
        more_rate=more_rate,
    )
