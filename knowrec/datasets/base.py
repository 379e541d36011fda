"""The :class:`Dataset` container, its validation, and low-level file reading shared by the readers.

The readers in :mod:`knowrec.datasets.generic` and :mod:`knowrec.datasets.movielens` produce a :class:`Dataset`; the
ingest turns it into a :class:`~knowrec.kg_store.base.GraphBatch` with :meth:`Dataset.to_batch`. Every interaction and
fact remembers the file and line it came from, so errors found later (e.g. an unknown item id) can point at the input.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from knowrec.errors import InvalidInput
from knowrec.kg_store.base import GraphBatch
from knowrec.types import Fact, Interaction, Item

__all__ = ["Dataset", "Origin", "subsample", "user_sort_key"]

logger = logging.getLogger(__name__)

Origin = tuple[str, int]
"""Where a record came from: ``(file path, 1-based line number)``."""

_BOM = b"\xef\xbb\xbf"


def user_sort_key(user_id: str) -> tuple[int, int, str]:
    """Sort key ordering ids numerically where they are integers, and after those as strings.

    Example:
        >>> sorted(["10", "b", "2", "a"], key=user_sort_key)
        ['2', '10', 'a', 'b']
    """
    text = user_id.strip()
    if text.isascii() and text.lstrip("-").isdigit():
        return (0, int(text), user_id)
    return (1, 0, user_id)


@dataclass
class Dataset:
    """Items, facts and interactions read from files, with the origin of every fact and interaction.

    ``interaction_origins[i]`` is the ``(path, line)`` that ``interactions[i]`` was read from; ``fact_origins`` is the
    same for ``facts``. Both may be empty for a dataset built in code (errors then name no file).

    Example:
        >>> from knowrec.types import Item, Interaction
        >>> ds = Dataset("tiny", items=[Item(id="1", title="Toy Story")],
        ...              interactions=[Interaction(user_id="u1", item_id="1")])
        >>> ds.validate()
        >>> len(ds.to_batch().items)
        1
    """

    name: str
    items: list[Item] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)
    interaction_origins: list[Origin] = field(default_factory=list)
    fact_origins: list[Origin] = field(default_factory=list)

    @property
    def user_ids(self) -> list[str]:
        """Distinct user ids of the interactions, numeric ids in numeric order first.

        Example:
            >>> from knowrec.types import Interaction
            >>> Dataset("d", interactions=[Interaction(user_id="10", item_id="1"),
            ...                            Interaction(user_id="9", item_id="1")]).user_ids
            ['9', '10']
        """
        return sorted({i.user_id for i in self.interactions}, key=user_sort_key)

    def interaction_origin(self, index: int) -> Origin | None:
        """The ``(path, line)`` of interaction ``index``, or ``None`` when origins were not recorded.

        Example:
            >>> Dataset("d").interaction_origin(0) is None
            True
        """
        if len(self.interaction_origins) == len(self.interactions) and 0 <= index < len(self.interactions):
            return self.interaction_origins[index]
        return None

    def fact_origin(self, index: int) -> Origin | None:
        """The ``(path, line)`` of fact ``index``, or ``None`` when origins were not recorded.

        Example:
            >>> Dataset("d").fact_origin(0) is None
            True
        """
        if len(self.fact_origins) == len(self.facts) and 0 <= index < len(self.facts):
            return self.fact_origins[index]
        return None

    def validate(self, known_items: set[str] | frozenset[str] = frozenset()) -> None:
        """Check that every interaction refers to an item of this dataset or to one of ``known_items``.

        ``known_items`` are ids already in the store (an incremental ingest may add interactions only). Facts are not
        checked against items: a fact between two entities is allowed, and empty heads/tails are rejected when a
        :class:`~knowrec.types.Fact` is built. Raises on the first problem, naming its file and line.

        Args:
            known_items: Item ids that exist elsewhere (in the store).

        Raises:
            InvalidInput: An interaction refers to an unknown item, or an item id occurs twice.

        Example:
            >>> from knowrec.types import Item, Interaction
            >>> ds = Dataset("d", items=[Item(id="1", title="A")],
            ...              interactions=[Interaction(user_id="u", item_id="2")],
            ...              interaction_origins=[("ratings.csv", 2)])
            >>> ds.validate(known_items={"2"})
            >>> ds.validate()
            Traceback (most recent call last):
            ...
            knowrec.errors.InvalidInput: ratings.csv:2: field item_id: unknown item id '2' (not in the items file nor in the store)
        """  # noqa: E501
        ids: set[str] = set()
        for item in self.items:
            if item.id in ids:
                raise InvalidInput(f"duplicate item id {item.id!r} in dataset {self.name!r}", field="id")
            ids.add(item.id)
        for index, interaction in enumerate(self.interactions):
            if interaction.item_id in ids or interaction.item_id in known_items:
                continue
            origin = self.interaction_origin(index)
            raise InvalidInput(
                f"unknown item id {interaction.item_id!r} (not in the items file nor in the store)",
                path=origin[0] if origin else None,
                line=origin[1] if origin else None,
                field="item_id",
            )

    def to_batch(self) -> GraphBatch:
        """Everything in this dataset as one :class:`~knowrec.kg_store.base.GraphBatch` (new lists, same objects).

        Example:
            >>> Dataset("empty").to_batch().facts
            []
        """
        return GraphBatch(items=list(self.items), facts=list(self.facts), interactions=list(self.interactions))

    def summary(self) -> dict[str, int]:
        """Counts of items, facts, interactions and users.

        Example:
            >>> Dataset("empty").summary()
            {'items': 0, 'facts': 0, 'interactions': 0, 'users': 0}
        """
        return {
            "items": len(self.items),
            "facts": len(self.facts),
            "interactions": len(self.interactions),
            "users": len({i.user_id for i in self.interactions}),
        }


def subsample(ds: Dataset, n_users: int) -> Dataset:
    """A small slice of ``ds``: its first ``n_users`` users and only what they touch.

    Users are ordered by id (numerically where ids are integers). The slice keeps those users' interactions, the items
    they interacted with (nothing else), and the facts whose head is one of the kept items. Origins are kept.
    The selection is deterministic.

    Args:
        ds: The dataset to slice.
        n_users: How many users to keep (``>= 0``).

    Returns:
        A new :class:`Dataset` named ``"<name>[:<n_users> users]"``.

    Example:
        >>> from knowrec.types import Item, Interaction
        >>> ds = Dataset("d", items=[Item(id="1", title="A"), Item(id="2", title="B")],
        ...              interactions=[Interaction(user_id="2", item_id="2"), Interaction(user_id="1", item_id="1")])
        >>> [i.id for i in subsample(ds, 1).items]
        ['1']
    """
    if n_users < 0:
        raise InvalidInput(f"n_users must be >= 0 (got {n_users})", field="n_users")
    users = set(ds.user_ids[:n_users])
    keep_origins = len(ds.interaction_origins) == len(ds.interactions)
    interactions: list[Interaction] = []
    interaction_origins: list[Origin] = []
    touched: set[str] = set()
    for index, interaction in enumerate(ds.interactions):
        if interaction.user_id in users:
            interactions.append(interaction)
            touched.add(interaction.item_id)
            if keep_origins:
                interaction_origins.append(ds.interaction_origins[index])
    items = [item for item in ds.items if item.id in touched]
    kept_ids = {item.id for item in items}
    keep_fact_origins = len(ds.fact_origins) == len(ds.facts)
    facts: list[Fact] = []
    fact_origins: list[Origin] = []
    for index, fact in enumerate(ds.facts):
        if fact.head in kept_ids:
            facts.append(fact)
            if keep_fact_origins:
                fact_origins.append(ds.fact_origins[index])
    return Dataset(
        name=f"{ds.name}[:{n_users} users]",
        items=items,
        facts=facts,
        interactions=interactions,
        interaction_origins=interaction_origins,
        fact_origins=fact_origins,
    )


# --------------------------------------------------------------------------------------------------------------------
# Low-level reading shared by the readers (not part of the public API).


def read_text(path: Path, *, allow_empty: bool = False) -> str:
    """A UTF-8 file as text (``.gz`` decompressed, BOM removed). Errors name the file and, for bad bytes, the line.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
        >>> _ = p.write_bytes(b"\\xef\\xbb\\xbfid,title\\r\\n")
        >>> read_text(p)
        'id,title\\r\\n'
    """
    if not path.exists():
        raise InvalidInput("file not found", path=path)
    if not path.is_file():
        raise InvalidInput("not a regular file", path=path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InvalidInput(f"not a valid gzip file ({exc})", path=path) from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read file ({exc.strerror or exc})", path=path) from exc
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        raise InvalidInput(
            f"invalid UTF-8 byte 0x{data[exc.start]:02x} at column {column}; the file must be UTF-8 encoded",
            path=path,
            line=line,
        ) from exc
    if not allow_empty and not text.strip():
        raise InvalidInput("file is empty", path=path)
    return text


def iter_csv(path: Path, text: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """``(first line number, fields)`` for every non-blank CSV record of ``text``; CSV errors name the line.

    Example:
        >>> list(iter_csv(Path("x.csv"), 'a,b\\r\\n\\r\\n"c\\nd",e\\n'))
        [(1, ['a', 'b']), (3, ['c\\nd', 'e'])]
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            message = str(exc)
            if "unexpected end of data" in message:
                message = "unterminated quoted field (a '\"' is never closed)"
            raise InvalidInput(f"malformed CSV: {message}", path=path, line=start) from exc
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        yield start, row


