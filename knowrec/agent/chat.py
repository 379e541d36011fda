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

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowrec.agent.llm.base import LLMClient
from knowrec.config import ChatConfig
from knowrec.errors import InvalidInput, KnowrecError, NotFound
from knowrec.kg_store.base import GraphBatch, GraphStore
from knowrec.prompts import load_prompt
from knowrec.types import ChatProfile, ChatProgress, ChatTurn, Fact, Interaction, Item, Recommendation

__all__ = [
    "ChatAgent",
    "ProfileDelta",
    "SessionInfo",
    "SessionStore",
    "Vocabulary",
    "extract_rules",
    "merge_deltas",
    "profile_summary",
]

log = logging.getLogger(__name__)

LIKED_RATING = 5.0
DISLIKED_RATING = 1.0

# ------------------------------------------------------------------------------------------------------------------
# sessions


@dataclass(frozen=True)
class SessionInfo:
    """A stored session."""

    id: str
    user_id: str
    profile: ChatProfile
    created_at: float
    updated_at: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, profile TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id), seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    payload TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (session_id, seq)
);
"""


class SessionStore:
    """Sessions and their turns in one SQLite file (``":memory:"`` for a throw-away store); thread-safe.

    Example:
        >>> s = SessionStore(":memory:")
        >>> info = s.create("abc", None)
        >>> info.user_id, s.get("abc").profile.is_empty()
        ('chat:abc', True)
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                if str(self.path) != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._conn = conn
            with self._conn:
                yield self._conn

    def create(self, session_id: str | None, user_id: str | None) -> SessionInfo:
        """Create a session (a fresh id when ``session_id`` is None); its user is ``user_id`` or ``chat:<id>``."""
        sid = session_id or secrets.token_hex(8)
        now = time.time()
        user = user_id or f"chat:{sid}"
        with self._db() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sessions (id, user_id, profile, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (sid, user, ChatProfile().model_dump_json(), now, now),
            )
        info = self.get(sid)
        assert info is not None
        return info

    def get(self, session_id: str) -> SessionInfo | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT id, user_id, profile, created_at, updated_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None:
            return None
        return SessionInfo(row[0], row[1], ChatProfile.model_validate_json(row[2]), row[3], row[4])

    def save_profile(self, session_id: str, profile: ChatProfile) -> None:
        with self._db() as conn:
            conn.execute(
                "UPDATE sessions SET profile = ?, updated_at = ? WHERE id = ?",
                (profile.model_dump_json(), time.time(), session_id),
            )

    def append(self, turn: ChatTurn) -> None:
        with self._db() as conn:
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?", (turn.session_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO turns (session_id, seq, role, text, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (turn.session_id, seq, turn.role, turn.text, turn.model_dump_json(), turn.created_at),
            )
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), turn.session_id))

    def turns(self, session_id: str) -> list[ChatTurn]:
        with self._db() as conn:
            rows = conn.execute("SELECT payload FROM turns WHERE session_id = ? ORDER BY seq", (session_id,)).fetchall()
        return [ChatTurn.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ------------------------------------------------------------------------------------------------------------------
# text helpers and the store's vocabulary


def _norm(text: str) -> str:
    """Lowercase, apostrophes dropped, other non-alphanumerics as single spaces."""
    text = text.casefold().replace("'", "").replace("’", "")
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE_SUFFIX = re.compile(r",\s*(the|a|an)$", re.IGNORECASE)


def _core_title(title: str) -> str:
    """``"Matrix, The (1999)"`` → ``"the matrix"`` (normalised, year dropped, article moved to the front)."""
    t = _YEAR_SUFFIX.sub("", title).strip()
    m = _ARTICLE_SUFFIX.search(t)
    if m:
        t = f"{m.group(1)} {t[: m.start()]}"
    return _norm(t)


def _strip_article(text: str) -> str:
    return re.sub(r"^(the|a|an) ", "", text)


_NON_PERSON_RELATIONS = {"genre", "year", "tag"}
# extra spellings of common genre names (normalised) → the stored label's normalised form
_GENRE_SYNONYMS = {
    "comedies": "comedy",
    "funny": "comedy",
    "romantic": "romance",
    "romcom": "romance",
    "romcoms": "romance",
    "scifi": "sci fi",
    "science fiction": "sci fi",
    "animated": "animation",
    "cartoons": "animation",
    "cartoon": "animation",
    "kids": "children",
    "family": "children",
    "documentaries": "documentary",
    "musicals": "musical",
    "westerns": "western",
    "thrillers": "thriller",
    "dramas": "drama",
    "horror movies": "horror",
    "horrors": "horror",
    "scary": "horror",
    "noir": "film noir",
    "war movies": "war",
    "war films": "war",
    "mysteries": "mystery",
    "fantasies": "fantasy",
    "adventures": "adventure",
    "action movies": "action",
    "crime movies": "crime",
}


@dataclass
class Vocabulary:
    """Entity labels and item years read once from the store, for matching mentions in messages."""

    genres: dict[str, str] = field(default_factory=dict)
    """Normalised genre label → label as stored."""
    people: dict[str, str] = field(default_factory=dict)
    """Normalised label → label for named entities (people, studios, …): not genres, years or tags."""
    label_ids: dict[str, set[str]] = field(default_factory=dict)
    """Label as stored → entity ids carrying it."""
    kind: dict[str, str] = field(default_factory=dict)
    """Entity id → ``genre``, ``year``, ``tag`` or ``person``."""
    entity_items: dict[str, set[str]] = field(default_factory=dict)
    years: dict[str, int] = field(default_factory=dict)
    """Item id → year (from the ``year`` attribute or a ``year`` fact)."""
    last_word: dict[str, set[str]] = field(default_factory=dict)
    """Normalised last word of a person label → labels (to resolve "Spielberg")."""
    max_words: int = 1

    @classmethod
    def build(cls, store: GraphStore, batch: int = 500) -> Vocabulary:
        v = cls()
        item_ids: set[str] = set()
        batches: list[list[Item]] = []
        for items in store.iter_items(batch):
            batches.append(items)
            for it in items:
                item_ids.add(it.id)
                y = (it.attributes or {}).get("year", "")
                if y[:4].isdigit():
                    v.years[it.id] = int(y[:4])
        for items in batches:
            for item_id, facts in store.facts([it.id for it in items]).items():
                for f in facts:
                    if f.head == item_id:
                        other, label = f.tail, f.tail_label
                    else:
                        other, label = f.head, f.head_label
                    if other in item_ids:
                        continue
                    rel = f.relation
                    kind = rel if rel in _NON_PERSON_RELATIONS else "person"
                    if other.startswith("genre:"):
                        kind = "genre"
                    v.kind.setdefault(other, kind)
                    v.entity_items.setdefault(other, set()).add(item_id)
                    label = label or other.split(":", 1)[-1]
                    if kind == "year" and item_id not in v.years and label[:4].isdigit():
                        v.years[item_id] = int(label[:4])
                    if kind not in ("genre", "person"):
                        continue
                    key = _norm(label)
                    if len(key) < 3 or not re.search(r"[a-z]", key):
                        continue
                    v.label_ids.setdefault(label, set()).add(other)
                    if kind == "genre":
                        v.genres.setdefault(key, label)
                    else:
                        v.people.setdefault(key, label)
                        bare = _norm(re.sub(r"\s*\(.*?\)", "", label))  # "Michael Mann (director)"
                        if len(bare) >= 3:
                            v.people.setdefault(bare, label)
                        v.max_words = max(v.max_words, min(len(key.split()), 6))
        for key, label in v.people.items():
            words = key.split()
            if len(words) > 1 and len(words[-1]) >= 4:
                v.last_word.setdefault(words[-1], set()).add(label)
        return v

    def genre(self, phrase: str) -> str | None:
        """The stored genre label a normalised phrase names ("comedies" → "Comedy"), if any."""
        phrase = _GENRE_SYNONYMS.get(phrase, phrase)
        for cand in (phrase, phrase.removesuffix("s"), re.sub(r"ies$", "y", phrase), phrase.replace(" ", "")):
            if cand in self.genres:
                return self.genres[cand]
        for label_key, label in self.genres.items():
            if label_key.replace(" ", "") == phrase.replace(" ", ""):
                return label
        return None

    def person(self, phrase: str) -> str | None:
        """The stored label a normalised phrase names exactly, if any."""
        return self.people.get(phrase)

    def resolve_person(self, text: str) -> str | None:
        """A person label for free text (an exact label, or a unique one with the same last name)."""
        key = _norm(text)
        if key in self.people:
            return self.people[key]
        last = key.split()[-1] if key else ""
        hits = self.last_word.get(last, set())
        return next(iter(hits)) if len(hits) == 1 else None

    def items_of(self, labels: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for label in labels:
            for eid in self.label_ids.get(label, ()):
                out |= self.entity_items.get(eid, set())
        return out

    def ids_of(self, labels: Iterable[str]) -> set[str]:
        return {eid for label in labels for eid in self.label_ids.get(label, ())}


# ------------------------------------------------------------------------------------------------------------------
# rules


@dataclass
class ProfileDelta:
    """What one message changes (or asks)."""

    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    include_genres: list[str] = field(default_factory=list)
    exclude_genres: list[str] = field(default_factory=list)
    include_people: list[str] = field(default_factory=list)
    exclude_people: list[str] = field(default_factory=list)
    era: tuple[int | None, int | None] | None = None
    like_item: str | None = None
    modifier: str | None = None
    query: str | None = None
    reset: bool = False
    feedback: bool = False
    """The message is (also) feedback on the last recommended items."""
    lookup: tuple[str, str, str] | None = None
    """``(kind, target, relation)``: kind ``item`` (an item id) or ``entity`` (a label); relation may be ``""``."""
    lookup_failed: str | None = None
    """A lookup was asked for but its target was not found (the text asked about)."""
    unparsed: list[str] = field(default_factory=list)
    """Content words the rules mapped to nothing (no genre, person, title, era, query): the LLM may read them."""
    more: int | None = None
    """The message asks for more of the same ("more", "next", "something else", "three more"): how many (0 = as
    many as usual); the profile stays, the items already shown are not shown again."""
    rejected: bool = False
    """The message turns down the last answer ("none of these", "not those", "no."), and may go on to say more."""

    def is_empty(self) -> bool:
        return self == ProfileDelta()


_CLAUSE_SPLIT = re.compile(r"[.;!?\n]+|,|\bbut\b|\bhowever\b", re.IGNORECASE)
_NEGATIONS = {
    "no",
    "not",
    "without",
    "nothing",
    "none",
    "exclude",
    "excluding",
    "except",
    "avoid",
    "hate",
    "hated",
    "dont",
    "never",
    "skip",
    "minus",
    "neither",
    "nor",
    "dislike",
    "isnt",
    "arent",
    "cant",
    "stop",
    "less",
}
_ORDINALS = {"first": 0, "top": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "last": -1}
_REF = (
    r"(?P<ref>the (?:first|top|second|third|fourth|fifth|last)(?: one)?|#\s*\d+|number \d+|no\.? ?\d+"
    r"|all of them|them all|them|that one|this one|that|this|it)\b"
)
_POS_FEEDBACK = re.compile(
    r"\b(?:i )?(?:really |totally )?(?:loved?|liked?|enjoyed|enjoy|adored?|want|take)\s+" + _REF, re.IGNORECASE
)
_NEG_FEEDBACK = re.compile(
    r"\b(?:(?:i )?(?:hated?|disliked?|didn'?t (?:like|enjoy)|don'?t (?:like|want)|can'?t stand)\s+|not\s+|no to\s+)"
    + _REF,
    re.IGNORECASE,
)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                 "ten": 10, "a few": 3, "a couple of": 2, "a couple": 2, "some": 0}  # fmt: skip
_MORE = re.compile(
    r"^\s*(?:(?:ok(?:ay)?|and|so|hmm+|well|please|great|thanks|cool)[\s,!.]+)*"
    r"(?:(?:can you |could you )?(?:show|give|get|find|tell|recommend|suggest)(?: me)?\s+|(?:any|got any)\s+)?"
    r"(?:(?P<n>\d+|one|two|three|four|five|six|seven|eight|nine|ten|a few|a couple(?: of)?|some)\s+)?"
    r"(?:more|next(?: ones?| few| page)?|others?|other (?:ones|options|picks|suggestions|ideas|films|movies|titles)"
    r"|(?:something|anything|someone) else|(?:different|new) ones|another(?: one)?|something different)"
    r"(?:\s+(?:ones|options|picks|suggestions|ideas|films|movies|titles|recommendations|please|of (?:those|these|them)"
    r"|like (?:that|this|these|those|them)|then))*\s*[.!?]*\s*(?:please[.!]*)?\s*$",
    re.IGNORECASE,
)
_REJECT = re.compile(
    r"^\s*(?:hmm+[\s,.]*)?(?:(?:no|nope|nah)\s*(?:[.!,;]|$)|none of (?:these|those|them)\b|not (?:these|those)\b"
    r"|neither\b|i don'?t like (?:any of )?(?:these|those)\b)[\s.!,;]*",
    re.IGNORECASE,
)
_LIKE_THAT = re.compile(
    r"\b(?:more|something|anything|stuff|films?|movies?)\s+(?:just\s+)?like\s+(?:that|this|it)\b", re.I
)
_PREPOSITION_LIKE = re.compile(r"\b(?:more|something|anything|stuff|films?|movies?|ones?)\s+(?:just\s+)?$", re.I)
_RESET = re.compile(r"^\s*(?:reset|start over|start again|forget (?:everything|it all|all that)|clear)\b", re.I)
_LOOKUPS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"\bwhy (?:did|do|would) you (?:pick|choose|recommend|suggest|show|include|pick out)\s+(?P<x>.+)"
            r"|\bwhy (?:is|was)\s+(?P<x2>.+?)\s+(?:on|in) (?:the|my|this|your) (?:list|picks)",
            re.I,
        ),
        "why",
    ),
    (re.compile(r"\bwho (?:directed|made)\s+(?P<x>.+)", re.I), "director"),
    (re.compile(r"\bwho (?:stars|starred|acts|acted|plays|played|is|was|are|were) in\s+(?P<x>.+)", re.I), "starring"),
    (re.compile(r"\bwho wrote\s+(?P<x>.+)", re.I), "writer"),
    (re.compile(r"\bwhat(?:'s| is| was)\s+(?P<x>.+?)\s+about\b", re.I), ""),
    (
        re.compile(
            r"\b(?:tell me (?:more )?about|info(?:rmation)? (?:on|about)|what do you know about|who is|who's)\s+"
            r"(?P<x>.+)",
            re.I,
        ),
        "",
    ),
]
_LIKE_X = re.compile(
    r"\b(?:more|something|anything|stuff|films?|movies?|ones?|others?|things?)\s+(?:just |a bit |kind of )?"
    r"(?:like|similar to)\s+(?P<x>[^,.;!?]+?)(?:\s+but\s+(?P<mod>[^,.;!?]+))?\s*(?=[,.;!?]|$)"
    r"|^\s*(?:like|similar to)\s+(?P<x2>[^,.;!?]+?)(?:\s+but\s+(?P<mod2>[^,.;!?]+))?\s*(?=[,.;!?]|$)",
    re.IGNORECASE,
)
_LIKED_TITLE = re.compile(
    r"\bi (?:really |also |totally )?(?:like|love|liked|loved|enjoyed|enjoy|adore|adored)\s+(?P<x>[^,.;!?]+)",
    re.I,
)
_DISLIKED_TITLE = re.compile(
    r"\bi (?:really )?(?:hated|hate|disliked|dislike|didn'?t like|don'?t like|can'?t stand)\s+(?P<x>[^,.;!?]+)",
    re.I,
)
_COMPARATIVES = (
    "lighter|darker|funnier|scarier|happier|sadder|shorter|longer|newer|older|faster|slower|sillier|smarter|"
    "weirder|gentler|calmer|cheerier|grittier|simpler|lighter hearted|more (?!like\\b|of\\b|than\\b|movies\\b|films\\b"
    "|please\\b|recommendations\\b|options\\b|ideas\\b)\\w+|less \\w+"
)
_MODIFIER = re.compile(
    r"\b(?:but|something|maybe|make it|a bit|bit|slightly|much|a little)\s+(?P<m>" + _COMPARATIVES + ")\\b", re.I
)
_DECADE_WORDS = {
    "twenties": 1920,
    "thirties": 1930,
    "forties": 1940,
    "fifties": 1950,
    "sixties": 1960,
    "seventies": 1970,
    "eighties": 1980,
    "nineties": 1990,
    "noughties": 2000,
}
_QUERY_CUE = re.compile(
    r"\b(?:about|featuring|involving|set in|i want|i'?m looking for|looking for|in the mood for|recommend(?: me)?|"
    r"suggest|show me|give me|find me|i need)\s+(?P<q>[^,.;!?]+)",
    re.I,
)
_GENERIC = {
    "a",
    "an",
    "the",
    "some",
    "something",
    "anything",
    "movie",
    "movies",
    "film",
    "films",
    "good",
    "great",
    "nice",
    "please",
    "me",
    "one",
    "ones",
    "to",
    "watch",
    "for",
    "tonight",
    "new",
    "more",
    "else",
    "next",
    "options",
    "others",
    "another",
    "different",
    "these",
    "those",
    "other",
    "recommendation",
    "recommendations",
    "suggestions",
    "it",
    "that",
    "this",
    "them",
    "stuff",
    "things",
    "with",
    "and",
    "or",
    "of",
    "in",
    "i",
    "you",
    "can",
    "could",
    "would",
    "like",
    "want",
    "any",
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank",
    "ok",
    "okay",
    "yes",
    "no",
    "sure",
    "just",
    "what",
    "do",
    "have",
    "is",
    "are",
}
_GREETING = re.compile(r"^\s*(?:hi|hello|hey|yo|good (?:morning|evening|afternoon)|thanks?|thank you)\b[\s!.]*$", re.I)


