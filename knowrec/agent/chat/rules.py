"""The rules that read one chat message (the floor under the LLM's reading), and how a message's delta changes a
session's profile."""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from knowrec.agent.chat.vocabulary import (
    _GENRE_SYNONYMS,
    _YEAR_SUFFIX,
    Vocabulary,
    _core_title,
    _norm,
    _strip_article,
)
from knowrec.kg_store.base import GraphStore
from knowrec.types import ChatProfile, Item, display_title

__all__ = [
    "ProfileDelta",
    "StoreTitles",
    "TitleResolver",
    "apply_delta",
    "extract_rules",
    "merge_deltas",
    "resolve_title",
    "rules_left_something",
    "title_named",
]


@dataclass
class ProfileDelta:
    """What one message changes (or asks)."""

    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    include_genres: list[str] = field(default_factory=list)
    exclude_genres: list[str] = field(default_factory=list)
    include_people: list[str] = field(default_factory=list)
    exclude_people: list[str] = field(default_factory=list)
    exclude_titles: list[str] = field(default_factory=list)
    """Titles turned down by name ("not Star Wars"), as written."""
    era: tuple[int | None, int | None] | None = None
    exclude_era: tuple[int | None, int | None] | None = None
    """An era turned down ("not from the 80s")."""
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
    count: int | None = None
    """How many items the message asks for ("give me 3 sci-fi movies", "top 10 horror films"), 1–50."""
    query_is_title: bool = False
    """The whole message is a stored title's name ("Star Wars"), kept as the query: read completely, no LLM call."""
    rejected: bool = False
    """The message turns down the last answer ("none of these", "not those", "no."), and may go on to say more."""
    switch: bool = False
    """The message changes the subject ("classic film noir instead", "something completely different: a western",
    "change of plan, …"): what the session asked for so far (genres, people, era, anchor film, wish) gives way to
    what this message asks for; exclusions, likes and dislikes stay."""

    def is_empty(self) -> bool:
        return self == ProfileDelta()