class CsvTable:
    """A CSV file with a header: checks the required columns and the field count of every row.

    Example:
        >>> t = CsvTable(Path("x.csv"), "id,title\\n1,A\\n", required=("id", "title"))
        >>> [(line, t.get(row, "title")) for line, row in t.rows()]
        [(2, 'A')]
    """

    def __init__(
        self,
        path: Path,
        text: str,
        required: Sequence[str],
        *,
        header_only_is_empty: bool = False,
        what: str = "rows",
    ) -> None:
        self.path = path
        self._records = iter_csv(path, text)
        first = next(self._records, None)
        if first is None:
            raise InvalidInput("file is empty", path=path)
        self.header_line, raw = first
        self.header = [name.strip() for name in raw]
        self.index: dict[str, int] = {}
        for position, name in enumerate(self.header):
            if not name:
                raise InvalidInput(f"header column {position + 1} has no name", path=path, line=self.header_line)
            if name in self.index:
                raise InvalidInput(f"column {name!r} appears twice in the header", path=path, line=self.header_line)
            self.index[name] = position
        for name in required:
            if name not in self.index:
                raise InvalidInput(
                    f"missing required column {name!r} (header is {','.join(self.header)!r})",
                    path=path,
                    line=self.header_line,
                    field=name,
                )
        self._peeked = next(self._records, None)
        if self._peeked is None and header_only_is_empty:
            raise InvalidInput(f"file is empty (a header but no {what})", path=path)

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line, fields)`` of every data row; a row with the wrong number of fields raises."""
        records: Iterable[tuple[int, list[str]]] = self._records
        if self._peeked is not None:
            records = _chain_one(self._peeked, self._records)
            self._peeked = None
        width = len(self.header)
        for line, row in records:
            if len(row) != width:
                raise InvalidInput(
                    f"malformed CSV row: expected {width} fields like the header, got {len(row)}",
                    path=self.path,
                    line=line,
                )
            yield line, row

    def get(self, row: list[str], name: str) -> str:
        """The value of column ``name`` in ``row`` (``""`` when the table has no such column)."""
        position = self.index.get(name)
        return row[position] if position is not None else ""


def _chain_one(first: tuple[int, list[str]], rest: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
    yield first
    yield from rest


def validation_error(exc: ValidationError, path: Path, line: int) -> InvalidInput:
    """An :class:`InvalidInput` for a pydantic error raised while building a model from line ``line`` of ``path``.

    Example:
        >>> from knowrec.types import Item
        >>> try:
        ...     Item(id="", title="A")
        ... except ValidationError as e:
        ...     print(validation_error(e, Path("items.csv"), 2))
        items.csv:2: field id: id must not be empty
    """
    first = exc.errors()[0]
    loc = first.get("loc") or ()
    name = str(loc[0]) if loc else None
    message = str(first.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return InvalidInput(message, path=path, line=line, field=name)
