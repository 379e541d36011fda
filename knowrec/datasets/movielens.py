"""Reader for the MovieLens ``ml-latest-small`` layout, plus an optional DBpedia knowledge graph over its movies.

Files (each may be ``.csv.gz`` instead of ``.csv``): ``movies.csv`` and ``ratings.csv`` (required), ``tags.csv`` and
``links.csv`` (optional), and ``kg_triples.tsv.gz`` (optional DBpedia triples keyed by MovieLens movie id).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from knowrec.datasets.base import CsvTable, Dataset, Origin, read_text, user_sort_key, validation_error
from knowrec.datasets.generic import parse_rating, parse_timestamp
from knowrec.errors import InvalidInput
from knowrec.types import Fact, Interaction, Item

__all__ = [
    "KG_FILENAME",
    "MAX_TAGS_IN_TEXT",
    "dbpedia_entity_id",
    "dbpedia_is_the_film",
    "load_movielens",
    "parse_year",
]

logger = logging.getLogger(__name__)

KG_FILENAME = "kg_triples.tsv.gz"
"""The DBpedia triples file looked for in the MovieLens folder when no ``kg_path`` is given."""

MAX_TAGS_IN_TEXT = 8
"""How many of a movie's most frequent tags go into its ``text``."""

_NO_GENRES = "(no genres listed)"
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")
_DBR_PREFIX = "http://dbpedia.org/resource/"
_KG_HEADER = "head_ml1m_movie_id"
_KG_COLUMNS = 6


def parse_year(title: str) -> str | None:
    """The four-digit year in parentheses at the end of a MovieLens title, if any.

    Example:
        >>> parse_year("Toy Story (1995)"), parse_year("Babylon 5")
        ('1995', None)
    """
    match = _YEAR_RE.search(title)
    return match.group(1) if match else None


def dbpedia_entity_id(uri: str) -> str | None:
    """``dbr:<name>`` for a DBpedia resource URI (everything after ``/resource/``, slashes kept); ``None`` otherwise.

    Example:
        >>> dbpedia_entity_id("http://dbpedia.org/resource/AC/DC")
        'dbr:AC/DC'
        >>> dbpedia_entity_id("http://www.imdb.com/name/nm0390435") is None
        True
    """
    uri = uri.strip()
    if uri.startswith(_DBR_PREFIX) and len(uri) > len(_DBR_PREFIX):
        return "dbr:" + uri[len(_DBR_PREFIX) :]
    return None


# DBpedia's own year in a film's name: "Top Gun (1955 film)", "Faust (1994 Czech film)"
_FILM_YEAR = re.compile(r"\((\d{4})(?: [^()]*)? film\)\s*$")
_TRAILING_PARENS = re.compile(r"\s*\([^()]*\)\s*$")
_ARTICLE_AFTER = re.compile(
    r"^(.*), (the|a|an|les|la|le|l'|il|el|los|las|das|die|der|den|det|de|het|un|une|lo|i|gli|o)$", re.I
)
_NUMERALS = {"ii": "2", "two": "2", "iii": "3", "three": "3", "iv": "4", "four": "4", "v": "5", "five": "5"}


def _film_name(text: str) -> str:
    """A film name compared loosely: lower case, "&" as "and", punctuation gone, no leading article, numerals as
    digits ("Pet Sematary II" = "Pet Sematary Two")."""
    t = text.lower().replace("&", " and ")
    t = re.sub(r"[^\w ]+", " ", t)
    words = [_NUMERALS.get(w, w) for w in t.split()]
    if words and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


