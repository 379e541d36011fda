"""LLM rankers: ``verbalizer`` (label log-probabilities, one pass), ``listwise`` (constrained JSON), ``pointwise``
(yes/no log-probabilities, one pass per candidate), ``none``.

Every ranker returns a full ordering of the candidates it was given. The LLM's order is fused with the retrieval
order (both rank-normalised to [0, 1]) so a weak model can only move items so far; invalid LLM output is repaired
(unknown labels and duplicates dropped, gaps filled in retrieval order) and the repair is reported, never silent.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import statistics
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from knowrec.agent.llm.base import LLMClient, Message, logsumexp
from knowrec.errors import InvalidInput, LLMError
from knowrec.prompts import Prompt, load_prompt
from knowrec.types import Candidate, Fact, display_title

__all__ = [
    "LABELS",
    "NO_LABELS",
    "YES_LABELS",
    "ListwiseRanker",
    "PointwiseRanker",
    "RankContext",
    "RankItem",
    "RankResult",
    "Ranker",
    "RetrievalRanker",
    "VerbalizerRanker",
    "display_title",
    "fuse_scores",
    "rank_normalise",
    "short_fact",
    "shown_order",
]

log = logging.getLogger(__name__)

LABELS = tuple(string.ascii_uppercase)
"""Candidate labels shown to the LLM; each is one token in common vocabularies."""

YES_LABELS = ("Yes", "yes")
NO_LABELS = ("No", "no")
"""Answer tokens read by the pointwise ranker, right after the assistant turn opens (no leading space). Each is one
token in SmolLM2's vocabulary (also " yes"/" no", which are not used: no space precedes the answer). The capitalised
forms carry most of the probability mass there; the lower-case ones are added so a model that answers in lower case
is read too. P(yes) is the mass of the yes forms normalised over both."""

_RELATION_WORDS = {
    "director": "director",
    "starring": "starring",
    "writer": "writer",
    "producer": "producer",
    "musicComposer": "music",
    "cinematography": "cinematography",
    "editing": "editor",
    "distributor": "distributor",
    "basedOn": "based on",
    "narrator": "narrator",
    "genre": "genre",
    "year": "year",
    "tag": "tag",
}


def short_fact(fact: Fact, item_id: str) -> str:
    """A compact phrase for a prompt, from the point of view of ``item_id`` (e.g. ``director: Jim Jarmusch``)."""
    other = fact.tail_label or fact.tail if fact.head == item_id else fact.head_label or fact.head
    return f"{_RELATION_WORDS.get(fact.relation, fact.relation)}: {other}"


@dataclass(frozen=True)
class RankItem:
    """A candidate as the ranker sees it: retrieval result, title, and the facts shown in the prompt."""

    candidate: Candidate
    title: str
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True)
class RankContext:
    """The user side of the prompt: liked titles (most recent first) and an optional request."""

    history_titles: tuple[str, ...]
    query: str | None = None


@dataclass
class RankResult:
    """A full ordering of the given candidates, best first, with the scores that produced it."""

    order: list[str]
    final_scores: dict[str, float]
    llm_scores: dict[str, float] = field(default_factory=dict)
    fallback: bool = False
    fallback_reason: str | None = None
    repairs: list[str] = field(default_factory=list)
    prompt: Prompt | None = None
    model: str = "none"
    usage: dict[str, int] = field(default_factory=dict)


class Ranker(Protocol):
    mode: str

    def rank(self, ctx: RankContext, items: Sequence[RankItem], k: int) -> RankResult: ...


def rank_normalise(order: Sequence[str]) -> dict[str, float]:
    """Map an ordering to scores in [0, 1]: first 1.0, last 0.0.

    Example:
        >>> rank_normalise(["a", "b", "c"])
        {'a': 1.0, 'b': 0.5, 'c': 0.0}
    """
    n = len(order)
    if n == 1:
        return {order[0]: 1.0}
    return {item: 1.0 - pos / (n - 1) for pos, item in enumerate(order)}


def fuse_scores(retrieval_order: Sequence[str], llm_order: Sequence[str], llm_weight: float) -> dict[str, float]:
    """``(1 − w) · rank_norm(retrieval) + w · rank_norm(llm)``; both orders must hold the same items."""
    r = rank_normalise(retrieval_order)
    m = rank_normalise(llm_order)
    return {i: (1 - llm_weight) * r[i] + llm_weight * m[i] for i in retrieval_order}


def _order_by(scores: dict[str, float], tie_order: Sequence[str]) -> list[str]:
    pos = {item: p for p, item in enumerate(tie_order)}
    return sorted(scores, key=lambda i: (-scores[i], pos[i]))


def _prompt_candidates(items: Sequence[RankItem], facts: int | None = None) -> list[dict[str, Any]]:
    """The candidates as the templates show them: label, display title, the first ``facts`` facts (all: ``None``)."""
    return [
        {
            "label": LABELS[n],
            "title": display_title(it.title),
            "facts": [{"short": short_fact(f, it.candidate.item_id)} for f in it.facts[:facts]],
        }
        for n, it in enumerate(items)
    ]


def count_tokens(llm: LLMClient, text: str) -> int:
    """Tokens of ``text`` for this LLM: its own tokenizer when it exposes one (``count_tokens``), else an estimate
    of one token per four characters (an HTTP server's tokenizer is not known here)."""
    counter = getattr(llm, "count_tokens", None)
    return int(counter(text)) if callable(counter) else len(text) // 4 + 1


def _messages(system: Prompt, user_text: str) -> list[Message]:
    return [{"role": "system", "content": system.render()}, {"role": "user", "content": user_text}]


class RetrievalRanker:
    """No LLM: the retrieval order is the answer (the ``no LLM`` ablation)."""

    mode = "none"

    def rank(self, ctx: RankContext, items: Sequence[RankItem], k: int) -> RankResult:
        order = [it.candidate.item_id for it in items]
        return RankResult(order=order, final_scores=rank_normalise(order) if order else {})


class _LLMRanker:
    mode = "base"
    prompt_name = ""

    def __init__(self, llm: LLMClient, llm_weight: float = 0.3, prompt_tokens: int | None = None) -> None:
        self.llm = llm
        self.llm_weight = llm_weight
        self.prompt_tokens = prompt_tokens
        """The prompt's token budget (``ranker.prompt_tokens``); ``None``: everything given is shown."""
        self.prompt = load_prompt(self.prompt_name)
        self.system = load_prompt("system")

    def _fit_prompt(self, ctx: RankContext, items: Sequence[RankItem], **extra: Any) -> tuple[str, str]:
        """(user text, whole prompt) within :attr:`prompt_tokens`: all facts and history if they fit; else facts are
        cut to one per candidate (the most connecting ones come first), then the oldest history titles go (one is
        always kept). A prompt still over the budget is used as it is (logged)."""
        history = [display_title(t) for t in ctx.history_titles]
        most = max((len(it.facts) for it in items), default=0)

        def build(n_hist: int, n_facts: int) -> tuple[str, str]:
            text = self.prompt.render(
                history=history[:n_hist], candidates=_prompt_candidates(items, n_facts), query=ctx.query, **extra
            )
            return text, self.llm.format_chat(_messages(self.system, text))

        text, prompt = build(len(history), most)
        budget = self.prompt_tokens
        if budget is None or count_tokens(self.llm, prompt) <= budget:
            return text, prompt
        for n_facts in range(most - 1, 0, -1):
            text, prompt = build(len(history), n_facts)
            if count_tokens(self.llm, prompt) <= budget:
                return text, prompt
        n_facts = min(most, 1)
        lo, hi = 1, max(len(history), 1)  # the longest history that fits, by bisection
        best = build(1, n_facts)
        while lo <= hi:
            mid = (lo + hi) // 2
            text, prompt = build(mid, n_facts)
            if count_tokens(self.llm, prompt) <= budget:
                best, lo = (text, prompt), mid + 1
            else:
                hi = mid - 1
        if count_tokens(self.llm, best[1]) > budget:
            log.info("prompt over its budget of %d tokens with one history title and one fact each", budget)
        return best

    def _check_size(self, items: Sequence[RankItem]) -> None:
        if len(items) > len(LABELS):
            raise InvalidInput(
                f"at most {len(LABELS)} candidates can be ranked by the LLM, got {len(items)}", field="candidates"
            )

    def _fallback(self, order: list[str], reason: str) -> RankResult:
        log.warning("LLM ranking fell back to retrieval order: %s", reason)
        return RankResult(
            order=order,
            final_scores=rank_normalise(order),
            fallback=True,
            fallback_reason=reason,
            prompt=self.prompt,
            model=self.llm.model_id,
        )


def shown_order(item_ids: Sequence[str]) -> list[int]:
    """The positions of ``item_ids`` in the order a shuffling ranker shows them: a permutation seeded by the ids
    themselves, so the same candidates are always shown the same way (in serving, in evaluation and in tuning).

    Example:
        >>> shown_order(["a", "b", "c"]) == shown_order(["a", "b", "c"])
        True
        >>> sorted(shown_order(["a", "b", "c"]))
        [0, 1, 2]
    """
    seed = int(hashlib.sha1("\x1f".join(item_ids).encode()).hexdigest()[:12], 16)
    perm = list(range(len(item_ids)))
    random.Random(seed).shuffle(perm)
    return perm


class VerbalizerRanker(_LLMRanker):
    """One forward pass; each candidate is scored by the log-probability of its label as the answer. With ``shuffle``,
    the candidates are shown in :func:`shown_order` instead of retrieval's (labels follow the order shown)."""

    mode = "verbalizer"
    prompt_name = "rank_verbalizer"

    def __init__(
        self, llm: LLMClient, llm_weight: float = 0.3, prompt_tokens: int | None = None, shuffle: bool = False
    ) -> None:
        super().__init__(llm, llm_weight, prompt_tokens)
        self.shuffle = shuffle

    def rank(self, ctx: RankContext, items: Sequence[RankItem], k: int) -> RankResult:
        self._check_size(items)
        order = [it.candidate.item_id for it in items]
        if len(items) < 2 or self.llm_weight == 0.0:  # weight 0: the LLM's order cannot move an item; not asked
            return RankResult(order=order, final_scores=rank_normalise(order), prompt=self.prompt, model="none")
        labels = list(LABELS[: len(items)])
        shown = [items[p] for p in shown_order(order)] if self.shuffle else list(items)
        try:
            _, prompt = self._fit_prompt(ctx, shown)
            logprobs = self.llm.label_logprobs(prompt, labels)
        except LLMError as exc:
            return self._fallback(order, f"LLM error: {exc}")
        by_item = {it.candidate.item_id: logprobs.get(lab, -math.inf) for it, lab in zip(shown, labels, strict=True)}
        if all(math.isinf(v) for v in by_item.values()):
            return self._fallback(order, "no label received a finite log-probability")
        llm_order = _order_by(by_item, order)
        final = fuse_scores(order, llm_order, self.llm_weight)
        return RankResult(
            order=_order_by(final, order),
            final_scores=final,
            llm_scores={i: (math.exp(v) if not math.isinf(v) else 0.0) for i, v in by_item.items()},
            prompt=self.prompt,
            model=self.llm.model_id,
            usage={"prompt_tokens": getattr(self.llm, "last_prompt_tokens", 0), "completion_tokens": 0},
        )


class ListwiseRanker(_LLMRanker):
    """The LLM writes ``{"ranking": [labels…]}`` constrained by a JSON schema whose items are the label enum."""

    mode = "listwise"
    prompt_name = "rank_listwise"

    def schema(self, labels: Sequence[str], k: int) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "ranking": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(labels)},
                    "minItems": 1,
                    "maxItems": k,
                }
            },
            "required": ["ranking"],
        }

    def rank(self, ctx: RankContext, items: Sequence[RankItem], k: int) -> RankResult:
        self._check_size(items)
        order = [it.candidate.item_id for it in items]
        if len(items) < 2 or self.llm_weight == 0.0:  # weight 0: the LLM's order cannot move an item; not asked
            return RankResult(order=order, final_scores=rank_normalise(order), prompt=self.prompt, model="none")
        want = min(k, len(items))
        labels = list(LABELS[: len(items)])
        try:
            user_text, _ = self._fit_prompt(ctx, items, k=want)
            reply = self.llm.chat(
                _messages(self.system, user_text), schema=self.schema(labels, want), max_tokens=8 + 5 * want
            )
        except LLMError as exc:
            return self._fallback(order, f"LLM error: {exc}")
        ranking = reply.parsed.get("ranking") if isinstance(reply.parsed, dict) else None
        if not isinstance(ranking, list):
            return self._fallback(order, f"LLM answer has no 'ranking' list: {reply.text[:200]!r}")
        label_to_item = dict(zip(labels, order, strict=True))
        repairs: list[str] = []
        llm_order: list[str] = []
        unknown = 0
        dup = 0
        for lab in ranking:
            item = label_to_item.get(str(lab).strip().upper()) if isinstance(lab, str) else None
            if item is None:
                unknown += 1
            elif item in llm_order:
                dup += 1
            else:
                llm_order.append(item)
        if not llm_order:
            return self._fallback(order, f"LLM ranking named no valid candidate: {reply.text[:200]!r}")
        if unknown:
            repairs.append(f"dropped {unknown} unknown label(s)")
        if dup:
            repairs.append(f"dropped {dup} duplicate(s)")
        missing = [i for i in order if i not in llm_order]
        if len(llm_order) < want:
            repairs.append(f"filled {want - len(llm_order)} of the top {want} from retrieval order")
        llm_order += missing
        final = fuse_scores(order, llm_order, self.llm_weight)
        return RankResult(
            order=_order_by(final, order),
            final_scores=final,
            llm_scores=rank_normalise(llm_order),
            repairs=repairs,
            prompt=self.prompt,
            model=reply.model or self.llm.model_id,
            usage=dict(reply.usage),
        )


