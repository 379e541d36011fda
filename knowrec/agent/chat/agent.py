"""The chat agent: sessions, the per-turn decision (ask, look up, recommend), and the recommendations that honour the
session's profile."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

from knowrec.agent.chat.answer import answer_text, head_line
from knowrec.agent.chat.extraction import LLMExtractor
from knowrec.agent.chat.rules import (
    ProfileDelta,
    StoreTitles,
    TitleResolver,
    apply_delta,
    extract_rules,
    merge_deltas,
    rules_left_something,
)
from knowrec.agent.chat.sessions import SessionInfo, SessionStore
from knowrec.agent.chat.vocabulary import Vocabulary
from knowrec.agent.explain import FROM_TEXT, SPECIFICITY, not_a_reason, other_label, relation_phrase
from knowrec.agent.llm.base import LLMClient
from knowrec.config import ChatConfig
from knowrec.errors import InvalidInput, KnowrecError, NotFound
from knowrec.kg_store.base import GraphBatch, GraphStore
from knowrec.types import (
    DATASET_SOURCE,
    ChatProfile,
    ChatProgress,
    ChatTurn,
    Fact,
    Interaction,
    Reason,
    Recommendation,
    display_title,
)

__all__ = ["DISLIKED_RATING", "LIKED_RATING", "ChatAgent", "RecommendFn"]

log = logging.getLogger(__name__)

LIKED_RATING = 5.0
DISLIKED_RATING = 1.0

RankMode = Literal["verbalizer", "listwise", "pointwise", "none"]


class RecommendFn(Protocol):
    """How the agent asks for recommendations: :meth:`knowrec.Recommender.recommend` fits."""

    def __call__(
        self,
        user_id: str | None,
        *,
        k: int,
        query: str | None = None,
        diversity: float = 0.3,
        exclude: list[str] | None = None,
        candidates: list[str] | None = None,
        mode: RankMode | None = None,
        on_retrieved: Callable[[Recommendation], None] | None = None,
    ) -> Recommendation: ...


def _telling_first(facts: Sequence[Fact], item_id: str) -> list[Fact]:
    """An item's facts, the most telling relation first (a director before a tag before the year), a tag that runs
    the item down or speaks of its tagger ("in netflix queue") last."""
    rank = {r: n for n, r in enumerate(SPECIFICITY)}
    return sorted(
        facts, key=lambda f: (not_a_reason(f.relation, other_label(f, item_id)), rank.get(f.relation, len(rank)))
    )


# the relation a lookup asks for, as a person names it where the two differ ("who stars in X?": the cast)
_ASKED = {"starring": "cast"}
# "by that director", "with the same actor": a person of the film the conversation is about
_PERSON_ROLES = {
    "director": "director",
    "actor": "starring",
    "actress": "starring",
    "star": "starring",
    "writer": "writer",
    "composer": "musicComposer",
}
_THAT_PERSON = re.compile(
    r"\b(?:by|from|with|starring|of)\s+(?P<ref>(?:that|the same|this)\s+(?P<role>director|actor|actress|star|writer"
    r"|composer))\b",
    re.I,
)


def _focus(turns: Sequence[ChatTurn], store: GraphStore) -> str | None:
    """The film the last answer was about, when it was a lookup of one film ("who directed Serpico?"): the one item
    every fact it cited touches."""
    last = next((t for t in reversed(turns) if t.role == "assistant"), None)
    if last is None or last.action != "lookup" or not last.facts:
        return None
    common = set.intersection(*({f.head, f.tail} for f in last.facts))
    items = store.has_items(sorted(common)) if common else set()
    return next(iter(items)) if len(items) == 1 else None


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
        recommend: RecommendFn,
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
        # titles in messages and the names of items in answers, for the rules, the LLM extraction and the answer text
        self.titles: TitleResolver = StoreTitles(store)
        self._extractor = LLMExtractor(llm, self.titles)
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
        focus = _focus(turns, self.store)
        named = self._name_the_person(message, focus) if focus is not None else message
        # "anything else by that director?" after "who directed Serpico?": his films, Serpico left out
        other_than = {focus} if focus is not None and named != message else set()
        message = named
        delta = extract_rules(message, vocab, self.titles, last_items, focus)
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
            llm_delta = self._extractor.extract(message, vocab, info.profile, last_items)
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
        shown = {i for t in turns if t.role == "assistant" for i in t.items} | other_than
        return self._recommend_turn(
            sid,
            info.user_id,
            profile,
            delta.more or delta.count or k,
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

    def _name_the_person(self, message: str, item_id: str) -> str:
        """``message`` with "that director" (actor, writer, composer) replaced by the name of the film's own: what the
        rules read as any name ("anything else by that director?" → "anything else by Sidney Lumet?")."""
        m = _THAT_PERSON.search(message)
        if not m:
            return message
        relation = _PERSON_ROLES[m.group("role").lower()]
        facts = [f for f in self.store.facts([item_id]).get(item_id, []) if f.relation == relation]
        if not facts:
            return message
        name = re.sub(r"\s*\([^()]*\)$", "", other_label(facts[0], item_id))  # "Andrew Davis (director)"
        return message[: m.start("ref")] + name + message[m.end("ref") :]

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
            name = display_title(item.title) if item else what
            asked = [f for f in facts if f.relation == relation] if relation else facts
            facts = _telling_first(asked or facts, what)[:10]
            if not facts:
                text = f"I have no facts about {name}."
            else:  # "Directed by Joel Coen", "A crime film": as the reasons put it, each with its citation
                lines = [f"- {relation_phrase(f.relation, other_label(f, what))} [{f.id}]" for f in facts]
                intro = f"Here is what I know about {name}:"
                if not asked:  # "who directed X?" and no director is stored: say so before the rest
                    intro = f"I do not know the {_ASKED.get(relation, relation)} of {name}. " + intro
                text = intro + "\n" + "\n".join(lines)
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
        lines = []
        for f in found:  # "Forrest Gump (1994): stars Tom Hanks"
            item_id, film = (f.head, f.head_label) if f.head not in ids else (f.tail, f.tail_label)
            phrase = relation_phrase(f.relation, other_label(f, item_id))
            lines.append(f"- {display_title(film or item_id)}: {phrase[:1].lower()}{phrase[1:]} [{f.id}]")
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
        name = display_title(item.title) if item else item_id
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
        """The LLM's grounded reading of ``message`` (see :class:`LLMExtractor`; bench_llm_generation times it)."""
        return self._extractor.extract(message, vocab, profile, last_items)

    # recommending -----------------------------------------------------------------------------------------------
    def _banned(self, profile: ChatProfile, vocab: Vocabulary) -> set[str]:
        banned = set(profile.disliked) | set(profile.liked)
        if profile.like_item:
            banned.add(profile.like_item)
        banned |= vocab.items_of(profile.exclude_genres) | vocab.items_of(profile.exclude_people)
        for title in profile.exclude_titles:
            banned |= {it.id for it in self.titles.all_named(title)}
        if profile.era is not None:
            lo, hi = profile.era
            lo_, hi_ = lo if lo is not None else -10_000, hi if hi is not None else 10_000
            all_ids = {i for ids in vocab.entity_items.values() for i in ids} | set(vocab.years)
            banned |= {i for i in all_ids if not (lo_ <= vocab.years.get(i, -100_000) <= hi_)}
        for lo, hi in profile.exclude_eras:  # an item of unknown year is not known to be of that era
            banned |= {i for i, y in vocab.years.items() if (lo is None or y >= lo) and (hi is None or y <= hi)}
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
        head = head_line(profile, self.titles, feedback, paging=paging)
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
        rec, items, dropped = self._fetch(who, profile, vocab, never, k, **extra)
        relaxed: list[str] = [dropped] if dropped and items else []
        if len(items) < k:
            for label, looser in self._relaxations(profile):
                taken = never | {it.item_id for it in items}
                _, more, _ = self._fetch(who, looser, vocab, taken, k - len(items), mode="none")
                if more:
                    relaxed.append(label)
                    items += more
                if len(items) >= k:
                    break
        items = [it.model_copy(update={"rank": r}) for r, it in enumerate(items[:k], start=1)]
        items = self._asked_for_first(items, profile, vocab)
        rec = rec.model_copy(update={"items": tuple(items), "user_id": user_id})
        text, facts = answer_text(rec, profile, head, self.titles, announced=bool(announced), relaxed=relaxed)
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
        mode: RankMode | None = None,
    ) -> tuple[Recommendation, list[Any], str | None]:
        """The pipeline's answer for ``profile``, the ``k`` items of it that fit (never one of ``never``), and the
        constraint left aside to find any (``"the genre"``: no film of the people asked for has the genres asked
        for, so the people's films of any genre are shown; the answer says so)."""
        banned = self._banned(profile, vocab) | never
        cap = self.config.max_seed_candidates
        required: set[str] | None = None
        if profile.include_genres:
            per_genre = [vocab.items_of([g]) for g in profile.include_genres]
            # "a romantic comedy": the items of every genre while k of them fit, else of any
            every = set.intersection(*per_genre) - banned
            required = every if len(every) >= k else set().union(*per_genre) - banned
        dropped: str | None = None
        if profile.include_people:
            people = vocab.items_of(profile.include_people) - banned
            if required is not None and people and not required & people:
                dropped = "the genre"  # "sci-fi", then "anything with Matt Damon?": his films, said so
            required = people if required is None else (required & people) or people
        tagged = vocab.tagged(profile.query) - banned if profile.query else set()
        if tagged:  # a wish that is a tag ("a heist movie", "twist ending"): the films tagged so, with the rest asked
            required = tagged if required is None else (required & tagged) or required
        candidates: list[str] | None = None
        if profile.like_item:
            seeds = self.store.kg_candidates({profile.like_item: 1.0}, banned, cap)
            ids = [c.item_id for c in seeds]  # closest first: the rarer the shared entities, the closer
            near = self.config.like_neighbours
            closest = set(ids[:near])
            ids = ids[:near] + [i for i in self._alike(profile.like_item, vocab, banned) if i not in closest]
            if required is not None:
                # the genres and people asked for outrank the resemblance: X's neighbours among them if enough,
                # else all of them
                close = [i for i in ids if i in required][:near]
                ids = close if len(close) >= 2 * k or len(required) > cap else sorted(required)
            if not ids:  # nothing like X is left: the caller relaxes (and says so)
                return Recommendation(user_id=user_id, items=(), ranking_mode="none", model=""), [], None
            candidates = ids
        elif required is not None:
            if not required:  # nothing left fits: the caller relaxes
                return Recommendation(user_id=user_id, items=(), ranking_mode="none", model=""), [], None
            if len(required) <= cap:
                candidates = sorted(required)
            else:  # "a comedy" in a catalogue of 3,756 comedies: the most watched of them (else, for a new user, the
                # words "comedy" matched against the films' text chose "The King of Comedy" and a stand-up special)
                ranked = [i for i, _ in self.store.popular(100_000) if i in required][:cap]
                candidates = ranked + sorted(required - set(ranked))[: cap - len(ranked)]
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
        return rec, self._enforce(rec, profile, banned, vocab, required, k), dropped

    def _asked_for_first(self, items: list[Any], profile: ChatProfile, vocab: Vocabulary) -> list[Any]:
        """Each pick's first reason is the fact that ties it to a person or a tag asked for ("films by Andrew Davis":
        "Directed by Andrew Davis."; "a heist movie": "Tagged “heist”."), when its reasons do not cite one already:
        the pipeline's reasons explain the pick by the user's history ("Music by James Newton Howard, like The
        Devil's Advocate"), not by what was just asked."""
        wanted = vocab.ids_of(profile.include_people) | (vocab.tag_ids(profile.query) if profile.query else set())
        if not wanted or not items:
            return items
        rank = {r: n for n, r in enumerate(SPECIFICITY)}
        own = self.store.facts([it.item_id for it in items])
        out = []
        for it in items:
            ties = [f for f in own.get(it.item_id, []) if ({f.head, f.tail} - {it.item_id}) & wanted]
            cited = {fid for r in it.reasons for fid in r.fact_ids}
            if not ties or cited & {f.id for f in ties}:
                out.append(it)
                continue
            fact = min(ties, key=lambda f: (rank.get(f.relation, len(rank)), f.id))  # a director before a writer
            text = relation_phrase(fact.relation, other_label(fact, it.item_id))
            text += f" {FROM_TEXT}." if fact.source != DATASET_SOURCE else "."
            reason = Reason(text=text, fact_ids=(fact.id,))
            known = {f.id for f in it.facts}
            facts = (fact, *it.facts) if fact.id not in known else it.facts
            out.append(it.model_copy(update={"reasons": (reason, *it.reasons), "facts": facts}))
        return out

    def _alike(self, item_id: str, vocab: Vocabulary, banned: set[str]) -> list[str]:
        """Items sharing at least half of ``item_id``'s genres (two at least), most shared first: "like X" still
        has candidates when X has few knowledge-graph neighbours (a film known only by its genres and tags)."""
        genres = sorted(
            e for e in self.store.item_entities([item_id]).get(item_id, set()) if vocab.kind.get(e) == "genre"
        )
        if not genres:
            return []
        need = max(2, (len(genres) + 1) // 2)
        counts: dict[str, int] = {}
        for g in genres:
            for i in vocab.entity_items.get(g, ()):
                counts[i] = counts.get(i, 0) + 1
        alike = [i for i, c in counts.items() if c >= need and i != item_id and i not in banned]
        return sorted(alike, key=lambda i: (-counts[i], i))[: self.config.max_seed_candidates]

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