def resolve_title(store: GraphStore, text: str) -> Item | None:
    """The stored item a user's title text names: exact (core) title first, then the most popular prefix match.

    Trailing words are dropped one at a time until something matches ("Toy Story please" → "Toy Story").
    """
    words = _norm(text).split()
    while words:
        phrase = " ".join(words)
        bare = _strip_article(phrase)
        if len(bare) >= 3 and bare not in _GENERIC and bare not in _GENRE_SYNONYMS:
            hits = store.search_items(bare, 25)
            exact = [h for h in hits if _strip_article(_core_title(h.title)) == bare]
            if exact:
                return exact[0]
            if len(bare.split()) >= 2:
                prefix = [h for h in hits if _strip_article(_core_title(h.title)).startswith(bare + " ")]
                if prefix:
                    return prefix[0]
        words = words[:-1]
    return None


def _ref_indices(ref: str, n: int) -> list[int]:
    ref = ref.lower().strip()
    if n == 0:
        return []
    if ref in ("them", "all of them", "them all"):
        return list(range(n))
    m = re.search(r"\d+", ref)
    if m:
        i = int(m.group()) - 1
        return [i] if 0 <= i < n else []
    for word, i in _ORDINALS.items():
        if word in ref.split():
            return [i % n] if -n <= i < n else []
    return [0]  # it / that / this (one): the top item of the last answer


