"""Synthetic film descriptions written from stored DBpedia facts, to measure an LLM fact extractor where truth is known.

Protocol. A seeded sample of demo films (MovieLens + DBpedia) with at least 2 usable DBpedia facts each gets a short
English description (2-6 sentences) built from a random subset of its facts (at most 3 cast members, 2 of any
other relation), phrased with several templates per relation, in random sentence order, sometimes with genres,
a title sentence or filler sentences that state no fact. Each JSONL record holds:

* ``facts``: exactly the (relation, tail, tail_label) facts stated in the text: the ground truth. Each
  ``tail_label`` occurs verbatim in ``text`` so that evidence spans exist. Facts whose label is empty, id-like or
  a disambiguated page name ("Kevin McCarthy (actor)") are never used: no prose would spell them that way.
* ``distractors``: person names from other films' facts, mentioned in a role outside the schema ("The film is
  dedicated to Y.", "Y turned down a role in the film."). They are no fact of this film; an extractor that returns
  one under any relation made a false positive.
* ``genres``: the MovieLens genres named in the text (not part of the DBpedia truth).

Usage:
    python bench/make_kg_text.py --out docs/benchmarks/kg-extract/synthetic.jsonl --n 200 --seed 0
    python bench/make_kg_text.py --n 50 --self-check    # asserts the invariants, writes nothing
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from knowrec.datasets import demo_path
from knowrec.datasets.movielens import load_movielens

NOT_DBPEDIA = {"genre", "year", "tag"}
PEOPLE = {"director", "starring", "writer", "producer", "musicComposer", "cinematography", "editing", "narrator"}
CAP = {"starring": 3}  # at most this many facts of a relation per text; 2 otherwise
# {x}: the joined labels; {s}: verb "s" when one name; {pl}: noun "s" when several.
TEMPLATES: dict[str, list[str]] = {
    "director": ["The film was directed by {x}.", "{x} directed the film.", "It is a film by {x}.",
                 "Direction is credited to {x}.", "{x}'s direction keeps the story moving."],
    "starring": ["It stars {x}.", "{x} lead{s} the cast.", "The cast includes {x}.",
                 "With {x} in the main role{pl}, the story holds together.", "{x} appear{s} in the leading role{pl}."],
    "writer": ["It was written by {x}.", "The film was made from a screenplay by {x}.", "{x} wrote the script.",
               "Writing credits go to {x}."],
    "producer": ["It was produced by {x}.", "{x} produced the film.", "{x} served as producer{pl}.",
                 "Production was overseen by {x}."],
    "musicComposer": ["The music is by {x}.", "The score was composed by {x}.", "{x} wrote the score.",
                      "It features an original score by {x}."],
    "cinematography": ["It was shot by {x}.", "Cinematography is by {x}.", "{x} handled the cinematography.",
                       "{x} served as director{pl} of photography."],
    "editing": ["It was edited by {x}.", "{x} edited the film.", "Editing was done by {x}.",
                "The editing by {x} keeps the pace tight."],
    "distributor": ["It was released by {x}.", "{x} distributed the film.", "Distribution was handled by {x}.",
                    "The film was distributed by {x}."],
    "basedOn": ["It is based on {x}.", "The film was adapted from {x}.", "The story is an adaptation of {x}.",
                "It draws its story from {x}."],
    "narrator": ["It is narrated by {x}.", "{x} provide{s} the narration.", "Narration is by {x}."],
}  # fmt: skip
COMBINED = ["Directed by {d}, it stars {a}.", "{d} directed {a} in this film."]  # director + starring in one
GENRE = ["It falls under {g}.", "Genre-wise it is {g}.", "It is usually filed under {g}."]
TITLE = ["{t} came out in {y}.", "{t} is a {y} film.", "{t} was released in {y}."]
FILLER = ["It was well received.", "The film found a wide audience.", "Critics were divided on release.",
          "It has since gained a cult following.", "The production ran over schedule."]  # fmt: skip
DISTRACTOR = ["The film is dedicated to {y}.", "{y} turned down a role in the film.", "Critic {y} praised it.",
              "Its premiere was attended by {y}.", "{y} has cited it as an influence."]  # fmt: skip
_BAD_LABEL = re.compile(r"^$|^(dbr:|https?:)|[_()]|^\d+$")


def usable(label: str) -> bool:
    """Whether a label reads as a plain name in prose (not empty, an id or a disambiguated page name)."""
    return not _BAD_LABEL.search(label.strip()) and label == label.strip()


def join(names: list[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def display_title(title: str) -> tuple[str, str]:
    """``("The American President", "1995")`` for ``"American President, The (1995)"``."""
    match = re.search(r"\s*\((\d{4})\)\s*$", title)
    year = match.group(1) if match else ""
    name = re.sub(r"\s*\([^()]*\)$", "", title[: match.start()] if match else title)  # drop an alternative title
    article = re.search(r", (The|A|An)$", name)
    return (f"{article.group(1)} {name[: article.start()]}" if article else name), year


def phrase(rng: random.Random, relation: str, names: list[str]) -> str:
    one = len(names) == 1
    return rng.choice(TEMPLATES[relation]).format(x=join(names), s="s" if one else "", pl="" if one else "s")


def describe(
    rng: random.Random, title: str, by_rel: dict[str, list[tuple[str, str]]], genres: list[str], pool: list[str]
) -> dict[str, Any]:
    """One record: a text built from a random subset of ``by_rel`` (relation -> [(tail, label)]) and its truth."""
    relations = sorted(by_rel)
    k = rng.randint(min(2, len(relations)), min(4, len(relations)))
    chosen = {
        r: rng.sample(by_rel[r], rng.randint(1, min(CAP.get(r, 2), len(by_rel[r])))) for r in rng.sample(relations, k)
    }
    todo = dict(chosen)
    sentences: list[str] = []
    if "director" in todo and "starring" in todo and rng.random() < 0.3:
        d, a = (join([label for _, label in todo.pop(r)]) for r in ("director", "starring"))
        sentences.append(rng.choice(COMBINED).format(d=d, a=a))
    sentences += [phrase(rng, r, [label for _, label in v]) for r, v in todo.items()]
    shown_genres = sorted(rng.sample(genres, min(len(genres), 3))) if genres and rng.random() < 0.5 else []
    if shown_genres and len(sentences) < 6:
        sentences.append(rng.choice(GENRE).format(g=join(shown_genres)))
    truth_labels = {label for v in by_rel.values() for _, label in v}
    distractors: list[str] = []
    if rng.random() < 0.35 and len(sentences) < 6:
        name = rng.choice(pool)
        if all(name not in label and label not in name for label in truth_labels):
            distractors.append(name)
            sentences.append(rng.choice(DISTRACTOR).format(y=name))
    while len(sentences) < 6 and (len(sentences) < 2 or rng.random() < 0.25):
        sentences.append(rng.choice([f for f in FILLER if f not in sentences]))
    rng.shuffle(sentences)
    name, year = display_title(title)
    if year and len(sentences) < 6 and rng.random() < 0.5:
        sentences.insert(0, rng.choice(TITLE).format(t=name, y=year))
    return {"text": " ".join(sentences), "facts": chosen, "distractors": distractors, "genres": shown_genres}


def generate(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records (fewer if fewer films qualify), the same for the same ``seed``."""
    ds = load_movielens(demo_path())
    titles = {item.id: item.title for item in ds.items}
    by_film: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    genres: dict[str, list[str]] = defaultdict(list)
    pool: set[str] = set()
    for f in ds.facts:
        if f.relation == "genre":
            genres[f.head].append(f.tail_label)
        elif f.relation not in NOT_DBPEDIA and f.relation in TEMPLATES and usable(f.tail_label):
            if (f.tail, f.tail_label) not in by_film[f.head][f.relation]:
                by_film[f.head][f.relation].append((f.tail, f.tail_label))
            if f.relation in PEOPLE:
                pool.add(f.tail_label)
    eligible = sorted((h for h, rels in by_film.items() if sum(map(len, rels.values())) >= 2), key=_id_key)
    rng = random.Random(seed)
    names = sorted(pool)
    records = []
    for item_id in sorted(rng.sample(eligible, min(n, len(eligible))), key=_id_key):
        rec = describe(rng, titles[item_id], by_film[item_id], genres[item_id], names)
        facts = [{"relation": r, "tail": t, "tail_label": lab} for r, v in rec.pop("facts").items() for t, lab in v]
        records.append({"item_id": item_id, "title": titles[item_id], **rec, "facts": facts})
    return [{k: r[k] for k in ("item_id", "title", "text", "facts", "distractors", "genres")} for r in records]