def _movie_names(title: str) -> list[str]:
    """The names a MovieLens title gives a film: the title (its moved article put back), each alternate title in
    brackets ("Fireworks (Hana-bi)", "(a.k.a. The Legend of the Pianist on the Ocean)") and each part of a title
    with a colon or a dash ("Star Wars: Episode V - The Empire Strikes Back")."""
    t = _YEAR_RE.sub("", title).strip()
    names = [re.sub(r"^a\.k\.a\.?\s*", "", alt, flags=re.I) for alt in re.findall(r"\(([^()]*)\)", t)]
    names.insert(0, re.sub(r"\s*\([^()]*\)", "", t).strip())
    out: list[str] = []
    for name in names:
        m = _ARTICLE_AFTER.match(name)
        if m:
            name = f"{m.group(2)} {m.group(1)}"
        out.append(name)
        out += [part for part in re.split(r":\s+|\s+-\s+", name) if part != name]
    return [n for n in dict.fromkeys(_film_name(n) for n in out) if n]


def dbpedia_is_the_film(title: str, uri: str, label: str) -> bool:
    """Whether a DBpedia film (its resource URI and label) is the MovieLens film ``title``, not another film of a
    similar name: the DBpedia triples bundled with the demo (linked by movie id) tie 159 of its 2,574 films with
    triples to another film — "Top Gun (1986)" to the 1955 western, "Terminator, The (1984)" to Terminator
    Salvation, "Lion King, The (1994)" to Leo the Lion — whose director and cast then became the film's facts and
    reasons.

    Another film when DBpedia's name carries a year more than a year off the title's, or when no name of the title
    (:func:`_movie_names`) is DBpedia's label, its first words (a long title's short name: "Dr. Strangelove") or its
    last words (after a presenter: "Tales from the Crypt Presents: Demon Knight"), or nearly it (a letter or two).

    Example:
        >>> dbpedia_is_the_film("Top Gun (1986)", "http://dbpedia.org/resource/Top_Gun_(1955_film)", "Top Gun")
        False
        >>> dbpedia_is_the_film("Abyss, The (1989)", "http://dbpedia.org/resource/Ghosts_of_the_Abyss",
        ...                     "Ghosts of the Abyss")
        False
        >>> dbpedia_is_the_film("Star Wars: Episode V - The Empire Strikes Back (1980)",
        ...                     "http://dbpedia.org/resource/The_Empire_Strikes_Back", "The Empire Strikes Back")
        True
    """
    year = parse_year(title)
    name = uri.rsplit("/", 1)[-1].replace("_", " ")
    m = _FILM_YEAR.search(name) or _FILM_YEAR.search(label)
    if m and year and abs(int(m.group(1)) - int(year)) > 1:
        return False
    if m and year:
        return True  # DBpedia's name has the title's year: "Faust (1994 film)" for "Lesson Faust (1994)"
    wanted = _film_name(_TRAILING_PARENS.sub("", label) or label)
    if not wanted:
        return False
    # a numbered film's subtitle: "Children of the Corn III: Urban Harvest" is "Children of the Corn III" (other
    # subtitles name sequels: "Tron: Legacy", "The Dirty Dozen: Next Mission")
    head = _film_name(re.split(r":\s+", _TRAILING_PARENS.sub("", label) or label)[0])
    for have in _movie_names(title):
        if have == wanted or have.startswith(wanted + " "):
            return True
        if have == head and have != wanted and have.split()[-1].isdigit():
            return True
        if have.endswith(" " + wanted) and len(wanted.split()) >= 2:
            return True
        if difflib.SequenceMatcher(None, have, wanted).ratio() >= 0.85:
            return True
    return False


def _locate(directory: Path, stem: str, required: bool) -> Path | None:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (directory / name).is_file():
            return directory / name
    if required:
        raise InvalidInput(f"missing {stem}.csv (or {stem}.csv.gz)", path=directory / f"{stem}.csv")
    return None


def _movie_id(value: str, path: Path, line: int, field: str = "movieId") -> str:
    movie_id = value.strip()
    if not movie_id:
        raise InvalidInput("empty movie id", path=path, line=line, field=field)
    return movie_id


class _Movie:
    __slots__ = ("genres", "line", "movie_id", "title")

    def __init__(self, movie_id: str, title: str, genres: list[str], line: int) -> None:
        self.movie_id = movie_id
        self.title = title
        self.genres = genres
        self.line = line