def _era(text: str) -> tuple[int | None, int | None] | None:
    t = text.lower()
    m = re.search(r"\b(?:between|from)\s+(\d{4})\s*(?:and|to|-|–)\s*(\d{4})\b", t) or re.search(
        r"\b(\d{4})\s*(?:-|–|to)\s*(\d{4})\b", t
    )
    if m:
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        return (a, b)
    m = re.search(r"\b(after|since|newer than|post)\s+(?:the\s+)?(\d{4})(s?)\b", t)
    if m:
        y = int(m.group(2))
        if m.group(3):
            return (y + 10, None) if m.group(1) in ("after", "post", "newer than") else (y, None)
        return (y + 1 if m.group(1) in ("after", "post", "newer than") else y, None)
    m = re.search(r"\b(before|older than|pre)\s+(?:the\s+)?(\d{4})s?\b", t)
    if m:
        return (None, int(m.group(2)) - 1)
    m = re.search(r"(?<![\w'])(?:(1[89]|20)(\d)0|'?(\d)0)'?s\b", t)
    if m:
        if m.group(1):
            start = int(m.group(1) + m.group(2) + "0")
        else:
            d = int(m.group(3))
            start = (1900 if d >= 3 else 2000) + 10 * d
        return (start, start + 9)
    for word, start in _DECADE_WORDS.items():
        if re.search(rf"\b{word}\b", t):
            return (start, start + 9)
    m = re.search(r"\b(?:in|from)\s+(\d{4})\b", t)
    if m and 1870 <= int(m.group(1)) <= 2100:
        y = int(m.group(1))
        return (y, y)
    return None