def _id_key(item_id: str) -> tuple[int, str]:
    return (int(item_id), "") if item_id.isdigit() else (1 << 62, item_id)


def dumps(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def summary(records: list[dict[str, Any]]) -> str:
    per_rel = Counter(f["relation"] for r in records for f in r["facts"])
    n_facts, n_dis = sum(per_rel.values()), sum(len(r["distractors"]) for r in records)
    lines = [f"films: {len(records)}  facts: {n_facts}  distractors: {n_dis}"]
    lines += [f"  {rel:<15} {count}" for rel, count in per_rel.most_common()]
    return "\n".join(lines)


def self_check(records: list[dict[str, Any]], n: int, seed: int) -> None:
    """Assert the invariants a measurement relies on."""
    for r in records:
        labels = {f["tail_label"] for f in r["facts"]}
        assert r["facts"], r["item_id"]
        assert all(label in r["text"] for label in labels), r
        assert all(d in r["text"] and d not in labels for d in r["distractors"]), r
        assert all(g in r["text"] for g in r["genres"]), r
    assert dumps(generate(n, seed)) == dumps(records), "same seed gave different output"
    print(f"self-check passed on {len(records)} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/kg-extract/synthetic.jsonl"))
    parser.add_argument("--n", type=int, default=200, help="number of films")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--self-check", action="store_true", help="assert the invariants; write nothing")
    args = parser.parse_args()
    records = generate(args.n, args.seed)
    print(summary(records))
    if args.self_check:
        self_check(records, args.n, args.seed)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(records), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
