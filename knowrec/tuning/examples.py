"""Training examples for ``knowrec tune``, built from the stored interactions and knowledge graph.

A *ranking* example is what the verbalizer ranker sees at one point of a user's history: the interactions before a
target item (in time order), the candidates the pipeline retrieves from that prefix (the target put in at a random
place where retrieval missed it, and a few random catalogue items mixed in, as LlamaRec does), the facts the prompt
shows, and the label of the target. The prompt is rendered by the ranker itself, so training and inference read the
same text. A *knowledge* example asks for the object of a stored fact among candidate entities of the same relation
("Heat (1995) — director → ?"), so that the catalogue's facts reach the weights too.

Only stored interactions are used; ``knowrec eval`` tunes in its validation store, which holds neither the
validation nor the test items, so they can never be a target, a history item or a candidate's reason to be there.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from knowrec.agent.rank import LABELS, display_title, shown_order
from knowrec.prompts import load_prompt
from knowrec.types import Candidate, Interaction, RecQuery

if TYPE_CHECKING:
    from knowrec.agent.llm.base import LLMClient
    from knowrec.agent.pipeline import Pipeline
    from knowrec.agent.rank import VerbalizerRanker
    from knowrec.kg_store.base import GraphStore

__all__ = ["Example", "knowledge_examples", "ranking_examples", "user_sequences"]


@dataclass(frozen=True)
class Example:
    """One multiple-choice prompt: the answer is one of ``labels``, the true one at ``target``."""

    kind: str
    """``ranking`` or ``knowledge``."""
    user: str | None
    prompt: str
    """The whole prompt as the model reads it (chat template applied, the assistant turn opened)."""
    labels: tuple[str, ...]
    target: int
    choices: tuple[str, ...]
    """What each label stands for: item ids (ranking) or entity ids (knowledge)."""
    teacher: tuple[float, ...] | None = field(default=None, compare=False)
    """A teacher's log-probabilities of the labels (distillation)."""
    retrieved: bool | None = field(default=None, compare=False)
    """Ranking: whether retrieval found the target (else it was put among the candidates)."""

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "user": self.user,
            "prompt": self.prompt,
            "labels": list(self.labels),
            "target": self.target,
            "choices": list(self.choices),
            "teacher": list(self.teacher) if self.teacher is not None else None,
            "retrieved": self.retrieved,
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Example:
        teacher = d.get("teacher")
        return cls(
            kind=str(d["kind"]),
            user=d.get("user") if isinstance(d.get("user"), str) else None,  # type: ignore[arg-type]
            prompt=str(d["prompt"]),
            labels=tuple(d["labels"]),  # type: ignore[arg-type]
            target=int(d["target"]),  # type: ignore[call-overload]
            choices=tuple(d["choices"]),  # type: ignore[arg-type]
            teacher=tuple(teacher) if isinstance(teacher, list) else None,
            retrieved=d.get("retrieved") if isinstance(d.get("retrieved"), bool) else None,  # type: ignore[arg-type]
        )


def user_sequences(interactions: Iterable[Interaction]) -> dict[str, list[Interaction]]:
    """Every user's interactions in time order (oldest first), from the store's ``interactions()``."""
    out: dict[str, list[Interaction]] = {}
    for x in interactions:
        out.setdefault(x.user_id, []).append(x)
    for seq in out.values():
        seq.sort(key=lambda x: x.timestamp or 0)
    return out


def ranking_examples(
    pipe: Pipeline,
    ranker: VerbalizerRanker,
    sequences: dict[str, list[Interaction]],
    users: Sequence[str],
    *,
    per_user: int,
    min_history: int,
    negatives: int,
    n_candidates: int,
    like_threshold: float | None,
    seed: int,
    progress: Callable[[int], None] | None = None,
    targets: Mapping[str, Collection[int]] | None = None,
) -> list[Example]:
    """Ranking examples for ``users`` (see the module docs): up to ``per_user`` each, the last stored item first.

    ``pipe`` is the :class:`~knowrec.agent.pipeline.Pipeline` (no LLM ranking needed) and ``ranker`` the verbalizer
    ranker whose prompt is rendered. Targets are items the user liked (rating above ``like_threshold``, or any
    rating when it is ``None``); with ``targets``, only those positions of each user's sequence (the items the
    probe models never saw, for ``tune.candidates = "held-out"``)."""
    rng = random.Random(seed)
    catalogue = sorted({x.item_id for seq in sequences.values() for x in seq})
    n = min(n_candidates, len(LABELS))
    out: list[Example] = []
    for user in users:
        seq = sequences.get(user, [])
        allowed = None if targets is None else targets.get(user, ())
        cuts = [
            t
            for t in range(len(seq) - 1, min_history - 1, -1)
            if _liked(seq[t], like_threshold) and (allowed is None or t in allowed)
        ]
        if len(cuts) > per_user:
            cuts = [cuts[0], *rng.sample(cuts[1:], per_user - 1)] if per_user > 1 else cuts[:1]
        for t in cuts:
            ex = _ranking_example(pipe, ranker, user, seq[:t], seq[t].item_id, catalogue, negatives, n, rng)
            if ex is not None:
                out.append(ex)
        if progress is not None:
            progress(1)
    return out


