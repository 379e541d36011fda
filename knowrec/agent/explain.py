"""Reasons for each recommended item, citing fact ids; LLM-written reasons are kept only if grounded.

Template reasons built from KG paths (or from the item's own facts) are the floor. With ``mode='llm'`` the LLM
writes a sentence per item and cites fact numbers; a sentence is kept only if every fact it cites exists in the store
and touches that item.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from knowrec.agent.llm.base import LLMClient
from knowrec.agent.rank import LABELS
from knowrec.errors import LLMError
from knowrec.prompts import load_prompt
from knowrec.types import DATASET_SOURCE, Fact, KGPath, Reason, display_title

__all__ = [
    "ExplainInput",
    "LLMExplainer",
    "dismissive",
    "is_grounded",
    "not_a_reason",
    "other_label",
    "personal",
    "relation_phrase",
    "template_reasons",
]

log = logging.getLogger(__name__)

_PHRASES = {
    "director": "Directed by {e}",
    "starring": "Stars {e}",
    "writer": "Written by {e}",
    "producer": "Produced by {e}",
    "musicComposer": "Music by {e}",
    "cinematography": "Shot by {e}",
    "editing": "Edited by {e}",
    "distributor": "Distributed by {e}",
    "basedOn": "Based on {e}",
    "narrator": "Narrated by {e}",
    "year": "Released in {e}",
    "tag": "Tagged “{e}”",
}

FROM_TEXT = "(read from the item's text)"
"""Marks a reason that rests on a fact ``knowrec kg extract`` read from an item's text rather than one from the data."""

SPECIFICITY = (
    "director", "writer", "basedOn", "starring", "narrator", "musicComposer", "cinematography", "editing",
    "producer", "tag", "genre", "distributor", "year",
)  # fmt: skip
"""Relations from the most telling connection to the least: a shared director before a shared distributor."""


_DISAMBIGUATION = re.compile(r"\s+\([^()]*\)$")
# a user's tag that judges the film badly: true as a fact, never a reason to watch it ("Tagged “bad dialogue”")
_DISMISSIVE = re.compile(
    r"\b(?:bad(?![\s-]*ass\b)(?! language\b)|poor (?:story|plot|dialogue|acting|writing|script|\w+ development)"
    r"|boring|predictable|predictible|over-?rated|worst|awful|terrible|stupid(?! is as)|dumb|disappoint\w*|weak"
    r"|clich[eé]d?|cheesy|waste of|meh|mediocre|pointless|unfunny|annoying|forgettable|bland|lame|pretentious"
    r"|horrible|ridiculous|confusing|plot ?holes?|overlong|tedious|nonsense|dull|not funny|too (?:long|many|much|slow)"
    r"|slow[ -]paced|slow action|fail(?:ed|s)?)\b",
    re.IGNORECASE,
)


def dismissive(relation: str, label: str) -> bool:
    """Whether a fact is a tag that judges the item badly (no reason to pick it, however many share it).

    Example:
        >>> dismissive("tag", "bad dialogue"), dismissive("tag", "badass"), dismissive("tag", "dark comedy")
        (True, False, False)
        >>> dismissive("tag", "Plot holes"), dismissive("tag", "Bechdel Test:Fail"), dismissive("director", "Terrible")
        (True, True, False)
    """
    return relation == "tag" and _DISMISSIVE.search(label) is not None


# a user's tag about their own viewing, not about the film: "in netflix queue" (131 films of the demo, one user),
# "seen at the cinema", "not available from netflix", "my dvds"; or a bare user name ("ummarti2006")
_PERSONAL = re.compile(
    r"\b(?:(?:in|on) (?:my |the |netflix )?(?:queue|watch ?list|wish ?list)|netflix|(?:not |un)?seen\b(?! it all)"
    r"|(?:to|want to|must) (?:see|watch)\b|(?:re)?watched|my (?:dvds?|blu-?rays?|collection|library|list)"
    r"|owned|(?:on|no|have (?:it )?on) (?:dvd|blu-?ray|vhs))"
    r"|^[a-z]+[a-z._-]*\d{3,}$",
    re.IGNORECASE,
)