def _mentions(clause: str, vocab: Vocabulary) -> list[tuple[int, str, str]]:
    """``(word position, kind, label)`` of the genres and people named in a clause, longest match first."""
    words = _norm(clause).split()
    out: list[tuple[int, str, str]] = []
    taken: set[int] = set()
    for size in range(max(vocab.max_words, 3), 0, -1):
        for i in range(len(words) - size + 1):
            if any(j in taken for j in range(i, i + size)):
                continue
            phrase = " ".join(words[i : i + size])
            genre = vocab.genre(phrase) if size <= 3 else None
            person = vocab.person(phrase) if genre is None and (size > 1 or len(phrase) >= 5) else None
            if genre is None and person is None:
                continue
            if person is not None and size == 1 and phrase in _GENERIC:
                continue
            out.append((i, "genre" if genre else "person", genre or person or ""))
            taken.update(range(i, i + size))
    return sorted(out)


def _add(seq: list[str], value: str) -> None:
    if value and value not in seq:
        seq.append(value)


def extract_rules(message: str, vocab: Vocabulary, store: GraphStore, last_items: Sequence[str] = ()) -> ProfileDelta:
    """The profile delta simple rules read from one message (see the module docstring)."""
    d = ProfileDelta()
    text = message.strip()
    if not text:
        return d
    if _RESET.search(text):
        d.reset = True
        return d
    m = _REJECT.match(text)
    if m:  # "None of these. Something darker": the last answer is turned down; what follows is read as usual
        d.rejected = True
        text = text[m.end() :].strip()
        if not text:
            return d
    more = _MORE.fullmatch(text)
    if more:
        n = (more.group("n") or "").lower()
        d.more = int(n) if n.isdigit() else _NUMBER_WORDS.get(n, 0)
        return d
    for pattern, relation in _LOOKUPS:
        m = pattern.search(text)
        if not m:
            continue
        target = (m.group("x") or m.groupdict().get("x2") or "").strip().strip("?!.\"'“”").strip()
        ref = re.fullmatch(_REF, target, re.I)
        if ref and last_items:
            idx = _ref_indices(ref.group("ref"), len(last_items))
            if idx:
                d.lookup = ("item", last_items[idx[0]], relation)
                return d
        person = vocab.resolve_person(target)
        item = resolve_title(store, target)
        if item is not None and (person is None or _core_title(item.title) == _norm(target)):
            d.lookup = ("item", item.id, relation)
        elif person is not None:
            d.lookup = ("entity", person, relation)
        else:
            d.lookup_failed = target
        return d

    rest = text
    # feedback on the last answer ("loved it", "not that one", "hated the second one")
    if last_items:
        for pattern, target in ((_NEG_FEEDBACK, d.disliked), (_POS_FEEDBACK, d.liked)):
            for m in pattern.finditer(rest):
                after = rest[m.end() :].lstrip()
                if m.group("ref").lower() in ("it", "that", "this") and after[:1].isalnum():
                    continue  # "I like it when…", "not that funny": not a reference to an item
                if pattern is _POS_FEEDBACK and _PREPOSITION_LIKE.search(rest[: m.start()]):
                    continue  # "more like that", "something like this": similar to, not "I liked"
                for i in _ref_indices(m.group("ref"), len(last_items)):
                    _add(target, last_items[i])
                    d.feedback = True
                rest = rest[: m.start()] + " " + rest[m.end() :]
    # "more like X (but lighter)"
    m = _LIKE_X.search(rest)
    if m:
        x = (m.group("x") or m.group("x2") or "").strip()
        mod = (m.group("mod") or m.group("mod2") or "").strip()
        item = resolve_title(store, x)
        if item is not None:
            d.like_item = item.id
            if mod and not _mentions(mod, vocab) and not (set(_norm(mod).split()) & _NEGATIONS):
                d.modifier = mod
                rest = rest[: m.start()] + " " + rest[m.end() :]
            else:
                rest = rest[: m.start()] + (" but " + mod if mod else " ") + rest[m.end() :]
    # "I loved Toy Story" / "I hated Cats"
    for pattern, target in ((_DISLIKED_TITLE, d.disliked), (_LIKED_TITLE, d.liked)):
        for m in pattern.finditer(rest):
            x = m.group("x")
            if not _norm(x) or _norm(x).split()[0] in ("it", "that", "this", "them"):
                continue
            parts = [p for p in re.split(r"\s+and\s+|\s*&\s*", x) if p.strip()]
            found = [resolve_title(store, p) for p in parts]
            if len(parts) > 1 and not all(found):
                found = [resolve_title(store, x)]
            hits = [it for it in found if it is not None]
            if hits:
                for it in hits:
                    _add(target, it.id)
                rest = rest[: m.start()] + " " + rest[m.end() :]
                break
    if d.like_item is None and d.liked and _LIKE_THAT.search(text):
        d.like_item = d.liked[-1]  # "I enjoyed Contact; more like that"
        rest = _LIKE_THAT.sub(" ", rest)
    if d.modifier is None:
        mm = _MODIFIER.search(rest)
        if mm:
            d.modifier = mm.group("m").lower()
    d.era = _era(rest)
    # genres and people, negated or not, clause by clause
    for clause in _CLAUSE_SPLIT.split(rest):
        words = _norm(clause).split()
        for pos, kind, label in _mentions(clause, vocab):
            negated = bool(set(words[:pos]) & _NEGATIONS) or words[pos - 2 : pos] == ["do", "not"]
            if kind == "genre":
                _add(d.exclude_genres if negated else d.include_genres, label)
            else:
                _add(d.exclude_people if negated else d.include_people, label)
    # free-text wish
    m = _QUERY_CUE.search(rest)
    candidate = m.group("q") if m else None
    if candidate is None and dataclasses.replace(d, rejected=False).is_empty() and not _GREETING.match(text):
        candidate = rest
    if candidate:
        mention_words = {w for _, _, label in _mentions(candidate, vocab) for w in _norm(label).split()}
        words = [w for w in _norm(candidate).split() if w not in mention_words]
        content = [w for w in words if w not in _GENERIC and w not in _NEGATIONS and not w.isdigit()]
        content = [w for w in content if not vocab.genre(w)]
        if content and not re.fullmatch(r"\d+s?", " ".join(content)):
            while words and (words[0] in _GENERIC or words[0] in _NEGATIONS):
                words.pop(0)
            while words and words[-1] in _GENERIC:
                words.pop()
            d.query = " ".join(words) or None
    d.unparsed = _unparsed(text, vocab, store, d)
    return d


