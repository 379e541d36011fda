"""Small typed objects passed between pipeline stages.

Everything here is a frozen pydantic model with extra fields forbidden. Item, user and entity ids are strings.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DATASET_SOURCE",
    "Candidate",
    "CandidateList",
    "ChatProfile",
    "ChatTurn",
    "Entity",
    "Fact",
    "IngestSummary",
    "Interaction",
    "Item",
    "ItemDetails",
    "KGPath",
    "Provenance",
    "Reason",
    "RecQuery",
    "Recommendation",
    "RecommendedItem",
    "SessionProfile",
    "display_title",
    "fact_id",
]


_TITLE_YEAR = re.compile(r"^(?P<base>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$")
_TITLE_ALT = re.compile(r"\s*\([^()]*\)\s*$")
_TITLE_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<art>The|A|An|Les|Le|La|Los|Las|Il|El|Das|Der|Die|L')$")


def display_title(title: str) -> str:
    """A title as people write it: the article in front, alternative titles dropped, the year kept.

    Example:
        >>> display_title("Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)")
        'The Good, the Bad and the Ugly (1966)'
        >>> display_title("Seven (a.k.a. Se7en) (1995)"), display_title("Heat")
        ('Seven (1995)', 'Heat')
    """
    m = _TITLE_YEAR.match(title)
    base, year = (m.group("base"), m.group("year")) if m else (title.strip(), None)
    stripped = base
    while _TITLE_ALT.search(stripped) and _TITLE_ALT.sub("", stripped):
        stripped = _TITLE_ALT.sub("", stripped)
    a = _TITLE_ARTICLE.match(stripped)
    if a:
        art = a.group("art")
        stripped = f"{art}{a.group('rest')}" if art.endswith("'") else f"{art} {a.group('rest')}"
    return f"{stripped} ({year})" if year else stripped


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def fact_id(head: str, relation: str, tail: str) -> str:
    """Stable id of a fact: the same triple always gets the same id, in every store.

    Example:
        >>> fact_id("1", "genre", "genre:Comedy")
        'F811131581600'
    """
    digest = hashlib.sha1(f"{head}\x1f{relation}\x1f{tail}".encode()).hexdigest()
    return "F" + digest[:12]


def _nonempty(value: str, name: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


class Item(_Frozen):
    """A recommendable thing. ``text`` is free description; ``attributes`` are extra columns kept verbatim."""

    id: str
    title: str
    text: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("id", "title")
    @classmethod
    def _check_nonempty(cls, v: str, info: object) -> str:
        return _nonempty(v, getattr(info, "field_name", "value"))


DATASET_SOURCE = "dataset"
"""The source of facts that came with the data (ingest); extracted ones say ``llm``."""


class Provenance(_Frozen):
    """Where a fact that knowrec derived came from (``knowrec kg extract``): the words it rests on and who read them.

    Example:
        >>> Provenance(source="llm", model="smollm2", prompt="kg_extract@1", evidence="directed by Michael Mann").source
        'llm'
    """

    source: str = "llm"
    model: str = ""
    adapter: str = ""
    prompt: str = ""
    """Prompt id and version, ``kg_extract@1``."""
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    evidence: str = ""
    """The span of the item's text the fact rests on, verbatim."""
    field: str = ""
    """Which item field the evidence is in (``text``, ``title``, an attribute name)."""


class Fact(_Frozen):
    """A knowledge-graph triple. ``head`` is usually an item id, ``tail`` an entity id (e.g. ``dbr:Tom_Hanks``).

    ``source`` says where it came from: ``dataset`` (ingested with the data) or ``llm`` (extracted from an item's
    text, with ``provenance``). When two sources state the same triple, the one stored first keeps it.
    """

    id: str = ""
    head: str
    relation: str
    tail: str
    head_label: str = ""
    tail_label: str = ""
    source: str = DATASET_SOURCE
    provenance: Provenance | None = None

    @field_validator("head", "relation", "tail")
    @classmethod
    def _check_nonempty(cls, v: str, info: object) -> str:
        return _nonempty(v, getattr(info, "field_name", "value"))

    def model_post_init(self, __context: object) -> None:
        if not self.id:
            object.__setattr__(self, "id", fact_id(self.head, self.relation, self.tail))

    def text(self) -> str:
        """A one-line readable form, the labels as people write them (:func:`display_title`: the article in front,
        a disambiguation dropped; tags as written).

        Example:
            >>> Fact(head="1", relation="editing", tail="p", head_label="Lion King, The (1994)",
            ...      tail_label="Ivan Bilancio (film editor)").text()
            'The Lion King (1994) —editing→ Ivan Bilancio'
        """
        head = display_title(self.head_label) if self.head_label else self.head
        tail = self.tail_label or self.tail
        tail = tail if self.relation == "tag" else display_title(tail)  # a tag is kept as users wrote it
        return f"{head} —{self.relation}→ {tail}"