def personal(relation: str, label: str) -> bool:
    """Whether a fact is a tag about its tagger's own viewing rather than the item (a queue, a copy, "seen"), or a
    user name: true as a record, never a reason.

    Example:
        >>> personal("tag", "In Netflix queue"), personal("tag", "seen at the cinema"), personal("tag", "ummarti2006")
        (True, True, True)
        >>> personal("tag", "queue jumping"), personal("tag", "2001-like"), personal("tag", "1970s")
        (False, False, False)
    """
    return relation == "tag" and _PERSONAL.search(label) is not None


def not_a_reason(relation: str, label: str) -> bool:
    """A fact no reason may rest on, however rare: a tag that runs the item down (:func:`dismissive`) or one about
    its tagger (:func:`personal`)."""
    return dismissive(relation, label) or personal(relation, label)


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def relation_phrase(relation: str, entity_label: str) -> str:
    """Readable phrase for an item's fact, e.g. ``relation_phrase("director", "Jim Jarmusch")``.

    A knowledge graph's disambiguation in brackets is dropped from the name (DBpedia's ``Michael Kahn (film
    editor)``); a tag is quoted as it is.

    Example:
        >>> relation_phrase("director", "Jim Jarmusch"), relation_phrase("genre", "Action")
        ('Directed by Jim Jarmusch', 'An action film')
        >>> relation_phrase("editing", "Michael Kahn (film editor)")
        'Edited by Michael Kahn'
    """
    if relation == "genre":
        name = entity_label if entity_label.isupper() else entity_label.lower()  # "IMAX" stays
        return f"{_article(name)} {name} film"
    if relation != "tag":
        entity_label = _DISAMBIGUATION.sub("", entity_label) or entity_label
    return _PHRASES.get(relation, "{r}: {e}").format(e=entity_label, r=relation)


def other_label(fact: Fact, item_id: str) -> str:
    """The label of what a fact ties ``item_id`` to (its tail, or its head when the item is the tail)."""
    return (fact.tail_label or fact.tail) if fact.head == item_id else (fact.head_label or fact.head)


def _join_titles(titles: Sequence[str]) -> str:
    return titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]


def _sentence(phrases: Sequence[str]) -> str:
    """Phrases joined into one sentence: "Directed by X; stars Y."."""
    return "; ".join(p if n == 0 else p[:1].lower() + p[1:] for n, p in enumerate(phrases)) + "."


@dataclass(frozen=True)
class ExplainInput:
    """What the explainer knows about one returned item."""

    item_id: str
    title: str
    paths: tuple[KGPath, ...]
    own_facts: tuple[Fact, ...]


def template_reasons(
    inp: ExplainInput,
    history_titles: Mapping[str, str],
    max_reasons: int = 3,
    shares: Mapping[str, float] | None = None,
    max_share: float = 1.0,
) -> list[Reason]:
    """Reasons from KG paths, one per shared entity, the most specific relation first (:data:`SPECIFICITY`), then the
    rarest; else from the item's own facts. A connection through an entity that more than ``max_share`` of the
    catalogue shares (``shares``: entity → share of items) is no reason ("also a drama", "also from Warner Bros.")."""
    reasons: list[Reason] = []
    by_entity: dict[str, list[KGPath]] = {}
    for p in sorted(inp.paths, key=lambda p: -p.weight):
        if (shares or {}).get(p.entity, 0.0) > max_share or not_a_reason(p.target_relation, p.entity_label or ""):
            continue
        by_entity.setdefault(p.entity, []).append(p)
    rank = {r: n for n, r in enumerate(SPECIFICITY)}
    groups = sorted(by_entity.values(), key=lambda ps: (rank.get(ps[0].target_relation, len(rank)), -ps[0].weight))
    for paths in groups:
        if len(reasons) >= max_reasons:
            break
        first = paths[0]
        titles = list(dict.fromkeys(display_title(history_titles.get(p.source_item, p.source_item)) for p in paths))[:2]
        phrase = relation_phrase(first.target_relation, first.entity_label or first.entity)
        if all(p.source_relation == first.target_relation for p in paths):
            text = f"{phrase}, like {_join_titles(titles)}, which you liked"
        else:
            text = f"{phrase}, who is also behind {_join_titles(titles)}, which you liked"
        text += f" {FROM_TEXT}." if first.extracted or any(p.extracted for p in paths[:2]) else "."
        reasons.append(
            Reason(
                text=text,
                fact_ids=(first.target_fact,),
                context_fact_ids=tuple(dict.fromkeys(p.source_fact for p in paths[:2])),
            )
        )
    own = [f for f in inp.own_facts if not not_a_reason(f.relation, other_label(f, inp.item_id))]
    if not reasons and own:
        # the two most telling of the item's facts (a director before a tag), rarest first within a relation
        order = sorted(range(len(own)), key=lambda n: (rank.get(own[n].relation, len(rank)), n))
        facts = [own[n] for n in order[:2]]
        text = _sentence([relation_phrase(f.relation, other_label(f, inp.item_id)) for f in facts])
        if any(f.source != DATASET_SOURCE for f in facts):
            text = f"{text[:-1]} {FROM_TEXT}."
        reasons.append(Reason(text=text, fact_ids=tuple(f.id for f in facts)))
    return reasons