# a full stop after a lone capital is an initial ("George A. Romero", "John C. Reilly"), not a clause's end
_CLAUSE_SPLIT = re.compile(r"(?<!\b[A-Z])\.+|[;!?\n]+|,|(?i:\bbut\b|\bhowever\b)")
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
_PLACE = re.compile(r"\b(?:first|top|second|third|fourth|fifth|last)\b|\d", re.I)
"""A reference that names a place in the last answer (not "it", "that", "them")."""
_POS_FEEDBACK = re.compile(
    r"\b(?:i )?(?:really |totally )?(?:loved?|liked?|enjoyed|enjoy|adored?|want|take)\s+" + _REF, re.IGNORECASE
)
# "the second one sounds good", "that one looks great": a pick of the last answer, liked
_POS_AFTER = re.compile(
    _REF + r"\s+(?:sounds|looks|seems)\s+(?:really |very |pretty |so )?(?:good|great|interesting|fun|nice|perfect"
    r"|amazing|cool|promising|awesome)\b",
    re.IGNORECASE,
)
_NEG_FEEDBACK = re.compile(
    r"\b(?:(?:i )?(?:hated?|disliked?|didn'?t (?:like|enjoy)|don'?t (?:like|want)|can'?t stand)\s+|not\s+|no to\s+)"
    + _REF,
    re.IGNORECASE,
)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                 "ten": 10, "a dozen": 12, "a few": 3, "a couple of": 2, "a couple": 2, "some": 0}  # fmt: skip
_MORE = re.compile(
    r"^\s*(?:(?:ok(?:ay)?|and|so|hmm+|well|please|great|thanks|cool)[\s,!.]+)*"
    r"(?:(?:can you |could you )?(?:show|give|get|find|tell|recommend|suggest)(?: me)?\s+|(?:any|got any)\s+)?"
    r"(?:(?P<n>\d+|one|two|three|four|five|six|seven|eight|nine|ten|a few|a couple(?: of)?|some)\s+)?"
    r"(?:more|next(?: ones?| few| page)?|others?|other (?:ones|options|picks|suggestions|ideas|films|movies|titles)"
    r"|(?:something|anything|someone) else|(?:different|new) ones|another(?: one)?|something different"
    r"|(?:something|anything|more) similar(?: to (?:that|this|these|those|them))?)"
    r"(?:[\s,]+(?:ones|options|picks|suggestions|ideas|films|movies|titles|recommendations|please"
    r"|of (?:those|these|them)|like (?:that|this|these|those|them)|then))*\s*[.!?]*\s*(?:,?\s*please[.!]*)?\s*$",
    re.IGNORECASE,
)
_REJECT = re.compile(
    r"^\s*(?:hmm+[\s,.]*)?(?:(?:no|nope|nah)\s*(?:[.!,;]|$)|none of (?:these|those|them)\b|not (?:these|those)\b"
    r"|neither\b|i don'?t like (?:any of )?(?:these|those)\b"
    r"|(?:i(?:'?ve| have)? )?(?:already |just )?(?:saw|seen|watched) "
    r"(?:that|it|them(?: all)?|those|these|both|all of (?:them|those|these)"
    r"|the (?:first|last|top) (?:one|two|three|four|five|few)|the (?:first|second|third|fourth|fifth|last) one)"
    r"(?: ones?)?(?: already)?\b)[\s.!,;]*",
    re.IGNORECASE,
)
_LIKE_THAT = re.compile(
    r"\b(?:(?:more|something|anything|stuff|films?|movies?|ones?)\s+(?:just\s+)?"
    r"(?:like\s+(?:that|this|it)|similar(?:\s+to\s+(?:that|this|it))?)|similar\s+(?:ones|films|movies|titles)"
    r"|what else (?:would|might|could|will|do|does|did) (?:i|we|they|he|she|you think they|my kids) "
    r"(?:like|enjoy|love))\b",
    re.I,
)
# a film already seen, by name: "I've seen Heat already"
_SEEN_TITLE = re.compile(
    r"\b(?:i(?:'?ve| have) )?(?:already |just )?(?:seen|watched|saw)\s+(?P<x>[^,.;!?]+?)(?:\s+already)?"
    r"\s*(?=[,.;!?]|$)",
    re.I,
)
# "all the Star Wars films", "both Toy Story movies", "every Harry Potter film": the films of that name
_SEEN_EVERY = re.compile(
    r"(?:all(?: of)?|both|every(?: one of)?|each of)\s+(?:the\s+)?(?P<x>.+?)(?:\s+(?:films|movies|ones|film|movie))?",
    re.I,
)
# a clause that turns a title down by name: "not Star Wars", "no Harry Potter movies please", "nothing like Cats"
_NOT_TITLE = re.compile(
    r"^\s*(?:(?:and|so|please|just|also|oh)\s+)*(?:not|no more|no|without|except(?: for)?|nothing like|skip|avoid"
    r"|exclude|excluding|minus)\s+(?:the\s+)?(?P<x>.+?)\s*$",
    re.I,
)
# the words right before an era that turn it down: "not from the 80s", "no 90s movies", "nothing older than 1990"
# ("no comedies from the 80s" asks for the 80s: the negation is the genre's)
_NOT_ERA = re.compile(
    r"\b(?:not|no|nothing|never|except|excluding|without)\s+(?:(?:anything|something|movies|films)\s+)?"
    r"(?:(?:from|in|of|made in|set in)\s+)?(?:the\s+)?$",
    re.I,
)
_PREPOSITION_LIKE = re.compile(r"\b(?:more|something|anything|stuff|films?|movies?|ones?)\s+(?:just\s+)?$", re.I)
# words that change the subject: what was asked for before gives way ("Denzel Washington films", then "classic film
# noir instead"); without one, what a session said adds up (a simulated user reveals its target a piece at a time)
_SWITCH = re.compile(
    r"\binstead(?P<of> of)?\b|\bsomething (?:completely|totally|entirely|quite|very) different\b"
    r"|\b(?:on a |a )?(?:different|new) (?:topic|subject|note|search|request|question)\b"
    r"|\bchange (?:of )?(?:the )?(?:topic|subject|plans?|gears)\b|\bswitch(?:ing)? (?:topics?|subjects?|gears)\b"
    r"|\blet'?s (?:try|switch to)\b|\bswitch(?:ing)? to\b",
    re.I,
)
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
    (
        re.compile(
            r"\b(?:what year (?:is|was|did)|when (?:is|was|did))\s+(?P<x>.+?)\s+"
            r"(?:from|made|released|come out|came out|out)\s*[?!.]*\s*$",
            re.I,
        ),
        "year",
    ),
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
# "why the second one?", "and why #3", "why that one": a pick of the last answer named by its place ("why X?" with a
# title, and "why not something funnier?", are read as usual)
_WHY_REF = re.compile(
    r"^\s*(?:(?:and|so|but|ok|okay)[,\s]+)?why\s+(?:(?:is|was|did you pick|did you choose)\s+)?"
    + _REF.replace("|that|this|it)", ")")
    + r"(?:\s+(?:on (?:the|my|this) list|there|here|then))?\s*[?!.]*\s*$",
    re.I,
)
_WHY_TITLE = re.compile(r"^\s*(?:(?:and|so|but|ok|okay)[,\s]+)?why\s+(?P<x>[^?!.,;]+?)\s*[?!.]*\s*$", re.I)
_LIKE_X = re.compile(
    r"\b(?:more|something|anything|stuff|films?|movies?|ones?|others?|things?)\s+(?:just |a bit |kind of )?"
    r"(?:like|similar to)\s+(?P<x>[^,.;!?]+?)(?:\s+but\s+(?P<mod>[^,.;!?]+))?\s*(?=[,.;!?]|$)"
    r"|^\s*(?:like|similar to)\s+(?P<x2>[^,.;!?]+?)(?:\s+but\s+(?P<mod2>[^,.;!?]+))?\s*(?=[,.;!?]|$)",
    re.IGNORECASE,
)
# what may follow a title in "like X …" and is not the title's: a person, an exclusion, an era
_LIKE_TAIL = re.compile(
    r"\s+(?:without|with no|but not|not|minus|except|with|starring|from|in the|by|directed by|set in)\s+", re.I
)
# who liked it: "I", or "we" and "my kids" (what they liked is the taste to serve too)
_WHO = r"(?:i|we|my (?:kids|children|son|daughter|wife|husband|partner|family|girlfriend|boyfriend|friends?))"
_LIKED_TITLE = re.compile(
    r"\b" + _WHO + r" (?:really |also |totally |all )?(?:like|love|liked|loved|enjoyed|enjoy|adore|adored)\s+"
    r"(?P<x>[^,.;!?]+)",
    re.I,
)
# "I just watched Inception and loved it": the film named, not the last answer's top pick
_WATCHED_THEN = re.compile(
    r"\b(?:i |we )?(?:just |recently |finally )?(?:watched|saw|have seen|'ve seen)\s+(?P<x>[^,.;!?]+?)"
    r"\s*,?\s+and\s+(?:i |we )?(?:really |totally |absolutely )?(?P<v>loved|liked|enjoyed|adored|hated|disliked)"
    r"\s+(?:it|that one|that)\b",
    re.I,
)
# "anything by Tarantino except Pulp Fiction": that title left out (inside a clause, after what is asked for)
_EXCEPT_TITLE = re.compile(
    r"\b(?:except(?: for)?|other than|apart from|excluding)\s+(?:the\s+)?(?P<x>[^,.;!?]+?)\s*$", re.I
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
_TOO_OLD = re.compile(r"\b(?:too|so|rather) (old|dated|new|recent|modern)\b", re.I)
# comparatives that ask for an era relative to what was shown or named
_RELATIVE_ERA = {
    "newer": "newer",
    "more recent": "newer",
    "more modern": "newer",
    "older": "older",
    "less recent": "older",
}
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
    r"i'?d love|i would love|"
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
    "best",
    "greatest",
    "finest",
}
_GREETING = re.compile(r"^\s*(?:hi|hello|hey|yo|good (?:morning|evening|afternoon)|thanks?|thank you)\b[\s!.]*$", re.I)


_ALT_TITLE = re.compile(r"\(([^()]*[^\d()][^()]*)\)")


@functools.lru_cache(maxsize=65536)
def _title_keys(title: str, alternatives: bool = True) -> tuple[str, ...]:
    """A stored title's normalised forms a user may type, the leading article dropped: as stored and as people write
    it, and each alternative title in parentheses ("Seven (a.k.a. Se7en) (1995)" is "seven" and "se7en"), each
    without the year and with it (``"kill bill vol 2"``, ``"kill bill vol 2 2004"``). The first is the stored form
    without the year. ``alternatives=False``: the title's own forms only."""
    keys: list[str] = []
    year = _YEAR_SUFFIX.search(title)
    for form in dict.fromkeys((title, display_title(title))):
        core = _strip_article(_core_title(form))
        keys += [core, f"{core} {_norm(year.group(0))}"] if year else [core]
    # the alternative titles in parentheses: "Se7en" (a.k.a.), "La Cité des enfants perdus" (the original title)
    for alt in _ALT_TITLE.findall(_YEAR_SUFFIX.sub("", title)) if alternatives else ():
        core = _strip_article(_norm(display_title(re.sub(r"^a\.?k\.?a\.?\s+", "", alt.strip(), flags=re.I))))
        if len(core) >= 4 and core not in _GENERIC:
            keys += [core, f"{core} {_norm(year.group(0))}"] if year else [core]
    return tuple(dict.fromkeys(keys))


