"""Simulated users for protocol P4 (``BENCHMARKS.md``): a scripted conversation towards a hidden target item.

Each test user gets a :class:`SimulatedUser` whose target is the held-out item. Its script is fixed by the seed and
the user, not by what a system answers, so every system hears the same dialogue until it shows the target (the
conversation then ends). Turn by turn it reveals one attribute of the target — a genre, a person, the decade, a
film it liked that resembles the target, or a genre it does not want — or asks for more, in varied phrasings, and
never says the target's title (:func:`says_title`).

Example:
    >>> t = TargetProfile(item_id="7", title="Heat (1995)", genres=("Crime", "Action"), year=1995,
    ...                   people=(("director", "Michael Mann"),))
    >>> sim = SimulatedUser(t, liked=(("9", "Ronin (1998)", ("Action", "Crime")),), seed=1, user="u1",
    ...                     common_genres=("Comedy", "Drama", "Crime"))
    >>> turns = sim.script(5)
    >>> len(turns), all(not says_title(u.text, t.title) for u in turns)
    (5, True)
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Revealed", "SimulatedUser", "TargetProfile", "Utterance", "says_title", "spoken_name", "spoken_title"]

Intent = Literal["genre", "person", "era", "like", "exclude", "more"]

_PHRASES: dict[str, tuple[str, ...]] = {
    "genre": (
        "I'm in the mood for a {x} film.",
        "Any good {x} movies?",
        "A good {x}, please.",
        "Can you recommend a {x} movie?",
        "I feel like watching a {x}.",
    ),
    "director": (
        "Something directed by {x}.",
        "I'd like a film by {x}.",
        "Anything from the director {x}?",
    ),
    "starring": (
        "Something with {x} in it.",
        "A movie starring {x}, please.",
        "I'd like to see {x} in something.",
    ),
    "era": (
        "Something from the {x}s.",
        "It should be from the {x}s.",
        "I'd prefer a film from the {x}s.",
    ),
    "like": (
        "Something like {x}.",
        "I enjoyed {x}; more like that.",
        "Anything similar to {x}?",
    ),
    "exclude": (
        "No {x}, please.",
        "Nothing {x}.",
        "I don't want any {x}.",
    ),
    "more": (
        "More, please.",
        "Show me something else.",
        "Next.",
        "Any others?",
        "Other options?",
    ),
    "reject": ("None of these. ", "Not those. ", "Hmm, no. "),
}

_GENRE_WORDS = {
    "Sci-Fi": "science fiction",
    "Film-Noir": "film noir",
    "Children": "children's",
    "Musical": "musical",
    "Documentary": "documentary",
}


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _core(title: str) -> str:
    core = re.sub(r"\s*\(\d{4}\)\s*$", "", title)
    core = re.sub(r",\s*(the|a|an)$", "", core, flags=re.IGNORECASE)
    return _norm(core)


def spoken_title(title: str, with_year: bool) -> str:
    """A catalogue title as a person types it: the article in front, no alternative title, the year if asked.

    Example:
        >>> spoken_title("Flower of My Secret, The (La flor de mi secreto) (1995)", True)
        'The Flower of My Secret (1995)'
    """
    year = re.search(r"\((\d{4})\)\s*$", title)
    core = re.sub(r"\s*\(\d{4}\)\s*$", "", title)
    core = re.sub(r"\s*\([^)]*\)\s*$", "", core)  # "(La flor de mi secreto)", "(a.k.a. …)"
    m = re.match(r"^(.*),\s*(The|A|An)$", core, flags=re.IGNORECASE)
    if m:
        core = f"{m.group(2)} {m.group(1)}"
    return f"{core} ({year.group(1)})" if with_year and year else core


def spoken_name(name: str) -> str:
    """A knowledge-graph label as a name: "Kevin McCarthy (actor)" → "Kevin McCarthy"."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", name).strip() or name


def says_title(text: str, title: str) -> bool:
    """Whether ``text`` names ``title`` (its core: no year, no trailing article), as whole words.

    Example:
        >>> says_title("Something like Toy Story 2.", "Toy Story (1995)"), says_title("heath ledger", "Heat (1995)")
        (True, False)
    """
    core = _core(title)
    return bool(core) and re.search(rf"(?<![a-z0-9]){re.escape(core)}(?![a-z0-9])", _norm(text)) is not None


@dataclass(frozen=True)
class TargetProfile:
    """What the simulated user knows about the item it wants."""

    item_id: str
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    people: tuple[tuple[str, str], ...] = ()
    """``(relation, name)``: directors and actors (``director`` / ``starring``), most prominent first."""


@dataclass
class Revealed:
    """What the user has asked for so far, structured (what an oracle parse of the dialogue would give)."""

    genres: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    era: tuple[int, int] | None = None
    like: str | None = None
    """An item id the user said it liked ("something like X")."""
    exclude_genres: list[str] = field(default_factory=list)

    def copy(self) -> Revealed:
        return Revealed(list(self.genres), list(self.people), self.era, self.like, list(self.exclude_genres))


