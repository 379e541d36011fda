"""Text normalisation for matching what users type against stored labels and titles, and the store's vocabulary."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from knowrec.kg_store.base import GraphStore
from knowrec.types import Item

__all__ = ["Vocabulary"]


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
    "light": "comedy",  # "something light", "in the mood for something light"
    "lighthearted": "comedy",
    "light hearted": "comedy",
    "romantic": "romance",
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
    tags: dict[str, set[str]] = field(default_factory=dict)
    """Normalised tag label → tag entity ids ("time travel": ``tag:time travel``, ``tag:time-travel``)."""
    last_word: dict[str, set[str]] = field(default_factory=dict)
    """Normalised last word of a person label → labels (to resolve "Spielberg")."""
    max_words: int = 1
    _by_last: dict[str, str | None] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, store: GraphStore, batch: int = 500) -> Vocabulary:
        v = cls()
        tags = v.tags
        item_ids: set[str] = set()
        batches: list[list[Item]] = []
        for items in store.iter_items(batch):
            batches.append(items)
            for it in items:
                item_ids.add(it.id)
                y = (it.attributes or {}).get("year", "")
                if y[:4].isdigit():
                    v.years[it.id] = int(y[:4])
                elif m := _YEAR_SUFFIX.search(it.title):  # no year attribute: the title's "(1995)"
                    v.years[it.id] = int(m.group(0).strip(" ()"))
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
                    if kind == "tag":
                        tags.setdefault(_norm(label), set()).add(other)
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
        v._merge_same_names()
        # a tag that is a person's name ("christopher nolan") stands for that person too: MovieLens users tag the
        # films of directors whose DBpedia facts are missing
        for key, label in v.people.items():
            if key in tags:
                v.label_ids[label] |= tags[key]
        for key, label in v.people.items():
            words = key.split()
            if len(words) > 1 and len(words[-1]) >= 4:
                v.last_word.setdefault(words[-1], set()).add(label)
        return v

    def _merge_same_names(self) -> None:
        """One name for the labels that differ only by a qualifier or by case. "Andrew Davis (director)" (The
        Fugitive) and "Andrew Davis (filmmaker)" (Under Siege) are one person with two DBpedia entities: with no
        label lacking the qualifier, the bare name ("andrew davis") stands for all of them, under the label
        "Andrew Davis" (before, for whichever came first). Where a label without one exists ("John Williams" the
        composer beside "John Williams (actor)"), DBpedia gave the bare name to the best-known bearer, and the bare
        name stays that label, with the labels spelled the same but for case ("Jan De Bont", "Jan de Bont"). A
        qualified label typed in full names its own entity only."""
        by_bare: dict[str, list[str]] = {}
        for label in self.label_ids:
            if not any(self.kind.get(e) == "person" for e in self.label_ids[label]):
                continue
            bare = _norm(re.sub(r"\s*\(.*?\)", "", label))
            if len(bare) >= 3:
                by_bare.setdefault(bare, []).append(label)
        for bare, labels in by_bare.items():
            plain = sorted(lab for lab in labels if "(" not in lab)
            group = plain or labels
            if len(group) < 2:
                continue
            name = plain[0] if plain else re.sub(r"\s*\(.*?\)", "", sorted(labels)[0]).strip()
            ids = set().union(*(self.label_ids[lab] for lab in group))
            self.label_ids[name] = self.label_ids.get(name, set()) | ids
            self.people[bare] = name

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
        """A person label for free text (an exact label, or the one a last name names: see :meth:`by_last_name`)."""
        key = _norm(text)
        if key in self.people:
            return self.people[key]
        return self.by_last_name(key.split()[-1] if key else "")

    def by_last_name(self, word: str) -> str | None:
        """The person a normalised last name names ("spielberg" → "Steven Spielberg"): the only one, or the one with
        at least twice the items of the next (Anne Spielberg has one film here); ``None`` when it is ambiguous
        ("stone": Sharon and Oliver)."""
        hits = self.last_word.get(word, set())
        if len(hits) <= 1:
            return next(iter(hits), None)
        if word not in self._by_last:
            ranked = sorted(((len(self.items_of([h])), h) for h in hits), reverse=True)
            (n1, top), (n2, _) = ranked[0], ranked[1]
            self._by_last[word] = top if n1 >= 2 and n1 >= 2 * n2 else None
        return self._by_last[word]

    def tag_ids(self, phrase: str) -> set[str]:
        """The tags a wish names whole ("heist", "twist ending"; "zombie" finds "zombies"); empty when none."""
        key = _norm(phrase)
        for cand in (key, key + "s", key.removesuffix("s"), re.sub(r"ies$", "y", key)):
            if len(cand) >= 3 and cand in self.tags:
                return set(self.tags[cand])
        if len(key) >= 5 and " " not in key:  # "Miyazaki": the one two-word tag that ends so ("hayao miyazaki")
            names = [t for t in self.tags if len(t.split()) == 2 and t.split()[1] == key]
            if len(names) == 1:
                return set(self.tags[names[0]])
        return set()

    def tagged(self, phrase: str) -> set[str]:
        """The items carrying a tag that a wish names whole ("a heist movie" → the films tagged "heist")."""
        return {i for e in self.tag_ids(phrase) for i in self.entity_items.get(e, set())}

    def items_of(self, labels: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for label in labels:
            for eid in self.label_ids.get(label, ()):
                out |= self.entity_items.get(eid, set())
        return out

    def ids_of(self, labels: Iterable[str]) -> set[str]:
        return {eid for label in labels for eid in self.label_ids.get(label, ())}