_FUNCTION_WORDS = {
    "from", "before", "after", "between", "since", "until", "by", "but", "too", "very", "really", "just", "is", "are",
    "was", "be", "my", "we", "us", "maybe", "also", "again", "mood", "era", "decade", "years", "year", "s", "thanks",
    "thank", "ok", "okay", "yes", "loved", "love", "liked", "enjoyed", "recommend", "suggest", "show", "give", "find",
    "need", "looking", "first", "second", "third", "last", "another", "hmm", "id", "im", "see", "prefer", "should",
    "feel", "watching", "directed", "starring", "director", "similar", "enjoy", "none", "get",
}  # fmt: skip


def _unparsed(text: str, vocab: Vocabulary, store: GraphStore, d: ProfileDelta) -> list[str]:
    """The message's content words that no rule used (see :attr:`ProfileDelta.unparsed`)."""
    used = {w for _, _, label in _mentions(text, vocab) for w in _norm(label).split()}
    ids = [*d.liked, *d.disliked, *([d.like_item] if d.like_item else [])]
    if ids:
        used |= {w for it in store.items(ids).values() for w in _norm(_YEAR_SUFFIX.sub("", it.title)).split()}
    for free in (d.query, d.modifier):
        used |= set(_norm(free or "").split())
    out = []
    for w in _norm(text).split():
        if w in used or w in _GENERIC or w in _NEGATIONS or w in _FUNCTION_WORDS or re.fullmatch(r"\d+s?", w):
            continue
        if vocab.genre(w):
            continue
        out.append(w)
    return out


def rules_left_something(d: ProfileDelta) -> bool:
    """Whether the LLM may add to what the rules read: they kept part of the message as free text (``query``) or
    left content words unused (``unparsed``: "no comedies, something with spaceships"). A message the rules read
    completely ("westerns from the 60s", "more like Alien but no horror") costs no LLM call."""
    return d.query is not None or bool(d.unparsed)


def merge_deltas(rules: ProfileDelta, llm: ProfileDelta) -> ProfileDelta:
    """Rules plus whatever the LLM adds that does not conflict with them (rules win)."""
    out = copy.deepcopy(rules)
    pairs = [
        ("liked", "disliked"),
        ("include_genres", "exclude_genres"),
        ("include_people", "exclude_people"),
    ]
    for a, b in pairs:
        ra, rb = getattr(rules, a), getattr(rules, b)
        for v in getattr(llm, a):
            if v not in rb:
                _add(getattr(out, a), v)
        for v in getattr(llm, b):
            if v not in ra and v not in getattr(out, a):
                _add(getattr(out, b), v)
    for name in ("era", "like_item", "modifier", "query"):
        if getattr(out, name) is None and getattr(llm, name) is not None:
            setattr(out, name, getattr(llm, name))
    return out


def apply_delta(profile: ChatProfile, d: ProfileDelta) -> ChatProfile:
    """The profile after a message's delta; a later statement overrides an earlier opposite one."""

    def upd(keep: Sequence[str], add: Sequence[str], drop: Sequence[str]) -> tuple[str, ...]:
        out = [x for x in keep if x not in drop]
        for x in add:
            if x not in out:
                out.append(x)
        return tuple(out)

    return ChatProfile(
        liked=upd(profile.liked, d.liked, d.disliked),
        disliked=upd(profile.disliked, d.disliked, d.liked),
        include_genres=upd(profile.include_genres, d.include_genres, d.exclude_genres),
        exclude_genres=upd(profile.exclude_genres, d.exclude_genres, d.include_genres),
        include_people=upd(profile.include_people, d.include_people, d.exclude_people),
        exclude_people=upd(profile.exclude_people, d.exclude_people, d.include_people),
        era=d.era if d.era is not None else profile.era,
        like_item=d.like_item if d.like_item is not None else profile.like_item,
        modifier=d.modifier if d.modifier is not None else (None if d.like_item else profile.modifier),
        query=d.query if d.query is not None else profile.query,
    )


# ------------------------------------------------------------------------------------------------------------------
# the agent


