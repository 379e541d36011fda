"""Build the bundled demo data in ``knowrec/datasets/demo/`` from the shared copies of the public data sets.

Usage (from the repository root)::

    python scripts/build_demo_data.py [--movielens ../shared/data/ml-latest-small]
                                      [--kg ../shared/data/kg-dbpedia-ml1m] [--out knowrec/datasets/demo]

The CSV files are gzip-compressed byte for byte (with ``mtime=0``, so rebuilding gives identical files); the KG keeps
the header and the triples whose movie id is in ``movies.csv``. Licences are copied and ``NOTICE.md`` is written.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSV_FILES = ("movies.csv", "ratings.csv", "tags.csv", "links.csv")
KG_TRIPLES = "ml1m_dbpedia_triples.tsv.gz"

NOTICE = """\
# Bundled demo data: sources and licences

This folder holds public data, redistributed under its own licences (not the licence of the knowrec code).

## MovieLens ml-latest-small

`movies.csv.gz`, `ratings.csv.gz`, `tags.csv.gz` and `links.csv.gz` are the files of the MovieLens "ml-latest-small"
data set by GroupLens Research (University of Minnesota), https://grouplens.org/datasets/movielens/ ,
gzip-compressed and otherwise unchanged (byte-identical after decompression).

Their licence is the MovieLens README, copied unchanged as `README.txt`. In short: the data may be redistributed,
including transformations, under the same licence conditions; it may **not** be used for commercial purposes without
permission from GroupLens; the data set must be acknowledged in publications (see `README.txt` for the citation:
F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context. ACM TiiS 5, 4).

## Knowledge graph

`kg_triples.tsv.gz` is derived from the Movielens1M knowledge graphs of D2KLab/entity2rec
(https://github.com/D2KLab/entity2rec, `datasets/Movielens1M/graphs/*.edgelist` and `original/mappings.tsv`),
licensed under the Apache License 2.0, copied as `KG-LICENSE`. The edge lists were joined with the mappings to give
one triple per line with readable labels, and only triples of movies present in ml-latest-small `movies.csv` are kept.

The entities, relations and labels come from DBpedia (https://www.dbpedia.org), licensed under the Creative Commons
Attribution-ShareAlike 3.0 licence (CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/). DBpedia content
in this folder, and derivatives of it, must keep this attribution and be shared under the same licence.
"""


def gzip_bytes(data: bytes, dest: Path) -> None:
    """Write ``data`` gzip-compressed to ``dest`` reproducibly (no file name, mtime 0)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    dest.write_bytes(buffer.getvalue())


def movie_ids(movies_csv: bytes) -> set[str]:
    """The ``movieId`` values of a movies.csv."""
    text = movies_csv.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return {row["movieId"].strip() for row in reader}


def filter_kg(data: bytes, keep: set[str]) -> tuple[bytes, int, int]:
    """The header and the lines whose first field is in ``keep``; also the kept and total triple counts."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [lines[0]] if lines and lines[0].startswith(b"head_ml1m_movie_id") else []
    body = lines[len(out) :]
    kept = [line for line in body if line.split(b"\t", 1)[0].decode("utf-8").strip() in keep]
    out.extend(kept)
    return b"\n".join(out) + b"\n", len(kept), len(body)


def main(argv: list[str] | None = None) -> int:
    """Build the demo folder; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movielens", type=Path, default=ROOT / "../shared/data/ml-latest-small")
    parser.add_argument("--kg", type=Path, default=ROOT / "../shared/data/kg-dbpedia-ml1m")
    parser.add_argument("--out", type=Path, default=ROOT / "knowrec/datasets/demo")
    args = parser.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in CSV_FILES:
        data = (args.movielens / name).read_bytes()
        gzip_bytes(data, out / f"{name}.gz")
        print(f"{name}.gz: {len(data):,} bytes uncompressed")
    shutil.copyfile(args.movielens / "README.txt", out / "README.txt")

    keep = movie_ids((args.movielens / "movies.csv").read_bytes())
    with gzip.open(args.kg / KG_TRIPLES, "rb") as fh:
        kg_data = fh.read()
    filtered, kept, total = filter_kg(kg_data, keep)
    gzip_bytes(filtered, out / "kg_triples.tsv.gz")
    print(f"kg_triples.tsv.gz: {kept:,} of {total:,} triples (movies in movies.csv)")
    shutil.copyfile(args.kg / "LICENSE", out / "KG-LICENSE")
    (out / "NOTICE.md").write_text(NOTICE, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