class PointwiseRanker(_LLMRanker):
    """One yes/no question per candidate; the score is ``log P(yes) − log P(no)`` of the first answer token.

    The prompt opens with the user's history (and query), identical for every candidate of a request, so the KV
    cache of that prefix is reused across candidates (in process) and across requests (a server's prefix cache).
    A candidate whose call fails keeps a neutral score (the median of the others) and is reported as a repair;
    if every call fails the retrieval order is returned, flagged as a fallback. Costs one prompt per candidate.

    Example:
        >>> from knowrec.agent.llm.llama_cpp import LlamaCppClient, bundled_llm_path
        >>> ranker = PointwiseRanker(LlamaCppClient(bundled_llm_path()), llm_weight=0.3)
        >>> titles = {"1": "Ronin (1998)", "2": "Up (2009)"}
        >>> cands = [RankItem(Candidate(item_id=i, score=1.0), t) for i, t in titles.items()]
        >>> res = ranker.rank(RankContext(history_titles=("Heat (1995)",)), cands, k=2)
        >>> sorted(res.order), res.prompt.ref
        (['1', '2'], 'rank_pointwise@2')
    """

    mode = "pointwise"
    prompt_name = "rank_pointwise"
    labels = (*YES_LABELS, *NO_LABELS)

    def _score(self, ctx: RankContext, item: RankItem) -> tuple[float, float, int]:
        """(yes − no log-odds, P(yes) over {yes, no}, prompt tokens) for one candidate; raises LLMError."""
        cand = _prompt_candidates([item])[0]
        history = [display_title(t) for t in ctx.history_titles]
        user_text = self.prompt.render(history=history, query=ctx.query, candidate=cand)
        prompt = self.llm.format_chat(_messages(self.system, user_text))
        logprobs = self.llm.label_logprobs(prompt, list(self.labels))
        tokens = int(getattr(self.llm, "last_prompt_tokens", 0) or 0)
        yes = logsumexp([logprobs.get(lab, -math.inf) for lab in YES_LABELS])
        no = logsumexp([logprobs.get(lab, -math.inf) for lab in NO_LABELS])
        if math.isinf(yes) and math.isinf(no):
            raise LLMError("neither yes nor no received a finite log-probability", retryable=False)
        both = logsumexp([yes, no])
        return yes - no, math.exp(yes - both), tokens

    def rank(self, ctx: RankContext, items: Sequence[RankItem], k: int) -> RankResult:
        order = [it.candidate.item_id for it in items]
        if len(items) < 2 or self.llm_weight == 0.0:  # weight 0: the LLM's order cannot move an item; not asked
            return RankResult(order=order, final_scores=rank_normalise(order), prompt=self.prompt, model="none")
        scores: dict[str, float] = {}
        p_yes: dict[str, float] = {}
        failed: dict[str, str] = {}
        prompt_tokens = 0
        for it in items:
            item_id = it.candidate.item_id
            try:
                score, prob, tokens = self._score(ctx, it)
            except LLMError as exc:
                failed[item_id] = str(exc)
                continue
            scores[item_id], p_yes[item_id] = score, prob
            prompt_tokens += tokens
        if not scores:
            first = next(iter(failed.values()))
            return self._fallback(order, f"LLM error on all {len(order)} candidates: {first}")
        repairs: list[str] = []
        if failed:
            neutral = statistics.median(scores.values())
            for item_id in failed:
                scores[item_id] = neutral
            shown = "; ".join(f"{i}: {e}" for i, e in list(failed.items())[:3])
            repairs.append(f"{len(failed)} candidate(s) kept a neutral LLM score after an LLM error ({shown})")
        llm_order = _order_by(scores, order)
        final = fuse_scores(order, llm_order, self.llm_weight)
        return RankResult(
            order=_order_by(final, order),
            final_scores=final,
            llm_scores=p_yes,
            repairs=repairs,
            prompt=self.prompt,
            model=self.llm.model_id,
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": 0, "llm_calls": len(order)},
        )