def resolve_title(store: GraphStore, text: str) -> Item | None:
    """The stored item a user's title text names: exact (core) title first — with its year when the text gives one
    ("Kill Bill: Vol. 2 (2004)" is not Vol. 1) —, then the most popular prefix match.

    Trailing words are dropped one at a time until something matches ("Toy Story please" → "Toy Story"). The store is
    searched by the typed words and, where punctuation hides them ("(500) Days of Summer", "Vol. 2"), by the two
    longest words, whose hits are compared in normalised form (a title's forms are computed once per process).
    """
    words = _norm(text).split()
    by_word: dict[str, list[Item]] = {}
    while words:
        phrase = " ".join(words)
        bare = _strip_article(phrase)
        if len(bare) >= 3 and bare not in _GENERIC and bare not in _GENRE_SYNONYMS:
            hits = store.search_items(bare, 25)
            exact = [h for h in hits if bare in _title_keys(h.title)]
            # the two longest words: one may hide behind an apostrophe the normalised form dropped ("pythons")
            for key in sorted(set(bare.split()), key=lambda w: (-len(w), w))[:2]:
                if exact:
                    break
                if key not in by_word:
                    by_word[key] = store.search_items(key, 200) if len(key) >= 3 else []
                have = {h.id for h in hits}
                hits = [*hits, *(h for h in by_word[key] if h.id not in have)]
                exact = [h for h in hits if bare in _title_keys(h.title)]
            found = _named_in(hits, bare)
            if found is not None:
                return found
        words = words[:-1]
    return None


def _named_in(hits: Sequence[Item], phrase: str) -> Item | None:
    """Of ``hits`` (most popular first), the one a normalised ``phrase`` names: a title exactly (its own name before
    another's alternative title), else, for two words or more, the first title that starts with it."""
    exact = [h for h in hits if phrase in _title_keys(h.title)]
    if exact:
        return next((h for h in exact if phrase in _title_keys(h.title, False)), exact[0])
    if len(phrase.split()) >= 2:
        return next((h for h in hits if any(k.startswith(phrase + " ") for k in _title_keys(h.title))), None)
    return None


class TitleResolver(Protocol):
    """What reading a message needs from the catalogue: the item a title text names, and items' titles."""

    def all_named(self, title: str) -> list[Item]:
        """Every stored item a title as written ("Star Wars") names whole (see :func:`titles_named`)."""
        ...

    def resolve(self, text: str) -> Item | None:
        """The stored item a user's title text names (see :func:`resolve_title`), if any."""
        ...

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Item id → title for the ids that are stored."""
        ...

    def named(self, phrase: str) -> Item | None:
        """The most popular stored item whose title is ``phrase`` (normalised, leading article dropped) or, for two
        words or more, starts with it; one search, no words dropped (see :func:`title_named`)."""
        ...


class StoreTitles:
    """A :class:`TitleResolver` over a graph store."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store

    def resolve(self, text: str) -> Item | None:
        return resolve_title(self.store, text)

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {i: it.title for i, it in self.store.items(list(item_ids)).items()}

    def named(self, phrase: str) -> Item | None:
        return title_named(self.store, phrase)

    def all_named(self, title: str) -> list[Item]:
        return titles_named(self.store, _strip_article(_norm(title)))


def title_named(store: GraphStore, phrase: str) -> Item | None:
    """The stored item a normalised ``phrase`` names whole: its title exactly (its own name before another's
    alternative title), else, for two words or more, the most popular title that starts with it ("star wars")."""
    return _named_in(store.search_items(phrase, 25), phrase)


def titles_named(store: GraphStore, phrase: str, limit: int = 500) -> list[Item]:
    """Every stored item a normalised ``phrase`` names whole: a title that is it, or, for two words or more, starts
    with it ("star wars": the whole series; "alien": Alien, not Aliens)."""
    several = len(phrase.split()) >= 2
    return [
        h
        for h in store.search_items(phrase, limit)
        if any(k == phrase or (several and k.startswith(phrase + " ")) for k in _title_keys(h.title))
    ]


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


def _decade_start(word: str) -> int:
    """``"1980s"``, ``"80s"``, ``"'80s"`` → 1980 (two digits: 1930–2020s, as in :func:`_era`)."""
    digits = re.sub(r"\D", "", word)
    if len(digits) == 4:
        return int(digits)
    d = int(digits[0])
    return (1900 if d >= 3 else 2000) + 10 * d


def _era(text: str) -> tuple[tuple[int | None, int | None], int, int] | None:
    """The era a text names and where its words are (start, end): "from 1990 to 1995", "after 2010", "the 80s",
    "the nineties", "in 1994", "films of 1994", "1994 films"."""
    t = text  # searched case-insensitively: positions are the text's own
    m = re.search(r"\b(?:between|from)\s+(\d{4})\s*(?:and|to|-|–)\s*(\d{4})\b", t, re.I) or re.search(
        r"\b(\d{4})\s*(?:-|–|to)\s*(\d{4})\b", t
    )
    if m:
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        return (a, b), m.start(), m.end()
    m = re.search(r"\b(after|since|newer than|post)\s+(?:the\s+)?(\d{4})(s?)\b", t, re.I)
    if m:
        y = int(m.group(2))
        if m.group(3):
            era = (y + 10, None) if m.group(1) in ("after", "post", "newer than") else (y, None)
        else:
            era = (y + 1 if m.group(1) in ("after", "post", "newer than") else y, None)
        return era, m.start(), m.end()
    m = re.search(r"\b(before|older than|pre)\s+(?:the\s+)?(\d{4})s?\b", t, re.I)
    if m:
        return (None, int(m.group(2)) - 1), m.start(), m.end()
    decade = r"(?<![\w'])(?:(?:1[89]|20)\d0|'?\d0)'?s\b"
    m = re.search(rf"({decade})\s*(?:or|and|to|through|-|–)\s*(?:the\s+)?({decade})", t, re.I)
    if m:  # "the 80s or 90s", "from the 60s to the 80s": both decades and those between
        starts = sorted((_decade_start(m.group(1)), _decade_start(m.group(2))))
        return (starts[0], starts[1] + 9), m.start(), m.end()
    m = re.search(r"(?<![\w'])(?:(1[89]|20)(\d)0|'?(\d)0)'?s\b", t, re.I)
    if m:
        if m.group(1):
            start = int(m.group(1) + m.group(2) + "0")
        else:
            d = int(m.group(3))
            start = (1900 if d >= 3 else 2000) + 10 * d
        return (start, start + 9), m.start(), m.end()
    for word, start in _DECADE_WORDS.items():
        m = re.search(rf"\b{word}\b", t, re.I)
        if m:
            return (start, start + 9), m.start(), m.end()
    m = re.search(r"\b(?:in|from|of)\s+(\d{4})\b|\b(\d{4})(?=\s+(?:movies|films)\b)", t, re.I)
    if m and 1870 <= int(m.group(1) or m.group(2)) <= 2100:
        y = int(m.group(1) or m.group(2))
        return (y, y), m.start(), m.end()
    return None