def _read_movies(path: Path) -> dict[str, _Movie]:
    table = CsvTable(
        path, read_text(path), required=("movieId", "title", "genres"), header_only_is_empty=True, what="movies"
    )
    i_id, i_title, i_genres = table.index["movieId"], table.index["title"], table.index["genres"]
    movies: dict[str, _Movie] = {}
    for line, row in table.rows():
        movie_id = _movie_id(row[i_id], path, line)
        if movie_id in movies:
            raise InvalidInput(
                f"duplicate movieId {movie_id!r} (first defined on line {movies[movie_id].line})",
                path=path,
                line=line,
                field="movieId",
            )
        title = row[i_title].strip()
        if not title:
            raise InvalidInput("empty title", path=path, line=line, field="title")
        genres = [g.strip() for g in row[i_genres].split("|") if g.strip() and g.strip() != _NO_GENRES]
        movies[movie_id] = _Movie(movie_id, title, genres, line)
    return movies


def _read_links(path: Path, movies: dict[str, _Movie]) -> dict[str, dict[str, str]]:
    table = CsvTable(path, _optional_text(path, "movieId,imdbId,tmdbId"), required=("movieId",))
    links: dict[str, dict[str, str]] = {}
    for line, row in table.rows():
        movie_id = _movie_id(table.get(row, "movieId"), path, line)
        if movie_id not in movies:
            continue
        values = {key: table.get(row, key).strip() for key in ("imdbId", "tmdbId")}
        links[movie_id] = {key: value for key, value in values.items() if value}
    return links


class _Tags:
    """A movie's tags: counts by normalised form, the first-seen spelling and line of each."""

    __slots__ = ("counts", "first")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, tuple[str, int]] = {}

    def add(self, tag: str, line: int) -> None:
        key = tag.lower()
        self.counts[key] += 1
        self.first.setdefault(key, (tag, line))

    def top(self, n: int) -> list[str]:
        order = {key: position for position, key in enumerate(self.first)}
        ranked = sorted(self.counts, key=lambda key: (-self.counts[key], order[key]))
        return [self.first[key][0] for key in ranked[:n]]


def _read_tags(path: Path, movies: dict[str, _Movie]) -> dict[str, _Tags]:
    table = CsvTable(path, _optional_text(path, "userId,movieId,tag,timestamp"), required=("movieId", "tag"))
    i_movie, i_tag = table.index["movieId"], table.index["tag"]
    tags: dict[str, _Tags] = {}
    skipped = 0
    for line, row in table.rows():
        movie_id = _movie_id(row[i_movie], path, line)
        tag = " ".join(row[i_tag].split())
        if movie_id not in movies:
            skipped += 1
            continue
        if tag:
            tags.setdefault(movie_id, _Tags()).add(tag, line)
    if skipped:
        logger.debug("%s: %d tags of movies not in movies.csv skipped", path, skipped)
    return tags


def _read_ratings(path: Path, max_users: int | None) -> tuple[list[Interaction], list[Origin]]:
    table = CsvTable(path, read_text(path), required=("userId", "movieId", "rating", "timestamp"))
    i_user, i_movie = table.index["userId"], table.index["movieId"]
    i_rating, i_ts = table.index["rating"], table.index["timestamp"]
    where = str(path)
    interactions: list[Interaction] = []
    origins: list[Origin] = []
    for line, row in table.rows():
        user_id = row[i_user].strip()
        if not user_id:
            raise InvalidInput("empty user id", path=path, line=line, field="userId")
        movie_id = _movie_id(row[i_movie], path, line)
        rating = parse_rating(row[i_rating], path, line)
        timestamp = parse_timestamp(row[i_ts], path, line)
        interactions.append(Interaction(user_id=user_id, item_id=movie_id, rating=rating, timestamp=timestamp))
        origins.append((where, line))
    if max_users is not None:
        if max_users < 0:
            raise InvalidInput(f"max_users must be >= 0 (got {max_users})", field="max_users")
        users = sorted({i.user_id for i in interactions}, key=user_sort_key)[:max_users]
        keep = set(users)
        pairs = [(i, o) for i, o in zip(interactions, origins, strict=True) if i.user_id in keep]
        interactions = [i for i, _ in pairs]
        origins = [o for _, o in pairs]
    return interactions, origins


