"""The chat's answer text: the profile summary, the answer's first line, the picks with their reasons, and the note
on relaxed constraints."""

from __future__ import annotations

from collections.abc import Sequence

from knowrec.agent.chat.rules import StoreTitles, TitleResolver
from knowrec.kg_store.base import GraphStore
from knowrec.types import ChatProfile, Fact, Recommendation, display_title

__all__ = ["answer_text", "head_line", "profile_summary", "relaxation_note"]


def _describe(profile: ChatProfile, titles: TitleResolver) -> str:
    """A short readable summary of a profile ("no Comedy; 1990–1999; like Toy Story (1995)")."""
    parts: list[str] = []
    ids = [*profile.liked, *profile.disliked, *([profile.like_item] if profile.like_item else [])]
    names = {i: display_title(t) for i, t in titles.titles(ids).items()} if ids else {}
    if profile.like_item:
        parts.append(f"like {names.get(profile.like_item, profile.like_item)}")
    if profile.modifier:
        parts.append(profile.modifier)
    if profile.include_genres or profile.include_people:
        parts.append("with " + ", ".join([*profile.include_genres, *profile.include_people]))
    if profile.exclude_genres or profile.exclude_people or profile.exclude_titles:
        parts.append("no " + ", ".join([*profile.exclude_genres, *profile.exclude_people, *profile.exclude_titles]))
    if profile.era:
        lo, hi = profile.era
        parts.append(f"{lo or '…'}–{hi or '…'}")
    for lo, hi in profile.exclude_eras:
        parts.append(f"not {lo or '…'}–{hi or '…'}")
    if profile.query:
        parts.append(f"“{profile.query}”")
    if profile.liked:
        parts.append("liked " + ", ".join(names.get(i, i) for i in profile.liked[-3:]))
    if profile.disliked:
        parts.append("not " + ", ".join(names.get(i, i) for i in profile.disliked[-3:]))
    return "; ".join(parts)


def profile_summary(profile: ChatProfile, store: GraphStore) -> str:
    """Public form of the profile summary (used by the CLI's ``/profile``)."""
    return _describe(profile, StoreTitles(store)) or "nothing yet"


def head_line(profile: ChatProfile, titles: TitleResolver, feedback: bool, paging: bool = False) -> str:
    """The answer's first line, known before retrieval ("Here are my picks (no Comedy; 1990–1999):")."""
    said = _describe(profile, titles)
    picks = "Here are more picks" if paging else "Here are my picks"
    return ("Thanks, noted. " if feedback else "") + picks + (f" ({said})" if said else "") + ":"


def relaxation_note(shown: int, relaxed: Sequence[str]) -> str:
    """The line saying which constraints were relaxed (in order) to fill an answer of ``shown`` items."""
    return f"(Fewer than {shown} fit everything you asked; to fill the list I relaxed " + ", then ".join(relaxed) + ".)"


def answer_text(
    rec: Recommendation,
    profile: ChatProfile,
    head: str,
    titles: TitleResolver,
    announced: bool,
    relaxed: Sequence[str] = (),
) -> tuple[str, tuple[Fact, ...]]:
    """The answer's text; an ``announced`` first line (already streamed) is kept even if nothing is left."""
    if not rec.items:
        said = _describe(profile, titles)
        nothing = (
            "I found nothing that fits " + (said or "that") + ". Try relaxing a constraint (say “reset” to start over)."
        )
        return (head + "\n" + nothing if announced else nothing), ()
    lines = []
    facts: dict[str, Fact] = {}
    for it in rec.items:
        reasons = "; ".join(
            r.text + ("" if not r.fact_ids else " " + "".join(f"[{f}]" for f in r.fact_ids)) for r in it.reasons[:2]
        )
        lines.append(f"{it.rank}. {it.display_title}" + (f" — {reasons}" if reasons else ""))
        for f in it.facts:
            facts.setdefault(f.id, f)
    if relaxed:
        lines.append(relaxation_note(len(rec.items), relaxed))
    return head + "\n" + "\n".join(lines), tuple(facts.values())
