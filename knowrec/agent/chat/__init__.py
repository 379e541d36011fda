"""The chat agent: sessions, profile extraction, and the per-turn decision (ask, look up, recommend).

A session keeps its turns and a :class:`~knowrec.types.ChatProfile` (liked/disliked items, included/excluded genres
and people, era, "like X but …") in SQLite, so a restarted process continues it. Every message is read by simple
rules (the floor) and, when an LLM is configured, by the LLM with a JSON schema; both are merged, rules winning on
conflicts, and an LLM answer that fails or does not fit the message is ignored. Recommendations go through the same
pipeline as :meth:`knowrec.Recommender.recommend`; the profile is then enforced hard (excluded genres/people and
items outside the era never appear; items close to disliked ones move down).

Example:
    >>> from knowrec import Recommender, Settings
    >>> rec = Recommender(Settings(data_dir="/tmp/knowrec-demo"))  # doctest: +SKIP
    >>> sid = rec.new_session()  # doctest: +SKIP
    >>> turn = rec.chat(sid, "something like Toy Story but no comedies")  # doctest: +SKIP
    >>> turn.action, turn.items  # doctest: +SKIP
    ('recommend', ('2355', ...))
"""

from knowrec.agent.chat.agent import DISLIKED_RATING, LIKED_RATING, ChatAgent, RecommendFn
from knowrec.agent.chat.answer import profile_summary
from knowrec.agent.chat.extraction import LLMExtractor
from knowrec.agent.chat.rules import (
    ProfileDelta,
    StoreTitles,
    TitleResolver,
    apply_delta,
    extract_rules,
    merge_deltas,
    resolve_title,
    rules_left_something,
)
from knowrec.agent.chat.sessions import SessionInfo, SessionStore
from knowrec.agent.chat.vocabulary import Vocabulary

__all__ = [
    "DISLIKED_RATING",
    "LIKED_RATING",
    "ChatAgent",
    "LLMExtractor",
    "ProfileDelta",
    "RecommendFn",
    "SessionInfo",
    "SessionStore",
    "StoreTitles",
    "TitleResolver",
    "Vocabulary",
    "apply_delta",
    "extract_rules",
    "merge_deltas",
    "profile_summary",
    "resolve_title",
    "rules_left_something",
]