class ChatAgent:
    """Runs conversations: extracts the profile, decides what to do, and answers with a :class:`ChatTurn`.

    Args:
        store: the graph store (titles, facts, entities; feedback is written here).
        recommend: :meth:`knowrec.Recommender.recommend` (the same pipeline as the SDK).
        sessions: where sessions and turns are kept.
        config: :class:`~knowrec.config.ChatConfig`.
        llm: returns the LLM client for profile extraction, or ``None`` (called lazily, on the first message).
    """

    def __init__(
        self,
        store: GraphStore,
        recommend: Callable[..., Recommendation],
        sessions: SessionStore,
        config: ChatConfig | None = None,
        llm: Callable[[], LLMClient | None] = lambda: None,
        like_threshold: float = 3.5,
    ) -> None:
        self.store = store
        self.like_threshold = like_threshold
        self._recommend = recommend
        self.sessions = sessions
        self.config = config or ChatConfig()
        self._llm = llm
        self._vocab: tuple[tuple[int, int, int], Vocabulary] | None = None
        self._lock = threading.RLock()
        self._session_locks: dict[str, threading.Lock] = {}

    # -- public -------------------------------------------------------------------------------------------------
    def vocab(self) -> Vocabulary:
        """The store's vocabulary, rebuilt when the store's item/fact/entity counts change."""
        stats = self.store.stats()
        key = (stats.get("items", 0), stats.get("facts", 0), stats.get("entities", 0))
        with self._lock:
            if self._vocab is None or self._vocab[0] != key:
                t = time.perf_counter()
                self._vocab = (key, Vocabulary.build(self.store))
                log.info("chat vocabulary built in %.0f ms", 1000 * (time.perf_counter() - t))
            return self._vocab[1]

    def new_session(self, user_id: str | None = None) -> str:
        return self.sessions.create(None, user_id).id

    def history(self, session_id: str) -> list[ChatTurn]:
        if self.sessions.get(session_id) is None:
            raise NotFound(f"unknown chat session {session_id!r}")
        return self.sessions.turns(session_id)

    def feedback(self, item_id: str, liked: bool, *, session_id: str | None = None, user_id: str | None = None) -> None:
        """Record a like/dislike: the session's profile (if a session is given) and an interaction in the store."""
        item_id = str(item_id)
        if not self.store.has_items([item_id]):
            raise NotFound(f"unknown item id {item_id!r}")
        if session_id is not None:
            with self._session_lock(session_id):
                info = self.sessions.get(session_id)
                if info is None:
                    raise NotFound(f"unknown chat session {session_id!r}")
                d = ProfileDelta(liked=[item_id] if liked else [], disliked=[] if liked else [item_id])
                self.sessions.save_profile(session_id, apply_delta(info.profile, d))
                self._write_feedback(user_id or info.user_id, d)
        elif user_id is not None:
            self._write_feedback(
                user_id, ProfileDelta(liked=[item_id] if liked else [], disliked=[] if liked else [item_id])
            )
        else:
            raise InvalidInput("feedback needs a session_id or a user_id")

    def chat(
        self,
        session_id: str,
        message: str,
        *,
        user_id: str | None = None,
        k: int | None = None,
        on_progress: Callable[[ChatProgress], None] | None = None,
    ) -> ChatTurn:
        """Answer one message (creating the session if unknown); returns the assistant's turn.

        ``on_progress`` hears each stage as it starts; at ``ranking`` it gets the answer's first line (the final
        text starts with it) and the picks in retrieval order, before the LLM reranks them.
        """
        k = k or self.config.k
        with self._session_lock(session_id):
            info = self.sessions.get(session_id) or self.sessions.create(session_id, user_id)
            turns = self.sessions.turns(session_id)
            now = time.time()
            self.sessions.append(ChatTurn(session_id=session_id, role="user", text=message, created_at=now))
            try:
                reply = self._respond(info, turns, message, k, on_progress)
            except KnowrecError as exc:
                log.warning("chat turn failed: %s", exc)
                reply = ChatTurn(
                    session_id=session_id,
                    role="assistant",
                    text=f"Sorry, something went wrong: {exc}",
                    profile=info.profile,
                    created_at=time.time(),
                )
            self.sessions.append(reply)
            return reply

    # -- internals ----------------------------------------------------------------------------------------------
    def _session_lock(self, session_id: str) -> threading.Lock:
        with self._lock:
            return self._session_locks.setdefault(session_id, threading.Lock())

    def _respond(
        self,
        info: SessionInfo,
        turns: list[ChatTurn],
        message: str,
        k: int,
        on_progress: Callable[[ChatProgress], None] | None = None,
    ) -> ChatTurn:
        sid = info.id
        vocab = self.vocab()
        last = next((t for t in reversed(turns) if t.role == "assistant" and t.items), None)
        last_items = list(last.items) if last else []
        delta = extract_rules(message, vocab, self.store, last_items)
        if delta.reset:
            self.sessions.save_profile(sid, ChatProfile())
            return self._turn(sid, "ask", "OK, let's start over. What are you in the mood for?", ChatProfile())
        if delta.lookup_failed is not None:
            return self._turn(sid, "answer", f"Sorry, I could not find “{delta.lookup_failed}”.", info.profile)
        if delta.lookup is not None:
            return self._lookup(sid, delta.lookup, info.profile, turns)
        if self.config.extract_with_llm and not delta.feedback and rules_left_something(delta):
            if on_progress is not None:
                on_progress(ChatProgress(session_id=sid, stage="extracting"))
            llm_delta = self._llm_delta(message, vocab, info.profile, last_items)
            if llm_delta is not None:
                delta = merge_deltas(delta, llm_delta)
        profile = apply_delta(info.profile, delta)
        self.sessions.save_profile(sid, profile)
        self._write_feedback(info.user_id, delta, said=True)
        known = not profile.is_empty() or bool(self.store.history(info.user_id, 1))
        asked_last = bool(turns) and turns[-1].role == "assistant" and turns[-1].action == "ask"
        if not known and not asked_last:
            return self._turn(
                sid,
                "ask",
                "What are you in the mood for? Name a film you liked, a genre, an actor or director, or an era "
                "(e.g. “something like Toy Story but no comedies, from the 90s”).",
                profile,
            )
        shown = {i for t in turns if t.role == "assistant" for i in t.items}
        return self._recommend_turn(
            sid,
            info.user_id,
            profile,
            delta.more or k,
            feedback=delta.feedback,
            on_progress=on_progress,
            shown=shown,
            paging=delta.more is not None or delta.rejected,
        )

    def _turn(self, sid: str, action: Any, text: str, profile: ChatProfile, **kw: Any) -> ChatTurn:
        return ChatTurn(
            session_id=sid, role="assistant", text=text, action=action, profile=profile, created_at=time.time(), **kw
        )

    def _write_feedback(self, user_id: str, d: ProfileDelta, said: bool = False) -> None:
        """Store likes/dislikes as interactions; what a chat message ``said`` only with ``chat.record_feedback``."""
        if said and not self.config.record_feedback:
            return
        ts = int(time.time())
        rows = [Interaction(user_id=user_id, item_id=i, rating=LIKED_RATING, timestamp=ts) for i in d.liked]
        rows += [Interaction(user_id=user_id, item_id=i, rating=DISLIKED_RATING, timestamp=ts) for i in d.disliked]
        rows = [r for r in rows if self.store.has_items([r.item_id])]
        if rows:
            self.store.write(GraphBatch(interactions=rows))

    # lookups ---------------------------------------------------------------------------------------------------
    def _lookup(
        self, sid: str, target: tuple[str, str, str], profile: ChatProfile, turns: Sequence[ChatTurn] = ()
    ) -> ChatTurn:
        kind, what, relation = target
        if kind == "item" and relation == "why":
            return self._why(sid, what, profile, turns)
        if kind == "item":
            item = self.store.items([what]).get(what)
            facts = self.store.facts([what]).get(what, [])
            name = item.title if item else what
            if relation:
                facts = [f for f in facts if f.relation == relation] or facts
            facts = facts[:10]
            if not facts:
                text = f"I have no facts about {name}."
            else:
                lines = [f"- {f.text()} [{f.id}]" for f in facts]
                text = f"Here is what I know about {name}:\n" + "\n".join(lines)
            return self._turn(sid, "lookup", text, profile, facts=tuple(facts))
        vocab = self.vocab()
        ids = sorted(vocab.ids_of([what]))
        item_ids = sorted(vocab.items_of([what]))
        found: list[Fact] = []
        for fs in self.store.facts(item_ids[:200]).values():
            found += [f for f in fs if f.head in ids or f.tail in ids]
        pop = {i: n for n, (i, _) in enumerate(self.store.popular(100_000))}
        found.sort(key=lambda f: pop.get(f.head, len(pop)))
        found = found[:10]
        if not found:
            return self._turn(sid, "lookup", f"I have no facts about {what}.", profile)
        lines = [f"- {f.text()} [{f.id}]" for f in found]
        return self._turn(sid, "lookup", f"{what} in my catalogue:\n" + "\n".join(lines), profile, facts=tuple(found))

    def _why(self, sid: str, item_id: str, profile: ChatProfile, turns: Sequence[ChatTurn]) -> ChatTurn:
        """ "Why did you pick X?": the reasons the answer that showed X gave, with the facts they cite."""
        shown = next(
            (
                it
                for t in reversed(turns)
                if t.role == "assistant" and t.recommendation is not None
                for it in t.recommendation.items
                if it.item_id == item_id
            ),
            None,
        )
        item = self.store.items([item_id]).get(item_id)
        name = item.title if item else item_id
        if shown is None:
            return self._turn(sid, "answer", f"I have not recommended {name} in this conversation.", profile)
        facts = {f.id: f for f in shown.facts}
        if not shown.reasons:
            text = f"I picked {name} on the strength of your history, but I have no fact to show for it."
            return self._turn(sid, "lookup", text, profile)
        lines = [f"- {r.text}" + "".join(f"[{f}]" for f in r.fact_ids if f in facts) for r in shown.reasons]
        return self._turn(
            sid, "lookup", f"I picked {name} because:\n" + "\n".join(lines), profile, facts=tuple(facts.values())
        )

    # LLM extraction ---------------------------------------------------------------------------------------------
    def _llm_delta(
        self, message: str, vocab: Vocabulary, profile: ChatProfile, last_items: Sequence[str]
    ) -> ProfileDelta | None:
        try:
            llm = self._llm()
        except KnowrecError as exc:
            log.info("chat: no LLM for extraction (%s)", exc)
            return None
        if llm is None:
            return None
        genres = sorted(set(vocab.genres.values()))
        titles = self.store.items(list(last_items[:5]))
        prompt = load_prompt("chat_extract")
        text = prompt.render(
            message=message,
            last_titles=[titles[i].title for i in last_items[:5] if i in titles],
            genres=genres,
            profile=_describe(profile, self.store) if not profile.is_empty() else "",
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
            return self._ground(reply.parsed, message, vocab)
        except KnowrecError as exc:
            log.info("chat: LLM extraction failed, rules only: %s", exc)
        except Exception as exc:  # a nonsense answer must never break the conversation
            log.info("chat: unusable LLM extraction, rules only: %r", exc)
        return None

    def _ground(self, parsed: Any, message: str, vocab: Vocabulary) -> ProfileDelta | None:
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
                    item = resolve_title(self.store, t)
                    if item is not None:
                        _add(target, item.id)
        like = one("like_title")
        if like and set(_norm(like).split()) - _GENERIC <= msg_words:
            item = resolve_title(self.store, like)
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

    # recommending -----------------------------------------------------------------------------------------------
    def _banned(self, profile: ChatProfile, vocab: Vocabulary) -> set[str]:
        banned = set(profile.disliked) | set(profile.liked)
        if profile.like_item:
            banned.add(profile.like_item)
        banned |= vocab.items_of(profile.exclude_genres) | vocab.items_of(profile.exclude_people)
        if profile.era is not None:
            lo, hi = profile.era
            lo_, hi_ = lo if lo is not None else -10_000, hi if hi is not None else 10_000
            all_ids = {i for ids in vocab.entity_items.values() for i in ids} | set(vocab.years)
            banned |= {i for i in all_ids if not (lo_ <= vocab.years.get(i, -100_000) <= hi_)}
        return banned

    def _recommend_turn(
        self,
        sid: str,
        user_id: str,
        profile: ChatProfile,
        k: int,
        feedback: bool,
        on_progress: Callable[[ChatProgress], None] | None = None,
        shown: set[str] | None = None,
        paging: bool = False,
    ) -> ChatTurn:
        """Recommend ``k`` items that fit the profile and were not ``shown`` earlier in the session. When fewer fit,
        constraints relax in :meth:`_relaxations`' order to fill the answer, and the answer says which."""
        vocab = self.vocab()
        # a user whose history has no positive rating (only dislikes so far) is asked for as a cold-start user:
        # the pipeline would otherwise take the disliked items as the taste profile
        history = self.store.history(user_id)
        positive = any(x.rating is None or x.rating >= self.like_threshold for x in history)
        never = set(shown or ()) | (set() if positive else {x.item_id for x in history})
        head = self._head(profile, feedback, paging=paging)
        announced: list[bool] = []
        extra: dict[str, Any] = {}
        if on_progress is not None:
            progress = on_progress
            progress(ChatProgress(session_id=sid, stage="retrieving"))

            def retrieved(prelim: Recommendation, required: set[str] | None, banned: set[str]) -> None:
                picks = self._enforce(prelim, profile, banned, vocab, required, k)
                if picks:  # the first line is final from here on: the answer's text starts with it
                    announced.append(True)
                    progress(ChatProgress(session_id=sid, stage="ranking", text=head, items=tuple(picks)))

            extra["on_retrieved"] = retrieved
        who = user_id if positive else None
        rec, items = self._fetch(who, profile, vocab, never, k, **extra)
        relaxed: list[str] = []
        if len(items) < k:
            for label, looser in self._relaxations(profile):
                taken = never | {it.item_id for it in items}
                _, more = self._fetch(who, looser, vocab, taken, k - len(items), mode="none")
                if more:
                    relaxed.append(label)
                    items += more
                if len(items) >= k:
                    break
        items = [it.model_copy(update={"rank": r}) for r, it in enumerate(items[:k], start=1)]
        rec = rec.model_copy(update={"items": tuple(items), "user_id": user_id})
        text, facts = self._describe_answer(rec, profile, head, announced=bool(announced), relaxed=relaxed)
        return self._turn(
            sid,
            "feedback" if feedback else ("recommend" if items else "answer"),
            text,
            profile,
            recommendation=rec,
            items=tuple(it.item_id for it in items),
            facts=facts,
        )

    def _fetch(
        self,
        user_id: str | None,
        profile: ChatProfile,
        vocab: Vocabulary,
        never: set[str],
        k: int,
        on_retrieved: Callable[[Recommendation, set[str] | None, set[str]], None] | None = None,
        mode: str | None = None,
    ) -> tuple[Recommendation, list[Any]]:
        """The pipeline's answer for ``profile`` and the ``k`` items of it that fit (never one of ``never``)."""
        banned = self._banned(profile, vocab) | never
        cap = self.config.max_seed_candidates
        required: set[str] | None = None
        if profile.include_genres:
            required = vocab.items_of(profile.include_genres) - banned
        if profile.include_people:
            people = vocab.items_of(profile.include_people) - banned
            required = people if required is None else (required & people) or people
        candidates: list[str] | None = None
        if profile.like_item:
            seeds = self.store.kg_candidates({profile.like_item: 1.0}, banned, cap)
            ids = [c.item_id for c in seeds]
            if required is not None:
                # the genres and people asked for outrank the resemblance: X's neighbours among them if enough,
                # else all of them
                near = [i for i in ids if i in required]
                ids = near if len(near) >= 2 * k or len(required) > cap else sorted(required)
            candidates = ids or None
        elif required is not None and len(required) <= cap:
            if not required:  # nothing left fits: the caller relaxes
                return Recommendation(user_id=user_id, items=(), ranking_mode="none", model=""), []
            candidates = sorted(required)
        query = " ".join(
            x for x in (profile.query, profile.modifier, *profile.include_genres, *profile.include_people) if x
        )
        kw: dict[str, Any] = {}
        if on_retrieved is not None:
            kw["on_retrieved"] = lambda prelim: on_retrieved(prelim, required, banned)
        if mode is not None:
            kw["mode"] = mode
        rec = self._recommend(
            user_id,
            k=min(k * self.config.overfetch, 200),
            query=query or None,
            diversity=self.config.diversity,
            exclude=sorted(banned),
            candidates=candidates,
            **kw,
        )
        return rec, self._enforce(rec, profile, banned, vocab, required, k)

    @staticmethod
    def _relaxations(profile: ChatProfile) -> Iterator[tuple[str, ChatProfile]]:
        """Looser profiles, each dropping one more constraint: the free-text wish, the people asked for, genres but
        the first, the era, the film it should resemble, then every genre. Exclusions and dislikes always hold."""
        p = profile
        steps: list[tuple[str, dict[str, Any]]] = [
            ("your wording", {"query": None, "modifier": None}),
            ("the people", {"include_people": ()}),
            ("some genres", {"include_genres": p.include_genres[:1]}),
            ("the era", {"era": None}),
            ("the resemblance", {"like_item": None}),
            ("the genre", {"include_genres": ()}),
        ]
        for label, change in steps:
            looser = p.model_copy(update=change)
            if looser != p:
                p = looser
                yield label, p

    def _enforce(
        self,
        rec: Recommendation,
        profile: ChatProfile,
        banned: set[str],
        vocab: Vocabulary,
        required: set[str] | None,
        k: int,
    ) -> list[Any]:
        ids = [it.item_id for it in rec.items]
        ents = self.store.item_entities(ids + list(profile.disliked))
        excluded_ents = vocab.ids_of(profile.exclude_genres) | vocab.ids_of(profile.exclude_people)
        lo, hi = profile.era or (None, None)
        kept = []
        for it in rec.items:
            if it.item_id in banned or ents.get(it.item_id, set()) & excluded_ents:
                continue
            if profile.era is not None:
                y = vocab.years.get(it.item_id)
                if y is None or (lo is not None and y < lo) or (hi is not None and y > hi):
                    continue
            kept.append(it)
        # demote items close to disliked ones (a shared person/studio, or the same set of genres)
        disliked_named = {e for i in profile.disliked for e in ents.get(i, set()) if vocab.kind.get(e) == "person"}
        disliked_genres = [
            frozenset(e for e in ents.get(i, set()) if vocab.kind.get(e) == "genre") for i in profile.disliked
        ]

        def penalty(item_id: str) -> int:
            mine = ents.get(item_id, set())
            genres = frozenset(e for e in mine if vocab.kind.get(e) == "genre")
            close = bool(mine & disliked_named) or (bool(genres) and genres in disliked_genres)
            return 1 if close else 0

        wanted = vocab.ids_of(profile.include_genres) | vocab.ids_of(profile.include_people)

        def preferred(item_id: str) -> tuple[int, int]:
            # in the required set first, then by how many of the asked-for genres and people it has
            return (0 if required is None or item_id in required else 1, -len(ents.get(item_id, set()) & wanted))

        order = sorted(range(len(kept)), key=lambda n: (penalty(kept[n].item_id), preferred(kept[n].item_id), n))
        return [kept[n].model_copy(update={"rank": r}) for r, n in enumerate(order[:k], start=1)]

    def _head(self, profile: ChatProfile, feedback: bool, paging: bool = False) -> str:
        """The answer's first line, known before retrieval ("Here are my picks (no Comedy; 1990–1999):")."""
        said = _describe(profile, self.store)
        picks = "Here are more picks" if paging else "Here are my picks"
        return ("Thanks, noted. " if feedback else "") + picks + (f" ({said})" if said else "") + ":"

    def _describe_answer(
        self, rec: Recommendation, profile: ChatProfile, head: str, announced: bool, relaxed: Sequence[str] = ()
    ) -> tuple[str, tuple[Fact, ...]]:
        """The answer's text; an ``announced`` first line (already streamed) is kept even if nothing is left."""
        if not rec.items:
            said = _describe(profile, self.store)
            nothing = (
                "I found nothing that fits " + (said or "that") + ". Try relaxing a constraint (say “reset” to start "
                "over)."
            )
            return (head + "\n" + nothing if announced else nothing), ()
        lines = []
        facts: dict[str, Fact] = {}
        for it in rec.items:
            reasons = "; ".join(
                r.text + ("" if not r.fact_ids else " " + "".join(f"[{f}]" for f in r.fact_ids)) for r in it.reasons[:2]
            )
            lines.append(f"{it.rank}. {it.title}" + (f" — {reasons}" if reasons else ""))
            for f in it.facts:
                facts.setdefault(f.id, f)
        if relaxed:
            lines.append(
                f"(Fewer than {len(rec.items)} fit everything you asked; to fill the list I relaxed "
                + ", then ".join(relaxed)
                + ".)"
            )
        return head + "\n" + "\n".join(lines), tuple(facts.values())


def _describe(profile: ChatProfile, store: GraphStore) -> str:
    """A short readable summary of a profile ("no Comedy; 1990–1999; like Toy Story (1995)")."""
    parts: list[str] = []
    ids = [*profile.liked, *profile.disliked, *([profile.like_item] if profile.like_item else [])]
    titles = {i: it.title for i, it in store.items(ids).items()} if ids else {}
    if profile.like_item:
        parts.append(f"like {titles.get(profile.like_item, profile.like_item)}")
    if profile.modifier:
        parts.append(profile.modifier)
    if profile.include_genres or profile.include_people:
        parts.append("with " + ", ".join([*profile.include_genres, *profile.include_people]))
    if profile.exclude_genres or profile.exclude_people:
        parts.append("no " + ", ".join([*profile.exclude_genres, *profile.exclude_people]))
    if profile.era:
        lo, hi = profile.era
        parts.append(f"{lo or '…'}–{hi or '…'}")
    if profile.query:
        parts.append(f"“{profile.query}”")
    if profile.liked:
        parts.append("liked " + ", ".join(titles.get(i, i) for i in profile.liked[-3:]))
    if profile.disliked:
        parts.append("not " + ", ".join(titles.get(i, i) for i in profile.disliked[-3:]))
    return "; ".join(parts)


def profile_summary(profile: ChatProfile, store: GraphStore) -> str:
    """Public form of the profile summary (used by the CLI's ``/profile``)."""
    return _describe(profile, store) or "nothing yet"