def _without_era(text: str, start: int, end: int) -> str:
    """``text`` without the era's words and the preposition that leads to them ("westerns from the 60s" →
    "westerns")."""
    before = re.sub(r"\b(?:from|in|of|during)\s+(?:the\s+)?$|\bthe\s+$", "", text[:start], flags=re.I)
    return before + " " + text[end:]


_NUM = r"(?P<n>\d{1,2}|two|three|four|five|six|seven|eight|nine|ten|a dozen|a couple of)"
_COUNTS = [
    re.compile(p, re.I)
    for p in (
        rf"^\s*{_NUM}\s+(?=[a-z])",  # "five comedies from the 90s"
        r"^\s*(?:just|only)\s+(?P<n>one|\d{1,2}|two|three|four|five|six|seven|eight|nine|ten)\b",  # "just one please"
        rf"\b(?:give|show|recommend|suggest|list|find|name|need|want|top|best|get)(?: me| us)?\s+(?:the\s+)?{_NUM}\b",
        rf"\b{_NUM}\s+(?:[\w'-]+\s+){{0,3}}?(?:movies|films|picks|titles|suggestions|recommendations)\b",
    )
]
_RECENT = re.compile(r"\b(?:recent|latest|newest|the newest|new releases?)\b", re.I)
_PERSON_CUES = {"by", "with", "starring", "featuring"}


def _inside_title(text: str, m: re.Match[str], titles: TitleResolver) -> bool:
    """Whether the words ``m`` found belong to a title the message names ("something like And Now for Something
    Completely Different"): the match with up to six words before it and two after names a stored title that holds
    those words."""
    before, after = _norm(text[: m.start()]).split()[-6:], _norm(text[m.end() :]).split()[:2]
    marker = _norm(m.group(0)).split()
    for b in range(len(before) + 1):
        for a in range(len(after) + 1):
            words = before[b:] + marker + after[:a]
            if len(words) == len(marker):
                continue
            item = titles.resolve(" ".join(words))
            if item is not None and f" {' '.join(words)} " in f" {_norm(item.title)} ":
                return True
    return False


def _title_list(rest: str, start: int, titles: TitleResolver) -> tuple[list[Item], int] | None:
    """Titles listed from ``rest[start:]`` to the clause's end, split at commas and "and" ("Heat, Collateral and
    Thief"), when every one names a stored title exactly: the items and where the list ends. Anything else in the
    clause ("Heat, but no dramas") or a title's own comma ("Monsters, Inc.") leaves it to the other readings."""
    stop = re.search(r"[.;!?]", rest[start:])
    end = start + stop.start() if stop else len(rest)
    if "," not in rest[start:end]:
        return None
    found: list[Item] = []
    for part in re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+|\s*&\s*", rest[start:end]):
        item = titles.resolve(part) if part.strip() else None
        if item is None or _strip_article(_norm(part)) not in _title_keys(item.title):
            return None
        found.append(item)
    return (found, end) if len(found) > 1 else None


def _title_at(rest: str, start: int, titles: TitleResolver) -> tuple[Item, int] | None:
    """A title that starts at ``rest[start:]`` and runs past a comma or full stop of its own ("Monsters, Inc. (2001)",
    "Mr. & Mrs. Smith", "G.I. Jane"), named exactly: the item and where its words end. The patterns that find a title
    stop at the first comma or full stop; this looks further, up to the clause's end (``;``, ``!``, ``?``), longest
    span first, and only takes a span that names a stored title exactly (so "Heat, but no dramas" stays "Heat")."""
    stop = re.search(r"[;!?]", rest[start:])
    limit = start + stop.start() if stop else len(rest)
    marks = [start + p.start() for p in re.finditer(r"[,.]", rest[start:limit])]
    if not marks:
        return None
    ends = sorted({*marks[1:], limit}, reverse=True)[:4]
    for end in ends:
        span = rest[start:end]
        if end <= marks[0] or len(_norm(span).split()) > 12:
            continue
        item = titles.resolve(span)
        if item is not None and _strip_article(_norm(span)) in _title_keys(item.title):
            return item, end
    return None


# a message that starts so asks for something ("something like…", "I'd like…", "show me…"): not a bare title
_REQUEST_START = {
    "something", "anything", "i", "id", "im", "ive", "can", "could", "would", "any", "more", "show", "give",
    "recommend", "suggest", "what", "who", "why", "how", "tell", "please", "it", "its", "hmm", "ok", "okay", "yes",
    "find", "get", "looking", "like", "similar", "maybe", "movies", "films", "movie", "film", "next", "other", "just",
    "only",
}  # fmt: skip


def _whole_title(text: str, vocab: Vocabulary, titles: TitleResolver) -> str | None:
    """The message is a title and nothing else ("Star Wars", "the lord of the rings please"): its normalised words,
    when they name a stored title exactly or start one (two words at least) and are not a genre's or a person's
    name. Reading them word by word would find genres inside titles ("Star Wars" → War, "Mystery Men")."""
    if re.search(r"[,;!?]|\.\s+[A-Z][a-z]", text.strip().rstrip(".!?")):  # more than a name: not looked up
        return None
    words = _norm(text).split()
    while words and words[-1] in ("please", "pls", "thanks"):
        words.pop()
    while words and words[0] in ("the", "a", "an"):
        words.pop(0)
    phrase = " ".join(words)
    if not phrase or len(words) > 8 or words[0] in _REQUEST_START or set(words) & _NEGATIONS:
        return None
    if phrase in _GENERIC or vocab.genre(phrase) or vocab.person(phrase) or _era(phrase):
        return None
    if words[-1] in ("movie", "movies", "film", "films"):  # "a superhero movie" asks for a kind, not the title
        return None
    return phrase if titles.named(phrase) is not None else None


