"""Tests of knowrec.datasets: generic readers, MovieLens reader, validation, subsample and the bundled demo."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from knowrec.datasets import (
    Dataset,
    demo_path,
    load_demo,
    load_generic,
    load_generic_files,
    load_movielens,
    subsample,
)
from knowrec.datasets.generic import read_facts, read_interactions, read_items
from knowrec.errors import InvalidInput
from knowrec.types import Fact, Interaction, Item

ITEMS_CSV = (
    "id,title,text,genre,year\n"
    '1,Toy Story,"A toy cowboy, jealous of a space ranger.",Animation,1995\n'
    "2,Heat,,Crime,\n"
    "3,Alien,Space horror.,Horror,1979\n"
)
ITEMS_JSONL = (
    '{"id": "1", "title": "Toy Story", "text": "Toys.", "year": 1995, "tags": ["pixar"], "studio": "Pixar"}\n'
    '{"id": 2, "title": "Heat", "attributes": {"genre": "Crime"}, "budget": null}\n'
)
INTERACTIONS_CSV = "user_id,item_id,rating,timestamp\nu1,1,4.5,964982703\nu1,2,3,964982703.0\nu2,3,,\n"
FACTS_TSV = (
    "head_id\trelation\ttail_id\thead_label\ttail_label\n"
    "1\tdirector\tdbr:John_Lasseter\tToy Story\tJohn Lasseter\n"
    "dbr:John_Lasseter\tworkedAt\tdbr:Pixar\n"
)


def write(path: Path, text: str | bytes) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def assert_error(exc: InvalidInput, path: Path, line: int | None = None, field: str | None = None) -> None:
    message = str(exc)
    assert str(path) in message, message
    assert exc.path == str(path)
    if line is not None:
        assert f"{path}:{line}:" in message, message
        assert exc.line == line
    if field is not None:
        assert f"field {field}" in message, message
        assert exc.field == field


# --------------------------------------------------------------------------------------------------------------------
# Generic format: happy paths


def test_generic_csv_happy_path(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", ITEMS_CSV)
    write(tmp_path / "interactions.csv", INTERACTIONS_CSV)
    write(tmp_path / "facts.tsv", FACTS_TSV)
    ds = load_generic(tmp_path)

    assert ds.name == tmp_path.name
    assert [i.id for i in ds.items] == ["1", "2", "3"]
    toy = ds.items[0]
    assert toy.title == "Toy Story"
    assert toy.text == "A toy cowboy, jealous of a space ranger."
    assert toy.attributes == {"genre": "Animation", "year": "1995"}
    assert ds.items[1].text == ""
    assert ds.items[1].attributes == {"genre": "Crime"}  # empty cells are left out

    assert ds.interactions == [
        Interaction(user_id="u1", item_id="1", rating=4.5, timestamp=964982703),
        Interaction(user_id="u1", item_id="2", rating=3.0, timestamp=964982703),
        Interaction(user_id="u2", item_id="3"),
    ]
    assert ds.interaction_origins == [(str(tmp_path / "interactions.csv"), n) for n in (2, 3, 4)]

    assert len(ds.facts) == 2
    assert ds.facts[0].tail_label == "John Lasseter"
    assert ds.facts[1].head == "dbr:John_Lasseter"  # entity–entity facts are allowed
    assert ds.fact_origins == [(str(tmp_path / "facts.tsv"), 2), (str(tmp_path / "facts.tsv"), 3)]

    ds.validate()
    batch = ds.to_batch()
    assert len(batch.items) == 3 and len(batch.facts) == 2 and len(batch.interactions) == 3


def test_generic_jsonl_and_gzip(tmp_path: Path) -> None:
    write(tmp_path / "items.jsonl.gz", ITEMS_JSONL)
    write(tmp_path / "interactions.csv.gz", "user_id,item_id\nu1,2\n")
    write(tmp_path / "facts.tsv.gz", "2\tgenre\tgenre:Crime\n")
    ds = load_generic(tmp_path)

    assert [i.id for i in ds.items] == ["1", "2"]
    assert ds.items[0].text == "Toys."
    assert ds.items[0].attributes == {"year": "1995", "tags": '["pixar"]', "studio": "Pixar"}
    assert ds.items[1].attributes == {"genre": "Crime"}
    assert ds.interactions == [Interaction(user_id="u1", item_id="2")]
    assert ds.facts == [Fact(head="2", relation="genre", tail="genre:Crime")]
    ds.validate()


def test_generic_bom_crlf_and_quoted_newline(tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", b'\xef\xbb\xbfid,title,text\r\n1,A,"two\r\nlines"\r\n\r\n2,B,x\r\n')
    rows = read_items(items)
    assert [(item.id, origin[1]) for item, origin in rows] == [("1", 2), ("2", 5)]
    assert rows[0][0].text == "two\r\nlines"
    facts = write(tmp_path / "facts.tsv", "1\tr\tt\r\n")
    assert read_facts(facts)[0][0].tail == "t"


def test_load_generic_files_explicit_paths(tmp_path: Path) -> None:
    items = write(tmp_path / "catalogue.csv", "id,title\n1,A\n")
    ratings = write(tmp_path / "ratings.csv", "user_id,item_id,rating\n7,1,5\n")
    ds = load_generic_files(items=items, interactions=ratings, name="mine")
    assert ds.name == "mine"
    assert ds.summary() == {"items": 1, "facts": 0, "interactions": 1, "users": 1}


def test_header_only_interactions_and_facts_are_fine(tmp_path: Path) -> None:
    assert read_interactions(write(tmp_path / "i.csv", "user_id,item_id\n")) == []
    assert read_facts(write(tmp_path / "f.tsv", "head_id\trelation\ttail_id\n")) == []


# --------------------------------------------------------------------------------------------------------------------
# Generic format: bad inputs


def test_malformed_csv_row_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "id,title\n1,A\n2,B,extra\n")
    with pytest.raises(InvalidInput) as info:
        read_items(path)
    assert_error(info.value, path, line=3)
    assert "expected 2 fields" in str(info.value)


def test_malformed_csv_unterminated_quote(tmp_path: Path) -> None:
    path = write(tmp_path / "interactions.csv", 'user_id,item_id\nu1,1\nu2,"2\nu3,3\n')
    with pytest.raises(InvalidInput) as info:
        read_interactions(path)
    assert_error(info.value, path, line=3)
    assert "unterminated" in str(info.value)


def test_bad_rating_number(tmp_path: Path) -> None:
    path = write(tmp_path / "interactions.csv", "user_id,item_id,rating\nu1,1,4\nu1,2,four\n")
    with pytest.raises(InvalidInput) as info:
        read_interactions(path)
    assert_error(info.value, path, line=3, field="rating")
    assert "'four'" in str(info.value)


def test_bad_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,1,yesterday\n")
    with pytest.raises(InvalidInput) as info:
        read_interactions(path)
    assert_error(info.value, path, line=2, field="timestamp")


def test_unknown_item_in_interactions(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "id,title\n1,A\n")
    interactions = write(tmp_path / "interactions.csv", "user_id,item_id\nu1,1\nu1,99\n")
    ds = load_generic(tmp_path)
    with pytest.raises(InvalidInput) as info:
        ds.validate()
    assert_error(info.value, interactions, line=3, field="item_id")
    assert "unknown item id '99' (not in the items file nor in the store)" in str(info.value)
    ds.validate(known_items={"99"})  # known to the store: fine


def test_duplicate_item_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "id,title\n1,A\n2,B\n1,C\n")
    with pytest.raises(InvalidInput) as info:
        read_items(path)
    assert_error(info.value, path, line=4, field="id")
    assert "first defined on line 2" in str(info.value)

    jsonl = write(tmp_path / "items.jsonl", '{"id": "1", "title": "A"}\n{"id": 1, "title": "B"}\n')
    with pytest.raises(InvalidInput) as info:
        read_items(jsonl)
    assert_error(info.value, jsonl, line=2, field="id")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("items.csv", ""),
        ("items.csv", "id,title,text\n"),
        ("items.csv.gz", "\n\n"),
        ("items.jsonl", "\n"),
        ("interactions.csv", ""),
        ("facts.tsv", "  \n"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path / name, content)
    reader = read_items if name.startswith("items") else read_interactions if "interactions" in name else read_facts
    with pytest.raises(InvalidInput) as info:
        reader(path)
    assert_error(info.value, path)
    assert "file is empty" in str(info.value)


@pytest.mark.parametrize("name", ["items.csv", "items.csv.gz", "items.jsonl"])
def test_non_utf8_bytes_on_line_3(tmp_path: Path, name: str) -> None:
    if name.endswith("jsonl"):
        data = b'{"id": "1", "title": "A"}\n{"id": "2", "title": "B"}\n{"id": "3", "title": "Caf\xe9"}\n'
    else:
        data = b"id,title\n1,A\n2,Caf\xe9\n3,C\n"
    path = write(tmp_path / name, data)
    with pytest.raises(InvalidInput) as info:
        read_items(path)
    assert_error(info.value, path, line=3)
    assert f"{path}:3:" in str(info.value)
    assert "UTF-8" in str(info.value)


def test_non_utf8_in_facts_and_interactions(tmp_path: Path) -> None:
    facts = write(tmp_path / "facts.tsv", b"1\tr\tt\n2\tr\tt\n3\tr\t\xff\n")
    with pytest.raises(InvalidInput) as info:
        read_facts(facts)
    assert_error(info.value, facts, line=3)
    inter = write(tmp_path / "interactions.csv", b"user_id,item_id\nu1,1\n\x80u2,2\n")
    with pytest.raises(InvalidInput) as info:
        read_interactions(inter)
    assert_error(info.value, inter, line=3)


@pytest.mark.parametrize(
    ("name", "content", "missing"),
    [
        ("items.csv", "id,name\n1,A\n", "title"),
        ("items.csv", "title\nA\n", "id"),
        ("interactions.csv", "user,item_id\nu1,1\n", "user_id"),
        ("items.jsonl", '{"id": "1"}\n', "title"),
    ],
)
def test_missing_column(tmp_path: Path, name: str, content: str, missing: str) -> None:
    path = write(tmp_path / name, content)
    reader = read_items if name.startswith("items") else read_interactions
    with pytest.raises(InvalidInput) as info:
        reader(path)
    assert_error(info.value, path, line=1, field=missing)


def test_empty_required_value(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "id,title\n1,A\n2,\n")
    with pytest.raises(InvalidInput) as info:
        read_items(path)
    assert_error(info.value, path, line=3, field="title")


def test_facts_wrong_column_count(tmp_path: Path) -> None:
    path = write(tmp_path / "facts.tsv", "1\tgenre\tgenre:Comedy\n1\tgenre\n")
    with pytest.raises(InvalidInput) as info:
        read_facts(path)
    assert_error(info.value, path, line=2)
    assert "got 2" in str(info.value)


def test_facts_empty_tail(tmp_path: Path) -> None:
    path = write(tmp_path / "facts.tsv", "1\tgenre\t \n")
    with pytest.raises(InvalidInput) as info:
        read_facts(path)
    assert_error(info.value, path, line=1, field="tail")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(InvalidInput) as info:
        read_items(path)
    assert_error(info.value, path)
    assert "file not found" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        load_generic_files(write(tmp_path / "items.csv", "id,title\n1,A\n"), interactions=tmp_path / "gone.csv")
    assert_error(info.value, tmp_path / "gone.csv")


def test_missing_items_file_in_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        load_generic(tmp_path)
    assert "no items file" in str(info.value)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(InvalidInput, match="not found"):
        load_generic(tmp_path / "missing")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "items.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidInput) as info:
        read_items(path)
    assert_error(info.value, path)


# --------------------------------------------------------------------------------------------------------------------
# Dataset helpers


def test_subsample_keeps_first_users_their_items_and_facts() -> None:
    items = [Item(id=str(n), title=f"T{n}") for n in range(1, 5)]
    interactions = [
        Interaction(user_id="10", item_id="1"),
        Interaction(user_id="2", item_id="2"),
        Interaction(user_id="9", item_id="3"),
        Interaction(user_id="2", item_id="3"),
    ]
    facts = [
        Fact(head="1", relation="genre", tail="genre:A"),
        Fact(head="3", relation="genre", tail="genre:A"),
        Fact(head="dbr:X", relation="r", tail="dbr:Y"),
    ]
    ds = Dataset(
        "d",
        items=items,
        facts=facts,
        interactions=interactions,
        interaction_origins=[("r.csv", n) for n in range(2, 6)],
        fact_origins=[("f.tsv", n) for n in range(1, 4)],
    )
    small = subsample(ds, 2)
    assert small.user_ids == ["2", "9"]
    assert [i.id for i in small.items] == ["2", "3"]
    assert small.interaction_origins == [("r.csv", 3), ("r.csv", 4), ("r.csv", 5)]
    assert small.facts == [facts[1]]
    assert small.fact_origins == [("f.tsv", 2)]
    small.validate()
    with pytest.raises(InvalidInput, match="n_users must be >= 0"):
        subsample(ds, -1)


# --------------------------------------------------------------------------------------------------------------------
# MovieLens


def make_movielens(root: Path) -> Path:
    ml = root / "ml"
    ml.mkdir()
    write(
        ml / "movies.csv",
        "movieId,title,genres\r\n"
        "1,Toy Story (1995),Adventure|Animation|Children\r\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\r\n'
        "3,Untitled Project,(no genres listed)\r\n",
    )
    write(
        ml / "ratings.csv.gz",
        "userId,movieId,rating,timestamp\r\n10,1,4.0,964982703\r\n2,2,3.5,964981247\r\n2,1,5.0,964982224\r\n10,3,1.0,1\r\n",
    )
    write(ml / "tags.csv", "userId,movieId,tag,timestamp\n2,1,Pixar,1445714994\n10,1,pixar ,1445714995\n2,1,fun,1\n")
    write(ml / "links.csv", "movieId,imdbId,tmdbId\n1,0114709,862\n2,0112346,\n")
    write(
        ml / "kg_triples.tsv.gz",
        "head_ml1m_movie_id\thead_uri\trelation\ttail_uri\thead_label\ttail_label\n"
        "1\thttp://dbpedia.org/resource/Toy_Story\tdbo:director\thttp://dbpedia.org/resource/John_Lasseter"
        "\tToy Story\tJohn Lasseter\n"
        "3682\thttp://dbpedia.org/resource/Magnum_Force\tdbo:basedOn\thttp://dbpedia.org/resource/Harry_Julian_Fink"
        "\tMagnum Force\tHarry Julian Fink\n",
    )
    return ml


def test_movielens_reader(tmp_path: Path) -> None:
    ml = make_movielens(tmp_path)
    ds = load_movielens(ml)

    assert [i.id for i in ds.items] == ["1", "2", "3"]
    toy, president, untitled = ds.items
    assert toy.title == "Toy Story (1995)"
    assert toy.attributes == {
        "genres": "Adventure|Animation|Children",
        "year": "1995",
        "imdbId": "0114709",
        "tmdbId": "862",
    }
    assert toy.text == "Toy Story (1995). Genres: Adventure, Animation, Children. Tags: Pixar, fun."
    assert president.title == "American President, The (1995)"
    assert president.attributes == {"genres": "Comedy|Drama|Romance", "year": "1995", "imdbId": "0112346"}
    assert untitled.attributes == {}
    assert untitled.text == "Untitled Project."

    triples = {(f.head, f.relation, f.tail, f.head_label, f.tail_label) for f in ds.facts}
    assert triples == {
        ("1", "genre", "genre:Adventure", "Toy Story (1995)", "Adventure"),
        ("1", "genre", "genre:Animation", "Toy Story (1995)", "Animation"),
        ("1", "genre", "genre:Children", "Toy Story (1995)", "Children"),
        ("1", "year", "year:1995", "Toy Story (1995)", "1995"),
        ("1", "tag", "tag:pixar", "Toy Story (1995)", "Pixar"),
        ("1", "tag", "tag:fun", "Toy Story (1995)", "fun"),
        ("2", "genre", "genre:Comedy", "American President, The (1995)", "Comedy"),
        ("2", "genre", "genre:Drama", "American President, The (1995)", "Drama"),
        ("2", "genre", "genre:Romance", "American President, The (1995)", "Romance"),
        ("2", "year", "year:1995", "American President, The (1995)", "1995"),
        ("1", "director", "dbr:John_Lasseter", "Toy Story (1995)", "John Lasseter"),
    }
    assert len(ds.facts) == len(triples)  # no duplicates (the tag "pixar " repeated by another user)
    kg_index = next(n for n, f in enumerate(ds.facts) if f.relation == "director")
    assert ds.fact_origins[kg_index] == (str(ml / "kg_triples.tsv.gz"), 2)

    assert ds.interactions[0] == Interaction(user_id="10", item_id="1", rating=4.0, timestamp=964982703)
    assert len(ds.interactions) == 4
    assert ds.interaction_origins[1] == (str(ml / "ratings.csv.gz"), 3)
    assert ds.user_ids == ["2", "10"]
    ds.validate()

    only_first = load_movielens(ml, max_users=1)
    assert only_first.user_ids == ["2"]
    assert len(only_first.interactions) == 2
    assert len(only_first.items) == 3
    with pytest.raises(InvalidInput, match="max_users must be >= 0"):
        load_movielens(ml, max_users=-1)


def test_movielens_explicit_kg_path_and_errors(tmp_path: Path) -> None:
    ml = make_movielens(tmp_path)
    kg = (ml / "kg_triples.tsv.gz").rename(tmp_path / "other.tsv.gz")
    assert not any(f.relation == "director" for f in load_movielens(ml).facts)
    assert any(f.relation == "director" for f in load_movielens(ml, kg_path=kg).facts)

    with pytest.raises(InvalidInput) as info:
        load_movielens(ml, kg_path=tmp_path / "absent.tsv.gz")
    assert_error(info.value, tmp_path / "absent.tsv.gz")

    write(ml / "ratings.csv.gz", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,x,2\n")
    with pytest.raises(InvalidInput) as info:
        load_movielens(ml)
    assert_error(info.value, ml / "ratings.csv.gz", line=3, field="rating")

    (ml / "movies.csv").unlink()
    with pytest.raises(InvalidInput, match=r"movies\.csv"):
        load_movielens(ml)


def test_movielens_bad_kg_row(tmp_path: Path) -> None:
    ml = make_movielens(tmp_path)
    kg = write(tmp_path / "kg.tsv", "head_ml1m_movie_id\thead_uri\trelation\ttail_uri\thead_label\ttail_label\n1\tx\n")
    with pytest.raises(InvalidInput) as info:
        load_movielens(ml, kg_path=kg)
    assert_error(info.value, kg, line=2)


@pytest.mark.parametrize(
    ("title", "uri_name", "label", "same"),
    [
        # the DBpedia film is another one: the same name and another year, or a name that merely contains the title
        ("Top Gun (1986)", "Top_Gun_(1955_film)", "Top Gun", False),
        ("Godfather, The (1972)", "Godfather_(1991_film)", "Godfather", False),
        ("Terminator, The (1984)", "Terminator_Salvation", "Terminator Salvation", False),
        ("Shining, The (1980)", "Shining_Through", "Shining Through", False),
        ("Lion King, The (1994)", "Leo_the_Lion:_King_of_the_Jungle", "Leo the Lion: King of the Jungle", False),
        ("Tron (1982)", "Tron:_Legacy", "Tron: Legacy", False),
        ("Game, The (1997)", "Death_Proof", "Death Proof", False),
        # the same film under the names DBpedia gives it
        ("Heat (1995)", "Heat_(1995_film)", "Heat", True),
        ("Matrix, The (1999)", "The_Matrix", "The Matrix", True),
        (
            "Star Wars: Episode V - The Empire Strikes Back (1980)",
            "The_Empire_Strikes_Back",
            "The Empire Strikes Back",
            True,
        ),
        ("Star Wars: Episode IV - A New Hope (1977)", "Star_Wars_(film)", "Star Wars", True),
        (
            "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)",
            "Dr._Strangelove",
            "Dr. Strangelove",
            True,
        ),
        ("Fireworks (Hana-bi) (1997)", "Hana-bi", "Hana-bi", True),
        ("Tales from the Crypt Presents: Demon Knight (1995)", "Demon_Knight", "Demon Knight", True),
        ("Lesson Faust (1994)", "Faust_(1994_film)", "Faust", True),
        ("Pet Sematary II (1992)", "Pet_Sematary_Two", "Pet Sematary Two", True),
        (
            "Children of the Corn III (1994)",
            "Children_of_the_Corn_III:_Urban_Harvest",
            "Children of the Corn III: Urban Harvest",
            True,
        ),
        ("Liar Liar (1997)", "Liar_Liar", "Liar Liar", True),
    ],
)
def test_a_dbpedia_film_is_the_movie_only_by_its_name_and_year(title: str, uri_name: str, label: str, same: bool):
    from knowrec.datasets.movielens import dbpedia_is_the_film

    assert dbpedia_is_the_film(title, "http://dbpedia.org/resource/" + uri_name, label) is same


def test_the_triples_of_a_movie_tied_to_another_film_are_left_out(tmp_path: Path) -> None:
    ml = make_movielens(tmp_path)
    write(
        ml / "kg_triples.tsv.gz",
        "head_ml1m_movie_id\thead_uri\trelation\ttail_uri\thead_label\ttail_label\n"
        "1\thttp://dbpedia.org/resource/Toy_Story\tdbo:director\thttp://dbpedia.org/resource/John_Lasseter"
        "\tToy Story\tJohn Lasseter\n"
        "2\thttp://dbpedia.org/resource/The_American_President_(1925_film)\tdbo:director"
        "\thttp://dbpedia.org/resource/Someone_Else\tThe American President\tSomeone Else\n",
    )
    directors = {f.head: f.tail_label for f in load_movielens(ml).facts if f.relation == "director"}
    assert directors == {"1": "John Lasseter"}  # the 1925 film's director is not the 1995 film's
    kept = {f.head: f.tail_label for f in load_movielens(ml, check_kg_films=False).facts if f.relation == "director"}
    assert kept == {"1": "John Lasseter", "2": "Someone Else"}


# --------------------------------------------------------------------------------------------------------------------
# Bundled demo

DEMO_DBPEDIA_FACTS = 28548
"""DBpedia triples of ml-latest-small movies: 30,177 in kg_triples.tsv.gz, minus the 1,627 of 159 movies that DBpedia
ties to another film ("Top Gun (1986)" to the 1955 film), minus 2 whose tail is not a DBpedia URI."""


def test_demo_files_present() -> None:
    folder = demo_path()
    names = ["movies.csv.gz", "ratings.csv.gz", "tags.csv.gz", "links.csv.gz", "kg_triples.tsv.gz"]
    for name in [*names, "README.txt", "KG-LICENSE", "NOTICE.md"]:
        assert (folder / name).is_file(), name


@pytest.mark.slow
def test_load_demo_counts() -> None:
    ds = load_demo()
    assert len(ds.items) == 9742
    assert len(ds.interactions) == 100836
    assert len(ds.user_ids) == 610
    dbpedia = [f for f in ds.facts if f.tail.startswith("dbr:")]
    assert len(dbpedia) == DEMO_DBPEDIA_FACTS
    assert len({f.head for f in dbpedia}) == 2415  # 2,574 films in the file
    assert not any(f.head == "1101" and f.relation == "director" for f in dbpedia)  # Top Gun's is the 1955 film's
    assert len(ds.facts) == 63901
    ds.validate()
    toy = ds.items[0]
    assert toy.title == "Toy Story (1995)"
    assert toy.text == "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun."