def _liked(x: Interaction, threshold: float | None) -> bool:
    return threshold is None or x.rating is None or x.rating >= threshold


def _ranking_example(
    pipe: Pipeline,
    ranker: VerbalizerRanker,
    user: str,
    before: Sequence[Interaction],
    target: str,
    catalogue: Sequence[str],
    negatives: int,
    n: int,
    rng: random.Random,
) -> Example | None:
    prof = pipe.profile_of(user, list(reversed(before)))
    q = RecQuery(user_id=user, k=n, history=prof.liked, seen=prof.seen, sequence=prof.sequence)
    cands = list(pipe.retrieve(q, n).items)
    retrieved = target in {c.item_id for c in cands}
    if not retrieved:
        pos = rng.randrange(min(len(cands) + 1, n))
        cands.insert(pos, Candidate(item_id=target, score=0.0, sources={}))
        cands = cands[:n]
    banned = set(prof.seen) | {c.item_id for c in cands}
    slots = [p for p, c in enumerate(cands) if c.item_id != target]
    for p in rng.sample(slots, min(negatives, len(slots))):
        for _ in range(20):
            neg = catalogue[rng.randrange(len(catalogue))]
            if neg not in banned:
                cands[p] = Candidate(item_id=neg, score=0.0, sources={})
                banned.add(neg)
                break
    if len(cands) < 2:
        return None
    if ranker.shuffle:  # shown as the ranker shows them in serving: the labels follow the order shown
        cands = [cands[p] for p in shown_order([c.item_id for c in cands])]
    ctx, items = pipe.rank_inputs(prof, None, cands)
    _, prompt = ranker._fit_prompt(ctx, items)
    choices = tuple(c.item_id for c in cands)
    return Example(
        "ranking", user, prompt, tuple(LABELS[: len(cands)]), choices.index(target), choices, retrieved=retrieved
    )


_RELATIONS = {"director", "starring", "writer", "genre", "musicComposer", "producer", "basedOn", "distributor"}


def knowledge_examples(
    store: GraphStore,
    llm: LLMClient,
    items: Sequence[str],
    n: int,
    *,
    choices: int,
    seed: int,
) -> list[Example]:
    """``n`` knowledge examples from the stored facts of ``items``: for a fact ``item —relation→ object``, the
    object among ``choices`` entities of that relation (the others drawn from the same relation's objects and
    never also an object of that item)."""
    rng = random.Random(seed)
    template = load_prompt("tune_knowledge")
    system = load_prompt("system").render()
    pool = list(items)
    rng.shuffle(pool)
    pool = pool[: max(4 * n, 200)]
    facts = store.facts(pool, n=8)
    titles = store.items(pool)
    by_relation: dict[str, dict[str, str]] = {}
    triples: list[tuple[str, str, str, str]] = []
    for item, fs in facts.items():
        for f in fs:
            if f.relation in _RELATIONS and f.head == item:
                label = f.tail_label or f.tail
                by_relation.setdefault(f.relation, {})[f.tail] = label
                triples.append((item, f.relation, f.tail, label))
    rng.shuffle(triples)
    out: list[Example] = []
    for item, relation, obj, _label in triples:
        if len(out) >= n:
            break
        own = {f.tail for f in facts[item] if f.relation == relation}
        others = [e for e in by_relation[relation] if e not in own]
        if len(others) < choices - 1 or item not in titles:
            continue
        picked = [*rng.sample(others, choices - 1), obj]
        rng.shuffle(picked)
        labels = tuple(LABELS[: len(picked)])
        text = template.render(
            title=display_title(titles[item].title),
            relation=_relation_words(relation),
            choices=[{"label": lab, "name": by_relation[relation][e]} for lab, e in zip(labels, picked, strict=True)],
        )
        prompt = llm.format_chat([{"role": "system", "content": system}, {"role": "user", "content": text}])
        out.append(Example("knowledge", None, prompt, labels, picked.index(obj), tuple(picked)))
    return out


def _relation_words(relation: str) -> str:
    from knowrec.agent.rank import _RELATION_WORDS

    return _RELATION_WORDS.get(relation, relation)