_TRAILING_FILLER = re.compile(
    r"(?:\s+(?:please|pls|thanks|films?|movies?|ones?|again|anymore|for now))+\s*[.!]*$", re.IGNORECASE
)


def _not_a_title_name(text: str, vocab: Vocabulary) -> str | None:
    """The title a negated clause may name, as written without trailing filler ("Star Wars" of "Star Wars movies
    please"); ``None`` when it is a genre, a person, an era or a common word, or one word without a capital ("no
    violence": no one types a film's name so)."""
    said = _TRAILING_FILLER.sub("", text.strip())
    said = said.strip(" .!\"'“”")
    phrase = _strip_article(_norm(said))
    if not phrase or len(phrase.split()) > 8 or phrase in _GENERIC or set(phrase.split()) & _NEGATIONS:
        return None
    if vocab.genre(phrase) or vocab.person(phrase) or _era(phrase):
        return None
    if len(phrase.split()) == 1 and not said[:1].isupper():
        return None
    return said


def _mention_words(clause: str, vocab: Vocabulary) -> set[str]:
    """The words a clause's genre and person mentions use: the words said ("science fiction") and the label's
    ("sci fi")."""
    words = _norm(clause).split()
    return {
        w for pos, _, label, size in _mentions(clause, vocab) for w in [*words[pos : pos + size], *_norm(label).split()]
    }


# the first word of a last name of two ("De Niro", "Van Damme", "del Toro"): no first name
_NAME_PARTICLES = {"de", "del", "della", "di", "da", "van", "von", "der", "den", "la", "le", "du", "st", "mac", "mc"}


def _last_name_at(clause: str, words: list[str], i: int) -> bool:
    """Whether ``words[i]`` may be a last name on its own: four letters or more, not a common word, written with a
    capital, and not the first word of the clause unless it is the whole clause ("Spielberg") — a capital there says
    nothing ("Love stories")."""
    w = words[i]
    if len(w) < 4 or w in _GENERIC or w in _FUNCTION_WORDS or w in _NEGATIONS or not w.isalpha():
        return False
    if i == 0 and len(words) > 1:
        return False
    prev = words[i - 1] if i > 0 else ""
    common = prev in _GENERIC or prev in _FUNCTION_WORDS or prev in _REQUEST_START or prev in _NAME_PARTICLES
    # "James Bond": a full name that names no one stored, not Edward Bond
    if prev.isalpha() and not common and re.search(rf"\b{re.escape(prev[0].upper() + prev[1:])}\b", clause):
        return False
    # "Christopher Nolan" (not stored as a person): a first name before another capitalised one, not Dennis
    # Christopher
    nxt = words[i + 1] if i + 1 < len(words) else ""
    plain = nxt in _GENERIC or nxt in _FUNCTION_WORDS or nxt in _NEGATIONS
    if (
        nxt.isalpha()
        and not plain
        and re.search(rf"\b{re.escape(w[0].upper() + w[1:])}\s+{re.escape(nxt[0].upper() + nxt[1:])}\b", clause)
    ):
        return False
    return re.search(rf"\b{re.escape(w[0].upper() + w[1:])}\b", clause) is not None


def _mentions(clause: str, vocab: Vocabulary) -> list[tuple[int, str, str, int]]:
    """``(word position, kind, label, words)`` of the genres and people named in a clause, longest match first."""
    words = _norm(clause).split()
    out: list[tuple[int, str, str, int]] = []
    taken: set[int] = set()
    for size in range(max(vocab.max_words, 3), 0, -1):
        for i in range(len(words) - size + 1):
            if any(j in taken for j in range(i, i + size)):
                continue
            phrase = " ".join(words[i : i + size])
            pair = [g for g in (vocab.genre(x) for x in _GENRE_PAIRS.get(phrase, ())) if g]
            if len(pair) == 2:  # "a romcom": Romance and Comedy
                out += [(i, "genre", pair[0], size), (i, "genre", pair[1], size)]
                taken.update(range(i, i + size))
                continue
            genre = vocab.genre(phrase) if size <= 3 else None
            # one short word is a person only after "by"/"with"/"starring" ("a film by McG"): "Ben" alone is no one
            named = size > 1 or len(phrase) >= 5 or (i > 0 and words[i - 1] in _PERSON_CUES)
            person = vocab.person(phrase) if genre is None and named else None
            if person is None and genre is None and size == 1 and _last_name_at(clause, words, i):
                person = vocab.by_last_name(phrase)  # "a film by Spielberg"
            if genre is None and person is None:
                continue
            if person is not None and size == 1 and phrase in _GENERIC:
                continue
            out.append((i, "genre" if genre else "person", genre or person or "", size))
            taken.update(range(i, i + size))
    return sorted(out)


# one word for two genres
_GENRE_PAIRS = {
    "romcom": ("romance", "comedy"),
    "romcoms": ("romance", "comedy"),
    "rom com": ("romance", "comedy"),
    "rom coms": ("romance", "comedy"),
    "dramedy": ("comedy", "drama"),
    "dramedies": ("comedy", "drama"),
}


def _add(seq: list[str], value: str) -> None:
    if value and value not in seq:
        seq.append(value)