def _read_kg(path: Path, movies: dict[str, _Movie], check_films: bool = True) -> tuple[list[Fact], list[Origin]]:
    text = read_text(path)
    where = str(path)
    facts: list[Fact] = []
    origins: list[Origin] = []
    outside = not_dbpedia = 0
    judged: dict[str, bool] = {}  # movie id -> its DBpedia film is that film
    other_film: dict[str, tuple[str, int]] = {}  # movie id -> (DBpedia label, rows left out)
    for line, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip() or (line == 1 and raw.startswith(_KG_HEADER)):
            continue
        fields = raw.split("\t")
        if len(fields) != _KG_COLUMNS:
            raise InvalidInput(
                f"expected {_KG_COLUMNS} tab-separated fields "
                "(head_ml1m_movie_id, head_uri, relation, tail_uri, head_label, tail_label), "
                f"got {len(fields)}",
                path=path,
                line=line,
            )
        movie_id = _movie_id(fields[0], path, line, field="head_ml1m_movie_id")
        movie = movies.get(movie_id)
        if movie is None:
            outside += 1
            continue
        if check_films:
            if movie_id not in judged:
                judged[movie_id] = dbpedia_is_the_film(movie.title, fields[1], fields[4])
            if not judged[movie_id]:
                label, rows = other_film.get(movie_id, (fields[4].strip() or fields[1], 0))
                other_film[movie_id] = (label, rows + 1)
                continue
        tail = dbpedia_entity_id(fields[3])
        if tail is None:
            not_dbpedia += 1
            continue
        relation = fields[2].strip().removeprefix("dbo:")
        tail_label = fields[5].strip() or tail[len("dbr:") :].replace("_", " ")
        try:
            fact = Fact(head=movie_id, relation=relation, tail=tail, head_label=movie.title, tail_label=tail_label)
        except ValidationError as exc:
            raise validation_error(exc, path, line) from None
        facts.append(fact)
        origins.append((where, line))
    logger.debug(
        "%s: %d facts kept, %d rows of movies not in movies.csv, %d rows whose tail is not a DBpedia resource",
        path,
        len(facts),
        outside,
        not_dbpedia,
    )
    if other_film:
        examples = "; ".join(f"{movies[m].title} -> {label}" for m, (label, _) in list(other_film.items())[:3])
        logger.info(
            "%s: the triples of %d movies (%d rows) left out: DBpedia ties them to another film (e.g. %s)",
            path,
            len(other_film),
            sum(rows for _, rows in other_film.values()),
            examples,
        )
    return facts, origins


def _fact(movie: _Movie, relation: str, tail: str, tail_label: str) -> Fact:
    return Fact(head=movie.movie_id, relation=relation, tail=tail, head_label=movie.title, tail_label=tail_label)


def _optional_text(path: Path, header: str) -> str:
    text = read_text(path, allow_empty=True)
    return text if text.strip() else header + "\n"


def _item_text(movie: _Movie, tags: list[str]) -> str:
    parts = [movie.title.rstrip(".")]
    if movie.genres:
        parts.append("Genres: " + ", ".join(movie.genres))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    return ". ".join(parts) + "."