@dataclass(frozen=True)
class Utterance:
    turn: int
    text: str
    intent: Intent
    rejects: bool
    """The message also turns down the last answer ("None of these.")."""
    revealed: Revealed
    """Everything revealed up to and including this turn."""


class SimulatedUser:
    """A scripted user looking for ``target`` (see the module docstring).

    Args:
        target: the hidden item.
        liked: ``(item id, title, genres)`` of items the user liked before, most recent first (training history).
        seed, user: fix the script (phrasings, order of the attributes, when it asks for more).
        common_genres: genres of the catalogue, most frequent first (where an excluded genre is drawn from).
        more_rate: how often a turn after the first only asks for more.
    """

    def __init__(
        self,
        target: TargetProfile,
        liked: Sequence[tuple[str, str, Sequence[str]]],
        seed: int,
        user: str,
        common_genres: Sequence[str] = (),
        more_rate: float = 0.25,
    ) -> None:
        self.target = target
        self.rng = random.Random(f"p4:{seed}:{user}")
        self.more_rate = more_rate
        self._steps = self._plan(liked, common_genres)

    def _plan(
        self, liked: Sequence[tuple[str, str, Sequence[str]]], common: Sequence[str]
    ) -> list[tuple[Intent, str, str]]:
        """``(intent, value, phrase key)`` attributes in the order they are revealed."""
        t = self.target
        safe = [g for g in t.genres if not says_title(_GENRE_WORDS.get(g, g), t.title)]
        genres = self.rng.sample(safe, min(2, len(safe)))
        steps: list[tuple[Intent, str, str]] = [("genre", g, "genre") for g in genres]
        people = [(rel, name) for rel, name in t.people if not says_title(name, t.title)]
        if people:
            rel, name = people[0] if self.rng.random() < 0.6 else self.rng.choice(people)
            steps.append(("person", name, "director" if rel == "director" else "starring"))
        if t.year is not None:
            steps.append(("era", str(t.year // 10 * 10), "era"))
        # the liked film most like the target (shared genres), among the 20 most recent; never one naming the target
        best: tuple[int, int, str] | None = None
        for n, (item_id, title, its_genres) in enumerate(liked[:20]):
            if item_id == t.item_id or says_title(title, t.title):
                continue
            shared = len(set(its_genres) & set(t.genres))
            if shared and (best is None or (shared, -n) > (best[0], best[1])):
                best = (shared, -n, item_id)
        if best is not None:
            steps.append(("like", best[2], "like"))
        others = [g for g in common[:12] if g not in t.genres]
        if others:
            steps.append(("exclude", self.rng.choice(others), "exclude"))
        first = [s for s in steps if s[0] in ("genre", "like")][:1] or steps[:1]
        rest = [s for s in steps if s not in first]
        self.rng.shuffle(rest)
        return first + rest

    def script(self, turns: int, titles: dict[str, str] | None = None) -> list[Utterance]:
        """The user's ``turns`` messages, in order (``titles``: item id → title, for "like" steps)."""
        titles = titles or {}
        out: list[Utterance] = []
        revealed = Revealed()
        steps = list(self._steps)
        last_more = False
        for turn in range(1, turns + 1):
            ask_more = turn > 1 and (not steps or (not last_more and self.rng.random() < self.more_rate))
            if ask_more:
                text = self.rng.choice(_PHRASES["more"])
                out.append(Utterance(turn, text, "more", False, revealed.copy()))
                last_more = True
                continue
            intent, value, key = steps.pop(0)
            shown = {
                "like": spoken_title(titles.get(value, value), self.rng.random() < 0.5),
                "person": spoken_name(value),
                "genre": _GENRE_WORDS.get(value, value.lower()),
                "exclude": _GENRE_WORDS.get(value, value.lower()),
            }.get(intent, value)
            text = self.rng.choice(_PHRASES[key]).format(x=shown)
            if intent == "genre":  # "an action film", "an animation movie"
                text = re.sub(r"\ba (?=[aeiou])", "an ", text)
            rejects = turn > 1 and self.rng.random() < 0.5
            if rejects:
                text = self.rng.choice(_PHRASES["reject"]) + text
            if says_title(text, self.target.title):  # a name that contains the target's title: say less
                out.append(Utterance(turn, self.rng.choice(_PHRASES["more"]), "more", False, revealed.copy()))
                last_more = True
                continue
            if intent == "like":
                revealed.like = value
            elif intent == "genre":
                revealed.genres.append(value)
            elif intent == "exclude":
                revealed.exclude_genres.append(value)
            elif intent == "person":
                revealed.people.append(value)
            elif intent == "era":
                revealed.era = (int(value), int(value) + 9)
            out.append(Utterance(turn, text, intent, rejects, revealed.copy()))
            last_more = False
        return out