class Interaction(_Frozen):
    """A user's interaction with an item. ``rating`` and ``timestamp`` are optional."""

    user_id: str
    item_id: str
    rating: float | None = None
    timestamp: int | None = None

    @field_validator("user_id", "item_id")
    @classmethod
    def _check_nonempty(cls, v: str, info: object) -> str:
        return _nonempty(v, getattr(info, "field_name", "value"))


class RecQuery(_Frozen):
    """What one recommendation call asks for."""

    user_id: str | None = None
    k: int = Field(default=10, ge=1, le=200)
    query: str | None = None
    diversity: float = Field(default=0.3, ge=0.0, le=1.0)
    exclude: tuple[str, ...] = ()
    history: tuple[str, ...] = ()
    """Item ids of the user's recent positive history, most recent first (filled by the pipeline)."""
    seen: frozenset[str] = frozenset()
    """Every item the user has interacted with; never recommended (filled by the pipeline)."""
    sequence: tuple[str, ...] = ()
    """Every interacted item in time order, oldest first (the sequential model's input; filled by the pipeline)."""
    candidates: tuple[str, ...] = ()
    """If given, rank only these items (offline protocols with fixed candidate lists); empty = whole catalogue."""


class KGPath(_Frozen):
    """A path ``history item —r1→ entity ←r2— candidate`` through a shared entity."""

    source_item: str
    entity: str
    entity_label: str
    source_fact: str
    target_fact: str
    source_relation: str
    target_relation: str
    weight: float
    extracted: bool = False
    """True when either fact of the path has a source other than ``dataset`` (e.g. extracted by an LLM)."""


class Entity(_Frozen):
    """A stored entity (a fact endpoint that is not an item): its label, the relations linking items to it, and how
    many items it is linked to."""

    id: str
    label: str = ""
    relations: tuple[str, ...] = ()
    degree: int = 0


class Candidate(_Frozen):
    """A candidate item with its score and why it was retrieved."""

    item_id: str
    score: float
    sources: dict[str, float] = Field(default_factory=dict)
    """Generator name → that generator's own score."""
    ranks: dict[str, int] = Field(default_factory=dict)
    """Generator name → this item's 1-based rank in that generator's list."""
    paths: tuple[KGPath, ...] = ()
    features: tuple[float, ...] = ()
    """The learned fusion's features (``CandidateList.feature_names``); empty under RRF."""


class CandidateList(_Frozen):
    """The fused candidates that retrieval hands to ranking, best first, and how they were fused.

    Example:
        >>> cl = CandidateList(items=(Candidate(item_id="1", score=0.5),), fusion="rrf")
        >>> cl.ids()
        ['1']
    """

    items: tuple[Candidate, ...] = ()
    fusion: Literal["learned", "rrf"] = "rrf"
    """``learned``: the fitted fusion model ordered them; ``rrf``: weighted reciprocal-rank fusion (nothing fitted)."""
    generators: tuple[str, ...] = ()
    """The generators that ran, in order."""
    feature_names: tuple[str, ...] = ()

    def ids(self) -> list[str]:
        return [c.item_id for c in self.items]

    def __len__(self) -> int:
        return len(self.items)


class Reason(_Frozen):
    """A sentence explaining a recommendation, citing the fact ids it rests on."""

    text: str
    fact_ids: tuple[str, ...] = ()
    """Facts about the recommended item itself (each has the item as head or tail)."""
    context_fact_ids: tuple[str, ...] = ()
    """Facts about the user's history items that the reason connects to (e.g. the other film by a director)."""
    source: Literal["template", "llm"] = "template"


