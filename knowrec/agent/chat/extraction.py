"""Profile extraction by the LLM: a JSON-schema answer about one message, kept only where the message supports it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from knowrec.agent.chat.answer import _describe
from knowrec.agent.chat.rules import _GENERIC, ProfileDelta, TitleResolver, _add
from knowrec.agent.chat.vocabulary import Vocabulary, _norm
from knowrec.agent.llm.base import LLMClient
from knowrec.errors import KnowrecError
from knowrec.prompts import load_prompt
from knowrec.types import ChatProfile

__all__ = ["LLMExtractor"]

log = logging.getLogger(__name__)


class LLMExtractor:
    """Reads a message with the LLM (JSON schema) and grounds the answer in the message and the store's labels.

    Args:
        llm: returns the LLM client, or ``None`` (called on each extraction, so lazily).
        titles: resolves the titles the LLM names.
    """

    def __init__(self, llm: Callable[[], LLMClient | None], titles: TitleResolver) -> None:
        self._llm = llm
        self.titles = titles

    def extract(
        self, message: str, vocab: Vocabulary, profile: ChatProfile, last_items: Sequence[str]
    ) -> ProfileDelta | None:
        """What the LLM reads in ``message`` (grounded), or ``None`` without an LLM or with an unusable answer."""
        try:
            llm = self._llm()
        except KnowrecError as exc:
            log.info("chat: no LLM for extraction (%s)", exc)
            return None
        if llm is None:
            return None
        genres = sorted(set(vocab.genres.values()))
        titles = self.titles.titles(last_items[:5])
        prompt = load_prompt("chat_extract")
        text = prompt.render(
            message=message,
            last_titles=[titles[i] for i in last_items[:5] if i in titles],
            genres=genres,
            profile=_describe(profile, self.titles) if not profile.is_empty() else "",
        )
        str_list = {"type": "array", "items": {"type": "string"}, "maxItems": 3}
        genre_list = (
            {"type": "array", "items": {"type": "string", "enum": genres}, "maxItems": 3} if genres else str_list
        )
        props: dict[str, Any] = {
            "liked_titles": str_list,
            "disliked_titles": str_list,
            "include_genres": genre_list,
            "exclude_genres": genre_list,
            "include_people": str_list,
            "exclude_people": str_list,
            "from_year": {"type": "integer"},
            "to_year": {"type": "integer"},
            "like_title": {"type": "string"},
            "modifier": {"type": "string"},
            "query": {"type": "string"},
        }
        schema = {"type": "object", "properties": props, "required": list(props)}
        try:
            reply = llm.chat([{"role": "user", "content": text}], schema=schema, max_tokens=200)
            return self.ground(reply.parsed, message, vocab)
        except KnowrecError as exc:
            log.info("chat: LLM extraction failed, rules only: %s", exc)
        except Exception as exc:  # a nonsense answer must never break the conversation
            log.info("chat: unusable LLM extraction, rules only: %r", exc)
        return None

    def ground(self, parsed: Any, message: str, vocab: Vocabulary) -> ProfileDelta | None:
        """Keep only what the LLM said that the message supports (names that appear in it, known labels)."""
        if not isinstance(parsed, dict):
            return None
        msg = _norm(message)
        msg_words = set(msg.split())
        d = ProfileDelta()

        def strings(key: str) -> list[str]:
            v = parsed.get(key)
            return [s for s in v if isinstance(s, str) and s.strip()] if isinstance(v, list) else []

        def one(key: str) -> str | None:
            v = parsed.get(key)
            return v.strip() if isinstance(v, str) and v.strip() else None

        for key, target in (("include_genres", d.include_genres), ("exclude_genres", d.exclude_genres)):
            for g in strings(key):
                label = vocab.genre(_norm(g))
                if label and any(w[:4] in msg for w in _norm(label).split() if len(w) >= 3):
                    _add(target, label)
        for key, target in (("include_people", d.include_people), ("exclude_people", d.exclude_people)):
            for p in strings(key):
                label = vocab.resolve_person(p)
                if label and set(_norm(label).split()) & msg_words:
                    _add(target, label)
        for key, target in (("liked_titles", d.liked), ("disliked_titles", d.disliked)):
            for t in strings(key):
                if set(_norm(t).split()) - _GENERIC <= msg_words:
                    item = self.titles.resolve(t)
                    if item is not None:
                        _add(target, item.id)
        like = one("like_title")
        if like and set(_norm(like).split()) - _GENERIC <= msg_words:
            item = self.titles.resolve(like)
            d.like_item = item.id if item else None
        for key in ("modifier", "query"):
            v = one(key)
            if v and set(_norm(v).split()) <= msg_words and set(_norm(v).split()) - _GENERIC:
                setattr(d, key, v)
        years = [parsed.get("from_year"), parsed.get("to_year")]
        free = re.sub(r"\(\s*\d{4}\s*\)", " ", message)  # "Alien (1979)": a title's year is not an era
        era = tuple(y if isinstance(y, int) and 1870 <= y <= 2100 and str(y) in free else None for y in years)
        if era != (None, None):
            d.era = (era[0], era[1])
        return d
