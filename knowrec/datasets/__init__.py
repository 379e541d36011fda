"""Dataset readers and the bundled demo data.

Two formats are read: the documented generic format (:func:`load_generic`, see ``docs/data-format.md``) and the
MovieLens ``ml-latest-small`` layout with DBpedia triples (:func:`load_movielens`). The bundled demo
(:func:`load_demo`) is ml-latest-small with the DBpedia knowledge graph of its movies; see ``demo/NOTICE.md``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from knowrec.datasets.base import Dataset, subsample
from knowrec.datasets.generic import load_generic, load_generic_files
from knowrec.datasets.movielens import load_movielens

__all__ = [
    "Dataset",
    "demo_embeddings_path",
    "demo_models_path",
    "demo_path",
    "load_demo",
    "load_generic",
    "load_generic_files",
    "load_movielens",
    "subsample",
]


def demo_path() -> Path:
    """The folder of the bundled demo data (MovieLens ml-latest-small and its DBpedia triples).

    Example:
        >>> (demo_path() / "movies.csv.gz").is_file()
        True
    """
    return Path(str(files("knowrec.datasets") / "demo"))


def demo_models_path() -> Path:
    """The models fitted on the full demo data, shipped so that ``knowrec demo`` answers without training first
    (rebuilt by ``python scripts/build_demo_models.py``; used only when the stored data is exactly the demo's)."""
    return demo_path() / "models"


def demo_embeddings_path() -> Path:
    """The vectors of the full demo's item documents by the bundled embedder, shipped so that ingesting the demo (or
    a slice of it) does not embed 9,742 texts first (rebuilt by ``python scripts/build_demo_embeddings.py``)."""
    return demo_path() / "embeddings.npz"


def load_demo(max_users: int | None = None) -> Dataset:
    """Load the bundled demo data with :func:`load_movielens`.

    Args:
        max_users: Keep only the ratings of this many users (smallest ids). ``None``: all 610.

    Example:
        >>> ds = load_demo(max_users=3)
        >>> ds.user_ids
        ['1', '2', '3']
    """
    ds = load_movielens(demo_path(), max_users=max_users)
    ds.name = "demo"
    return ds