def load_movielens(
    directory: Path | str,
    kg_path: Path | str | None = None,
    max_users: int | None = None,
    check_kg_films: bool = True,
) -> Dataset:
    """Read a MovieLens ``ml-latest-small`` folder (and DBpedia triples) as a :class:`Dataset`.

    Items: id = ``movieId``, title as given (``"Toy Story (1995)"``), attributes ``genres`` (``"A|B"``), ``year``,
    ``imdbId``, ``tmdbId``, and a ``text`` such as ``"Toy Story (1995). Genres: Adventure, Animation. Tags: pixar."``
    (at most :data:`MAX_TAGS_IN_TEXT` tags, most frequent first). Facts: ``genre`` (``genre:Comedy``), ``year``
    (``year:1995``), ``tag`` (``tag:<lowercased tag>``, once per movie), and the DBpedia triples of movies in
    ``movies.csv`` (relation without ``dbo:``, tail ``dbr:<resource name>``). Ratings become interactions. Tags of
    every user are used for item text and facts, also when ``max_users`` drops that user's ratings.

    Args:
        directory: Folder with ``movies.csv`` and ``ratings.csv`` (optionally ``tags.csv``, ``links.csv``; each may be
            ``.csv.gz``).
        kg_path: DBpedia triples TSV (``.gz`` allowed). ``None``: use ``kg_triples.tsv.gz`` in ``directory`` if it
            exists, else no DBpedia facts.
        max_users: Keep only the ratings of this many users, those with the smallest numeric ids. ``None``: all.
        check_kg_films: Leave out the DBpedia triples of a movie whose DBpedia film is another film
            (:func:`dbpedia_is_the_film`: "Top Gun (1986)" tied to the 1955 film of that name).

    Raises:
        InvalidInput: A file is missing or malformed (the message names file, line and field).

    Example:
        >>> from knowrec.datasets import demo_path
        >>> ds = load_movielens(demo_path(), max_users=5)
        >>> ds.items[0].title, ds.items[0].attributes["year"]
        ('Toy Story (1995)', '1995')
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInput("MovieLens folder not found", path=directory)
    movies_path = _locate(directory, "movies", required=True)
    ratings_path = _locate(directory, "ratings", required=True)
    tags_path = _locate(directory, "tags", required=False)
    links_path = _locate(directory, "links", required=False)
    assert movies_path is not None and ratings_path is not None

    movies = _read_movies(movies_path)
    links = _read_links(links_path, movies) if links_path else {}
    tags = _read_tags(tags_path, movies) if tags_path else {}
    interactions, interaction_origins = _read_ratings(ratings_path, max_users)

    movies_where = str(movies_path)
    tags_where = str(tags_path) if tags_path else ""
    items: list[Item] = []
    facts: list[Fact] = []
    fact_origins: list[Origin] = []
    for movie in movies.values():
        year = parse_year(movie.title)
        attributes: dict[str, str] = {}
        if movie.genres:
            attributes["genres"] = "|".join(movie.genres)
        if year:
            attributes["year"] = year
        attributes.update(links.get(movie.movie_id, {}))
        movie_tags = tags.get(movie.movie_id)
        top = movie_tags.top(MAX_TAGS_IN_TEXT) if movie_tags else []
        items.append(Item(id=movie.movie_id, title=movie.title, text=_item_text(movie, top), attributes=attributes))
        for genre in movie.genres:
            facts.append(_fact(movie, "genre", f"genre:{genre}", genre))
            fact_origins.append((movies_where, movie.line))
        if year:
            facts.append(_fact(movie, "year", f"year:{year}", year))
            fact_origins.append((movies_where, movie.line))
        if movie_tags:
            for key, (spelling, line) in movie_tags.first.items():
                facts.append(_fact(movie, "tag", f"tag:{key}", spelling))
                fact_origins.append((tags_where, line))

    if kg_path is None:
        candidate = directory / KG_FILENAME
        kg_file: Path | None = candidate if candidate.is_file() else None
    else:
        kg_file = Path(kg_path)
    if kg_file is not None:
        kg_facts, kg_origins = _read_kg(kg_file, movies, check_kg_films)
        seen = {fact.id for fact in facts}
        for fact, origin in zip(kg_facts, kg_origins, strict=True):
            if fact.id not in seen:
                seen.add(fact.id)
                facts.append(fact)
                fact_origins.append(origin)

    ds = Dataset(
        name=directory.resolve().name,
        items=items,
        facts=facts,
        interactions=interactions,
        interaction_origins=interaction_origins,
        fact_origins=fact_origins,
    )
    logger.info("read MovieLens dataset %s: %s", ds.name, ds.summary())
    return ds
