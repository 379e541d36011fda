"""Reading item text: sentences (the evidence units) and the names in them (the objects a small model may pick)."""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Sentence", "contains", "mentions", "normalise", "sentences"]

_SENTENCE_END = re.compile(r"(?<=[^\sA-Z.][.!?])\s+(?=\S)|(?<=[.!?][\"”’)])\s+(?=\S)")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|Prof|Mt)\.$")
_CONNECTORS = frozenset(
    ["de", "van", "von", "der", "den", "da", "du", "la", "le", "di", "del", "bin", "al", "dos", "das", "y"]
)
_STOP = frozenset(
    """a an the it its this that these those he she they his her their in on at of for with by from and or
    but as is was were be been to into after before while when where who whom which what also its film
    movie story book item genres genre tags tag directed starring written produced music score released
    distributed edited shot narrated based cast editing cinematography critic critics premiere although
    however later then there here one two""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Sentence:
    """A sentence of the text with its character offsets (``text[start:end] == sentence.text``)."""

    number: int
    start: int
    end: int
    text: str


def normalise(label: str) -> str:
    """The form labels are compared in: accents and case folded, a trailing ``(qualifier)`` and punctuation dropped.

    Example:
        >>> normalise("Michael Mann (director)"), normalise("  Ingeborga Dapkūnaitė ")
        ('michael mann', 'ingeborga dapkunaite')
    """
    text = unicodedata.normalize("NFKD", label)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"\s*\([^)]*\)\s*$", "", text)
    text = re.sub(r"[^\w]+", " ", text.replace("_", " "))
    return " ".join(text.split())


def contains(haystack: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``haystack``, ignoring case and runs of white space."""
    if not needle.strip():
        return False
    return " ".join(needle.split()).casefold() in " ".join(haystack.split()).casefold()


def sentences(text: str) -> list[Sentence]:
    """Split into sentences at ``.``/``!``/``?`` followed by space (not after an initial such as ``O.``)."""
    cuts = [0]
    for m in _SENTENCE_END.finditer(text):
        if not _ABBREVIATION.search(text[cuts[-1] : m.start()]):
            cuts.append(m.end())
    cuts.append(len(text))
    out: list[Sentence] = []
    for a, b in itertools.pairwise(cuts):
        piece = text[a:b].strip()
        if piece:
            s = text.index(piece, a)
            out.append(Sentence(len(out) + 1, s, s + len(piece), piece))
    return out


def _words(sentence: str) -> list[tuple[str, bool]]:
    """Words with whether a clause boundary (comma, colon, semicolon, sentence end) follows each."""
    out = []
    for raw in sentence.split():
        stop = bool(re.search(r"[,;:!?]$|(?<!\b[A-Z])\.$", raw))
        word = raw.strip(',;:!?"“”‘’()[]')
        if word.endswith(".") and not re.fullmatch(r"(?:[A-Z]\.)+", word):
            word = word[:-1]
        if word:
            out.append((word, stop))
    return out


def _capitalised(word: str) -> bool:
    return word[:1].isupper() or (word[:1].isdigit() and len(word) > 1 and word[1:2].isupper())


def mentions(text: str, exclude: tuple[str, ...] = (), limit: int = 40) -> list[str]:
    """Names a fact could point at, in order of appearance: runs of capitalised words ("Robert De Niro",
    "Warner Bros."), and the short items of comma-separated lists ("Tags: leonardo dicaprio, dreams").

    Example:
        >>> mentions("Heat (1995) is directed by Michael Mann. Al Pacino and Robert De Niro lead.", exclude=("Heat",))
        ['Michael Mann', 'Al Pacino', 'Robert De Niro']
        >>> mentions("Inception. Tags: leonardo dicaprio, christopher nolan, dreams.", exclude=("Inception",))
        ['leonardo dicaprio', 'christopher nolan', 'dreams']
    """
    found: list[str] = []
    banned = {normalise(x) for x in exclude}
    for sentence in sentences(text):
        words = _words(sentence.text)
        run: list[str] = []
        for k, (word, stop) in enumerate(words):
            nxt = k + 1
            while nxt < len(words) and words[nxt][0].lower() in _CONNECTORS:
                nxt += 1
            joins = bool(run) and word.lower() in _CONNECTORS and nxt < len(words) and _capitalised(words[nxt][0])
            if _capitalised(word) or joins:
                run.append(word)
            else:
                run = _flush(run, found)
            if stop:
                run = _flush(run, found)
        _flush(run, found)
        # items of a comma-separated list (after a colon when there is one): lower-case tags, names
        body = sentence.text.split(":", 1)[1] if ":" in sentence.text else sentence.text
        if "," in body or ";" in body:
            for part in (p.strip(' .;!?"“”') for p in re.split(r",|;|\band\b", body)):
                ws = part.split()
                listed = all(w.islower() for w in ws) or all(_capitalised(w) or w in _CONNECTORS for w in ws)
                if 0 < len(ws) <= 4 and listed and not all(w.lower() in _STOP for w in ws):
                    found.append(part)
    out: list[str] = []
    seen: set[str] = set()
    for name in found:
        key = normalise(name)
        if not key or key in seen or key in banned or all(w in _STOP for w in key.split()) or key.isdigit():
            continue
        seen.add(key)
        out.append(name)
    return out[:limit]


def _flush(run: list[str], found: list[str]) -> list[str]:
    while run and run[0].lower() in _STOP:
        run = run[1:]
    if run:
        found.append(" ".join(run))
    return []