class RecommendedItem(_Frozen):
    """One entry of a :class:`Recommendation`."""

    item_id: str
    title: str
    """The title as the catalogue stores it (``Matrix, The (1999)``)."""
    display_title: str = ""
    """The title as people write it (``The Matrix (1999)``, :func:`display_title`): what the CLI, the chat and the
    web page show. Filled from ``title`` when not given."""
    rank: int
    score: float
    retrieval_score: float
    llm_score: float | None = None
    sources: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()
    facts: tuple[Fact, ...] = ()
    """Every fact cited by a reason, so a caller can show or check them."""

    @model_validator(mode="before")
    @classmethod
    def _display(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("display_title") and isinstance(data.get("title"), str):
            data = {**data, "display_title": display_title(data["title"])}
        return data


class Recommendation(_Frozen):
    """The result of :meth:`knowrec.Recommender.recommend`."""

    user_id: str | None
    items: tuple[RecommendedItem, ...]
    query: str | None = None
    cold_start: bool = False
    fusion: Literal["learned", "rrf"] = "rrf"
    """How retrieval fused its generators: ``learned`` (the fitted fusion model) or ``rrf`` (nothing fitted yet)."""
    ranking_mode: str
    model: str
    prompt_id: str | None = None
    prompt_version: str | None = None
    fallback: bool = False
    """True when the LLM's ranking could not be used at all and retrieval order was returned."""
    fallback_reason: str | None = None
    repairs: tuple[str, ...] = ()
    """Fixes applied to a partly invalid LLM answer (unknown labels, duplicates, gaps filled from retrieval)."""
    timings_ms: dict[str, float] = Field(default_factory=dict)
    usage: dict[str, int] = Field(default_factory=dict)


class ChatProfile(_Frozen):
    """Structured taste extracted from a conversation (see :mod:`knowrec.agent.chat`)."""

    liked: tuple[str, ...] = ()
    """Item ids the user liked in this session."""
    disliked: tuple[str, ...] = ()
    """Item ids the user disliked; never recommended again in the session."""
    include_genres: tuple[str, ...] = ()
    """Genre labels as stored (e.g. ``"Comedy"``)."""
    exclude_genres: tuple[str, ...] = ()
    include_people: tuple[str, ...] = ()
    """Entity labels (directors, actors, …)."""
    exclude_people: tuple[str, ...] = ()
    exclude_titles: tuple[str, ...] = ()
    """Titles as the user wrote them ("Star Wars"): no item whose title is one of them, or starts with it (two words
    or more), is recommended in the session."""
    era: tuple[int | None, int | None] | None = None
    """``(from_year, to_year)``, either end open."""
    exclude_eras: tuple[tuple[int | None, int | None], ...] = ()
    """Eras turned down ("not from the 80s", "nothing before 2000"): no item of those years is recommended."""
    like_item: str | None = None
    """"More like X": the item id of X."""
    modifier: str | None = None
    """"… but lighter": passed to retrieval as query text."""
    query: str | None = None
    """The latest free-text wish."""

    def is_empty(self) -> bool:
        """True when nothing is known yet."""
        return self == ChatProfile()


class ChatTurn(_Frozen):
    """One turn of a conversation (used by the chat agent)."""

    session_id: str
    role: Literal["user", "assistant"]
    text: str
    action: Literal["ask", "lookup", "recommend", "feedback", "answer"] = "answer"
    recommendation: Recommendation | None = None
    items: tuple[str, ...] = ()
    """Recommended item ids in order (the same as ``recommendation.items``)."""
    facts: tuple[Fact, ...] = ()
    """Facts looked up or cited in the text."""
    profile: ChatProfile | None = None
    """The session's profile after this turn (assistant turns)."""
    created_at: float = 0.0


class ChatProgress(_Frozen):
    """What a chat turn is doing while it runs: streamed to the web page, the terminal and ``stream: true`` clients
    before the :class:`ChatTurn` lands."""

    session_id: str
    stage: Literal["extracting", "retrieving", "ranking"]
    """``extracting``: the LLM reads the request; ``retrieving``: candidates are being found; ``ranking``: the
    candidates are known (``items``) and the LLM reranks them."""
    text: str = ""
    """At ``ranking``: the answer's first line; the final turn's text starts with it."""
    items: tuple[RecommendedItem, ...] = ()
    """At ``ranking``: the picks in retrieval order (no reasons yet); the final turn may reorder or replace them."""


class ItemDetails(_Frozen):
    """One item and its knowledge-graph facts, most informative first (``RecommenderAPI.item``)."""

    item: Item
    facts: tuple[Fact, ...] = ()


class SessionProfile(_Frozen):
    """What a chat session has learnt so far (``RecommenderAPI.session_profile``)."""

    session_id: str
    profile: ChatProfile | None = None
    """``None`` when the session has no profile yet."""
    summary: str = "nothing yet"
    """The profile in words, with titles and labels resolved ("likes Heat (1995); no Comedy")."""


class IngestSummary(_Frozen):
    """What an ingest wrote (counts after de-duplication) and how long it took."""

    items: int
    facts: int
    entities: int
    users: int
    interactions: int
    indexed: int
    seconds: float
    new_items: int = 0
    new_facts: int = 0
    new_interactions: int = 0