def is_grounded(reason: Reason, item_id: str, stored: Mapping[str, Fact]) -> bool:
    """True when the reason cites at least one fact and every cited fact exists in ``stored`` and touches the item.

    Context facts (about history items) must exist too.
    """
    if not reason.fact_ids:
        return False
    for fid in reason.fact_ids:
        fact = stored.get(fid)
        if fact is None or item_id not in (fact.head, fact.tail):
            return False
    return all(fid in stored for fid in reason.context_fact_ids)


class LLMExplainer:
    """Asks the LLM for one sentence per item citing numbered facts, in one constrained JSON answer."""

    def __init__(self, llm: LLMClient, max_chars: int = 240) -> None:
        self.llm = llm
        self.prompt = load_prompt("explain")
        self.system = load_prompt("system")
        self.max_chars = max_chars

    def explain(
        self, items: Sequence[ExplainInput], history_titles: Sequence[str]
    ) -> tuple[dict[str, Reason], dict[str, int]]:
        """Proposed (unchecked) reasons by item id, and token usage. Raises nothing on a bad answer."""
        if not items:
            return {}, {}
        alias_to_fact: dict[str, str] = {}
        prompt_items: list[dict[str, Any]] = []
        for n, it in enumerate(items):
            facts = []
            for f in it.own_facts:
                if not_a_reason(f.relation, other_label(f, it.item_id)):
                    continue
                alias = f"f{len(alias_to_fact) + 1}"
                alias_to_fact[alias] = f.id
                facts.append({"alias": alias, "text": relation_phrase(f.relation, other_label(f, it.item_id))})
            prompt_items.append({"label": LABELS[n], "title": it.title, "facts": facts})
        labels = list(LABELS[: len(items)])
        schema = {
            "type": "object",
            "properties": {
                "reasons": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "item": {"type": "string", "enum": labels},
                            "text": {"type": "string", "maxLength": self.max_chars},
                            "facts": {
                                "type": "array",
                                "items": {"type": "string", "enum": list(alias_to_fact) or ["f1"]},
                                "minItems": 1,
                                "maxItems": 3,
                            },
                        },
                        "required": ["item", "text", "facts"],
                    },
                    "minItems": 1,
                    "maxItems": len(items),
                }
            },
            "required": ["reasons"],
        }
        text = self.prompt.render(history=list(history_titles), items=prompt_items)
        messages = [{"role": "system", "content": self.system.render()}, {"role": "user", "content": text}]
        try:
            reply = self.llm.chat(messages, schema=schema, max_tokens=60 * len(items))
        except LLMError as exc:
            log.warning("LLM explanation failed, keeping template reasons: %s", exc)
            return {}, {}
        out: dict[str, Reason] = {}
        raw = reply.parsed.get("reasons") if isinstance(reply.parsed, dict) else None
        for entry in raw if isinstance(raw, list) else []:
            if not isinstance(entry, dict):
                continue
            label = entry.get("item")
            sentence = str(entry.get("text", "")).strip()
            cited = entry.get("facts") or []
            if label not in labels or not sentence or not isinstance(cited, list):
                continue
            item_id = items[labels.index(label)].item_id
            # An alias the LLM invented maps to a fact id that does not exist, so the grounding check drops it.
            fact_ids = tuple(alias_to_fact.get(str(a), f"unknown:{a}") for a in cited)
            out.setdefault(item_id, Reason(text=sentence[: self.max_chars], fact_ids=fact_ids, source="llm"))
        return out, dict(reply.usage)