def extract_rules(
    message: str,
    vocab: Vocabulary,
    titles: TitleResolver,
    last_items: Sequence[str] = (),
    focus: str | None = None,
) -> ProfileDelta:
    """The profile delta simple rules read from one message (see the module docstring). ``focus`` is the film the
    conversation is about when the last answer was about one film ("who directed Heat?"): "it" in a question then
    means that film ("what year is it from?"), not the top pick of the last list."""
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
    m = _SWITCH.search(text)
    if m and not _inside_title(text, m, titles):  # the marker's words are no wish: "film noir instead"
        d.switch = True  # "dramas instead of comedies": what follows "instead of" is turned down
        text = (text[: m.start()] + (" not " if m.group("of") else " ") + text[m.end() :]).strip(" ,;:-–—")
        if not text:
            return d
    more = _MORE.fullmatch(text)
    if more:
        n = (more.group("n") or "").lower()
        d.more = int(n) if n.isdigit() else _NUMBER_WORDS.get(n, 0)
        return d
    m = _WHY_REF.match(text)
    if m and last_items:  # "why the second one?", "why that one?": the reasons for a pick of the last answer
        idx = _ref_indices(m.group("ref"), len(last_items))
        if idx:
            d.lookup = ("item", last_items[idx[0]], "why")
            return d
    m = _WHY_TITLE.match(text)
    why_words = _norm(m.group("x")) if m else ""  # "" for words that are all punctuation ("why -")
    why_item = titles.resolve(why_words) if why_words and why_words.split()[0] not in _NEGATIONS else None
    if why_item is not None and _strip_article(_core_title(why_item.title)) == _strip_article(why_words):
        d.lookup = ("item", why_item.id, "why")  # "why Heat?": a title, said whole
        return d
    for pattern, relation in _LOOKUPS:
        m = pattern.search(text)
        if not m:
            continue
        target = (m.group("x") or m.groupdict().get("x2") or "").strip().strip("?!.\"'“”").strip()
        ref = re.fullmatch(_REF, target, re.I)
        if ref and ref.group("ref").lower() in ("it", "that", "this"):
            placed = re.search(_REF, text[: m.start()], re.I)  # "the third one sounds great, who directed it?"
            if placed and _PLACE.search(placed.group("ref")) and last_items:
                ref = placed
            elif focus is not None:  # "who directed Heat?" … "what year is it from?"
                d.lookup = ("item", focus, relation)
                return d
        if ref and last_items:
            idx = _ref_indices(ref.group("ref"), len(last_items))
            if idx:
                d.lookup = ("item", last_items[idx[0]], relation)
                return d
        person = vocab.resolve_person(target)
        item = titles.resolve(target)
        if item is not None and (person is None or _core_title(item.title) == _norm(target)):
            d.lookup = ("item", item.id, relation)
        elif person is not None:
            d.lookup = ("entity", person, relation)
        else:
            d.lookup_failed = target
        return d

    whole = _whole_title(text, vocab, titles)
    if whole is not None:  # "Star Wars", "Lord of the Rings": the films of that name, not the genre War
        d.query, d.query_is_title = whole, True
        return d
    rest = text
    m = next((hit for p in _COUNTS if (hit := p.search(rest))), None)
    if m:  # "give me 3 sci-fi movies", "top 10 horror films": the number is not a title's or a keyword
        n = m.group("n").lower()
        count = int(n) if n.isdigit() else _NUMBER_WORDS.get(n, 0)
        if 1 <= count <= 50:
            d.count = count
            rest = rest[: m.start("n")] + " " + rest[m.end("n") :]
    m = _WATCHED_THEN.search(rest)
    named = titles.resolve(m.group("x")) if m else None
    if m and named is not None:  # "I just watched Inception and loved it"
        _add(d.disliked if m.group("v").lower() in ("hated", "disliked") else d.liked, named.id)
        rest = rest[: m.start()] + " " + rest[m.end() :]
    # feedback on the last answer ("loved it", "not that one", "hated the second one")
    if last_items:
        for pattern, target in ((_NEG_FEEDBACK, d.disliked), (_POS_FEEDBACK, d.liked), (_POS_AFTER, d.liked)):
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
    wide = _title_at(rest, m.start("x") if m.group("x") else m.start("x2"), titles) if m else None
    if m and wide:  # "something like Monsters, Inc. (2001)": the title runs past its comma
        d.like_item = wide[0].id
        rest = rest[: m.start()] + " " + rest[wide[1] :]
    elif m:
        x = (m.group("x") or m.group("x2") or "").strip()
        mod = (m.group("mod") or m.group("mod2") or "").strip()
        # "like Heat with Al Pacino", "like Goodfellas without De Niro", "like Heat from the 90s": the title, then
        # more to read ("Dances with Wolves" said whole stays the title)
        tail = ""
        said_whole = titles.resolve(x)
        if said_whole is None or _strip_article(_norm(x)) not in _title_keys(said_whole.title):
            cut = _LIKE_TAIL.search(x)
            if cut and titles.resolve(x[: cut.start()]) is not None:
                x, tail = x[: cut.start()], x[cut.start() :]
        ref = re.fullmatch(_REF, x, re.I) if last_items else None
        place = _ref_indices(ref.group("ref"), len(last_items)) if ref and _PLACE.search(x) else []
        # "more like the third one", "something like #2": a pick of the last answer, not a title search
        item = (said_whole if not tail else titles.resolve(x)) if not place else None
        parts = [p for p in re.split(r"\s+and\s+|\s*&\s*|\s+or\s+", x) if p.strip()]
        if item is not None and len(parts) > 1 and _strip_article(_norm(x)) not in _title_keys(item.title):
            # "movies like Inception and Interstellar": the first anchors, the others count as liked
            found = [titles.resolve(p) for p in parts]
            if all(found):
                for other in found[1:]:
                    if other is not None and other.id != item.id:
                        _add(d.liked, other.id)
        if place:
            d.like_item = last_items[place[0]]
            rest = rest[: m.start()] + tail + (" but " + mod if mod else " ") + rest[m.end() :]
        if item is not None:
            d.like_item = item.id
            if mod and not _mentions(mod, vocab) and not (set(_norm(mod).split()) & _NEGATIONS):
                d.modifier = mod
                rest = rest[: m.start()] + tail + " " + rest[m.end() :]
            else:
                rest = rest[: m.start()] + tail + (" but " + mod if mod else " ") + rest[m.end() :]
    # "I loved Toy Story" / "I hated Cats"
    for pattern, target in ((_DISLIKED_TITLE, d.disliked), (_LIKED_TITLE, d.liked)):
        for m in pattern.finditer(rest):
            x = m.group("x")
            if not _norm(x) or _norm(x).split()[0] in ("it", "that", "this", "them"):
                continue
            if vocab.genre(_norm(re.sub(r"\b(?:movies|films)\b", "", x))) and not re.search(r"\d{4}", x):
                continue  # "I like romance": the genre, not the film "Romance (1999)"
            listed = _title_list(rest, m.start("x"), titles)
            if listed:  # "I liked Heat, Collateral and Thief"
                for it in listed[0]:
                    _add(target, it.id)
                rest = rest[: m.start()] + " " + rest[listed[1] :]
                break
            wide = _title_at(rest, m.start("x"), titles)
            if wide:  # "I enjoyed G.I. Jane (1997)": the title runs past its full stop
                _add(target, wide[0].id)
                rest = rest[: m.start()] + " " + rest[wide[1] :]
                break
            parts = [p for p in re.split(r"\s+and\s+|\s*&\s*", x) if p.strip()]
            found = [titles.resolve(p) for p in parts]
            if len(parts) > 1 and not all(found):
                found = [titles.resolve(x)]
            hits = [it for it in found if it is not None]
            if hits:
                for it in hits:
                    _add(target, it.id)
                rest = rest[: m.start()] + " " + rest[m.end() :]
                break
    if d.like_item is None and d.liked and _LIKE_THAT.search(text):
        d.like_item = d.liked[-1]  # "I enjoyed Contact; more like that"
        rest = _LIKE_THAT.sub(" ", rest)
    # "I've seen Heat already": that film is left out (not the person whose last name is Heat)
    m = _SEEN_TITLE.search(rest)
    seen = titles.resolve(m.group("x")) if m else None
    every = _SEEN_EVERY.fullmatch(m.group("x").strip()) if m else None
    if m and seen is not None and _strip_article(_norm(m.group("x"))) in _title_keys(seen.title):
        _add(d.exclude_titles, m.group("x").strip())
        rest = rest[: m.start()] + " " + rest[m.end() :]
    elif m and every and titles.named(_strip_article(_norm(every.group("x")))) is not None:
        _add(d.exclude_titles, every.group("x").strip())  # "I've seen all the Star Wars films": every one of them
        rest = rest[: m.start()] + " " + rest[m.end() :]
    # "not Star Wars", "no Harry Potter movies": those titles are left out (not the genre War, not a keyword)
    for clause in _CLAUSE_SPLIT.split(rest):
        m = _NOT_TITLE.match(clause)
        said = _not_a_title_name(m.group("x"), vocab) if m else None
        if said is not None and titles.named(_strip_article(_norm(said))) is not None:
            _add(d.exclude_titles, said)
            rest = rest.replace(clause, " ", 1)
            continue
        m = _EXCEPT_TITLE.search(clause)
        said = _not_a_title_name(m.group("x"), vocab) if m else None
        if m and said is not None and titles.named(_strip_article(_norm(said))) is not None:
            _add(d.exclude_titles, said)
            rest = rest.replace(clause, clause[: m.start()], 1)
    if d.modifier is None:
        mm = _MODIFIER.search(rest)
        if mm:
            d.modifier = mm.group("m").lower()
    era = _era(rest)
    if era is not None and _NOT_ERA.search(rest[: era[1]]):  # "not from the 80s", "nothing before 2000"
        d.exclude_era = era[0]
        rest = _without_era(rest, era[1], era[2])
    elif era is not None:
        d.era = era[0]
        rest = _without_era(rest, era[1], era[2])
    elif vocab.years and (m := _RECENT.search(rest)):  # the catalogue's last five years
        d.era = (max(vocab.years.values()) - 4, None)
        rest = rest[: m.start()] + " " + rest[m.end() :]
    m = _TOO_OLD.search(rest)
    if m and d.modifier is None:  # "those are too old": newer than the last answer
        d.modifier = "newer" if m.group(1).lower() in ("old", "dated") else "older"
        rest = rest[: m.start()] + " " + rest[m.end() :]
    relative = _RELATIVE_ERA.get(
        re.sub(r"^(?:a bit|a little|a lot|slightly|somewhat|much)\s+", "", (d.modifier or "").lower())
    )
    if relative is not None:  # "something newer", "like Inception but older": an era, never a keyword
        refs = [d.like_item] if d.like_item else list(last_items)
        years = sorted(vocab.years[i] for i in refs if i in vocab.years)
        if years and era is None:  # than the anchor film, or than the middle of the last answer
            middle = years[len(years) // 2]
            d.era = (middle + 1, None) if relative == "newer" else (None, middle - 1)
        d.modifier = None
    # genres and people, negated or not, clause by clause
    for clause in _CLAUSE_SPLIT.split(rest):
        words = _norm(clause).split()
        for pos, kind, label, _ in _mentions(clause, vocab):
            negated = bool(set(words[:pos]) & _NEGATIONS) or words[pos - 2 : pos] == ["do", "not"]
            if kind == "genre":
                _add(d.exclude_genres if negated else d.include_genres, label)
            else:
                _add(d.exclude_people if negated else d.include_people, label)
    # free-text wish
    m = _QUERY_CUE.search(rest)
    candidate = m.group("q") if m else None
    if m and set(_norm(_CLAUSE_SPLIT.split(rest[: m.start()])[-1]).split()[-3:]) & _NEGATIONS:
        candidate = "not " + (candidate or "")  # "not in the mood for anything violent", "I don't want…"
    if candidate is None and dataclasses.replace(d, rejected=False).is_empty() and not _GREETING.match(text):
        candidate = rest
    names = {w for c in _PROPER_NAME.findall(text) for w in _norm(c).split()}  # "set in New York"
    if candidate:
        # clause by clause: "a scary movie but not too gory" wishes for nothing gory ("gory" is no keyword to search)
        clauses = _CLAUSE_SPLIT.split(_FEEL_GOOD.sub("feel-good", candidate))
        wishes = [_wish(clause, vocab, names) for clause in clauses]
        d.query = " ".join(w for w in wishes if w) or None
    elif not _GREETING.match(text) and not d.feedback:
        # what is left beside a genre, an era or a person, when it names a tag whole: "a heist film from the 60s"
        left = [w for w in (_wish(c, vocab, names) for c in _CLAUSE_SPLIT.split(rest)) if w]
        if len(left) == 1 and vocab.tag_ids(left[0]):
            d.query = left[0]
    d.unparsed = _unparsed(text, vocab, titles, d)
    return d


_PROPER_NAME = re.compile(r"(?<=[a-z,] )[A-Z][a-z]+(?: [A-Z][a-z]+)+")  # "New York" after a lowercase word
_FEEL_GOOD = re.compile(r"\bfeel[\s-]+good\b", re.I)  # "a feel good movie" is "a feel-good movie", not "feel"


def _wish(clause: str, vocab: Vocabulary, names: Collection[str] = ()) -> str | None:
    """The free-text wish of one clause: its words less the genres and people it names and the words of asking,
    trimmed at both ends; nothing when it is negated ("no subtitles please", "not too gory") or only a number."""
    mention_words = _mention_words(clause, vocab)
    words = [w for w in _norm(clause).split() if w not in mention_words]
    # a hyphenated word is content as a whole ("feel-good"), whatever its parts are alone, and so are the words of
    # a name of several capitalised words in the message (``names``: "movies set in New York" is not "york")
    compound = {w for c in re.findall(r"\w+(?:-\w+)+", clause) for w in _norm(c).split()} | set(names)

    def filler(w: str) -> bool:
        return w not in compound and (w in _GENERIC or w in _NEGATIONS or w in _QUERY_FILLER)

    content = [w for w in words if not filler(w) and not w.isdigit() and not vocab.genre(w)]
    first = next((n for n, w in enumerate(words) if w in content), len(words))
    negated = bool(set(words[:first]) & _NEGATIONS)  # "no subtitles please": nothing to search for
    if not content or negated or re.fullmatch(r"\d+s?", " ".join(content)):
        return None
    while words and filler(words[0]):
        words.pop(0)
    while words and filler(words[-1]):
        words.pop()
    return " ".join(words) or None


_FUNCTION_WORDS = {
    "from", "before", "after", "between", "since", "until", "by", "but", "too", "very", "really", "just", "is", "are",
    "was", "be", "my", "we", "us", "maybe", "also", "again", "mood", "era", "decade", "years", "year", "s", "thanks",
    "thank", "ok", "okay", "yes", "loved", "love", "liked", "enjoyed", "recommend", "suggest", "show", "give", "find",
    "need", "looking", "first", "second", "third", "last", "another", "hmm", "id", "im", "see", "prefer", "should",
    "feel", "watching", "directed", "starring", "director", "similar", "enjoy", "none", "get", "set", "about", "top",
    "someone", "somebody", "else", "recent", "latest", "newest", "releases", "release", "list", "name", "surprise",
    "popular", "trending", "right", "now", "whats", "highest", "rated", "highly", "acclaimed", "famous", "currently",
    "days", "bit", "slightly", "little", "much", "time", "fan", "fans", "sounds", "looks", "seems", "seen", "watched",
    "saw", "already", "ive", "old", "dated", "both", "all",
}  # fmt: skip


# words of asking, not of what is asked for ("what should I watch", "I feel like watching"); "love" is not one
_QUERY_FILLER = {
    "from", "should", "feel", "watching", "recommend", "suggest", "show", "give", "find", "need", "looking", "see",
    "prefer", "get", "set", "maybe", "really", "just", "too", "very", "also", "again", "mood", "id", "im", "hmm", "by",
    "is", "are", "was", "be", "my", "tonight", "today", "surprise", "popular", "trending", "right", "now", "whats",
    "highest", "rated", "highly", "acclaimed", "famous", "currently", "days", "but", "top",
}  # fmt: skip


def _unparsed(text: str, vocab: Vocabulary, titles: TitleResolver, d: ProfileDelta) -> list[str]:
    """The message's content words that no rule used (see :attr:`ProfileDelta.unparsed`)."""
    used = _mention_words(text, vocab)
    ids = [*d.liked, *d.disliked, *([d.like_item] if d.like_item else [])]
    if ids:
        used |= {w for title in titles.titles(ids).values() for w in _norm(_YEAR_SUFFIX.sub("", title)).split()}
    for free in (d.query, d.modifier, *d.exclude_titles):
        used |= set(_norm(free or "").split())
    if d.era is not None or d.exclude_era is not None:  # the words of "older than 1990", "between 1990 and 1995"
        used |= {"before", "after", "since", "older", "newer", "than", "between", "pre", "post", "and", "to"}
    out = []
    for w in _norm(text).split():
        if w in used or w in _GENERIC or w in _NEGATIONS or w in _FUNCTION_WORDS or w in _DECADE_WORDS:
            continue
        if w in _NUMBER_WORDS or w == "dozen" or re.fullmatch(r"\d+s?", w):
            continue
        if vocab.genre(w):
            continue
        out.append(w)
    return out


def rules_left_something(d: ProfileDelta) -> bool:
    """Whether the LLM may add to what the rules read: they kept part of the message as free text (``query``) or
    left content words unused (``unparsed``: "no comedies, something with spaceships"). A message the rules read
    completely ("westerns from the 60s", "more like Alien but no horror", a title alone) costs no LLM call."""
    return (d.query is not None and not d.query_is_title) or bool(d.unparsed)


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

    if d.switch:  # a change of subject: what was asked for gives way; exclusions, likes and dislikes stay
        profile = profile.model_copy(
            update={
                "include_genres": (),
                "include_people": (),
                "era": None,
                "like_item": None,
                "modifier": None,
                "query": None,
            }
        )
    era = d.era if d.era is not None else profile.era
    if d.exclude_era is not None and d.exclude_era == era:  # "the 80s", then "not from the 80s"
        era = None
    return ChatProfile(
        liked=upd(profile.liked, d.liked, d.disliked),
        disliked=upd(profile.disliked, d.disliked, d.liked),
        include_genres=upd(profile.include_genres, d.include_genres, d.exclude_genres),
        exclude_genres=upd(profile.exclude_genres, d.exclude_genres, d.include_genres),
        include_people=upd(profile.include_people, d.include_people, d.exclude_people),
        exclude_people=upd(profile.exclude_people, d.exclude_people, d.include_people),
        exclude_titles=tuple(
            t
            for t in upd(profile.exclude_titles, d.exclude_titles, ())
            if not (d.query_is_title and d.query and _strip_article(_norm(t)) == d.query)  # asked for by name again
        ),
        era=era,
        exclude_eras=tuple(
            e
            for e in dict.fromkeys([*profile.exclude_eras, *([d.exclude_era] if d.exclude_era else [])])
            if e != d.era  # asked for again
        ),
        like_item=d.like_item if d.like_item is not None else profile.like_item,
        modifier=d.modifier if d.modifier is not None else (None if d.like_item else profile.modifier),
        query=d.query if d.query is not None else (None if _query_dropped(profile, d) else profile.query),
    )


def _query_dropped(profile: ChatProfile, d: ProfileDelta) -> bool:
    """The wish kept from earlier ends: the message anchors on another film ("Star Wars", then "I loved Amelie,
    anything similar?": its words would pull the list back to the old wish), or turns that title down ("Star Wars",
    then "not Star Wars")."""
    query = profile.query
    if query is None:
        return False
    if d.like_item is not None and d.like_item != profile.like_item:
        return True
    return any(_strip_article(_norm(t)) == _strip_article(_norm(query)) for t in d.exclude_titles)
