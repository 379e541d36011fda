"""Readers for the documented generic format (see ``docs/data-format.md``).

A dataset is an items file (CSV or JSON Lines, required), an interactions CSV (optional) and a facts TSV (optional).
Every file may be gzip-compressed (``.gz``), may start with a UTF-8 BOM and may use CRLF line endings. Any problem is
reported as :class:`~knowrec.errors.InvalidInput` naming the file, the line and, where it applies, the field.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from pydantic import ValidationError

from knowrec.datasets.base import CsvTable, Dataset, Origin, read_text, validation_error
from knowrec.errors import InvalidInput
from knowrec.types import Fact, Interaction, Item

__all__ = [
    "load_generic",
    "load_generic_files",
    "parse_rating",
    "parse_timestamp",
    "read_facts",
    "read_interactions",
    "read_items",
]

logger = logging.getLogger(__name__)

_ITEM_KEYS = ("id", "title", "text")
_INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


# --------------------------------------------------------------------------------------------------------------------
# Numbers


def parse_rating(value: str, path: Path, line: int, field: str = "rating") -> float | None:
    """A rating cell as a float (``None`` when empty); anything else not a finite number raises.

    Example:
        >>> parse_rating("4.5", Path("r.csv"), 2)
        4.5
        >>> parse_rating("", Path("r.csv"), 2) is None
        True
    """
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a number", path=path, line=line, field=field) from None
    if not math.isfinite(number):
        raise InvalidInput(f"{text!r} is not a finite number", path=path, line=line, field=field)
    return number


def parse_timestamp(value: str, path: Path, line: int, field: str = "timestamp") -> int | None:
    """A timestamp cell (Unix seconds) as an int (``None`` when empty); ``"964982703.0"`` is accepted.

    Example:
        >>> parse_timestamp("964982703.0", Path("r.csv"), 2)
        964982703
    """
    text = value.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a Unix timestamp in seconds", path=path, line=line, field=field) from None
    if not math.isfinite(number):
        raise InvalidInput(f"{text!r} is not a finite number", path=path, line=line, field=field)
    return int(number)


# --------------------------------------------------------------------------------------------------------------------
# Items


def read_items(path: Path | str) -> list[tuple[Item, Origin]]:
    """Items from a CSV (``.csv``) or JSON Lines (``.jsonl``/``.ndjson``) file, each with its origin.

    CSV needs a header with ``id`` and ``title``; ``text`` is optional; every other column becomes an attribute
    (empty cells are left out). JSONL has one object per line with the same keys; non-string attribute values are
    JSON-encoded, ``null`` values are left out, and an ``attributes`` object is merged into the attributes.

    Raises:
        InvalidInput: Missing or empty file, bad bytes, malformed row, missing column, empty id/title, duplicate id.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "items.csv"
        >>> _ = p.write_text("id,title,genre\\n1,Toy Story,Animation\\n")
        >>> [item.attributes for item, _ in read_items(p)]
        [{'genre': 'Animation'}]
    """
    path = Path(path)
    base = _strip_gz(path.name).lower()
    if base.endswith((".jsonl", ".ndjson")):
        rows = _read_items_jsonl(path)
    elif base.endswith(".csv"):
        rows = _read_items_csv(path)
    else:
        raise InvalidInput("unsupported items file type (expected .csv or .jsonl, optionally .gz)", path=path)
    first_line: dict[str, int] = {}
    for item, (_, line) in rows:
        if item.id in first_line:
            raise InvalidInput(
                f"duplicate item id {item.id!r} (first defined on line {first_line[item.id]})",
                path=path,
                line=line,
                field="id",
            )
        first_line[item.id] = line
    return rows


def _read_items_csv(path: Path) -> list[tuple[Item, Origin]]:
    table = CsvTable(path, read_text(path), required=("id", "title"), header_only_is_empty=True, what="items")
    extra = [(name, position) for name, position in table.index.items() if name not in _ITEM_KEYS]
    i_id, i_title, i_text = table.index["id"], table.index["title"], table.index.get("text")
    where = str(path)
    out: list[tuple[Item, Origin]] = []
    for line, row in table.rows():
        attributes = {name: row[position] for name, position in extra if row[position] != ""}
        try:
            item = Item(
                id=row[i_id].strip(),
                title=row[i_title].strip(),
                text=row[i_text] if i_text is not None else "",
                attributes=attributes,
            )
        except ValidationError as exc:
            raise validation_error(exc, path, line) from None
        out.append((item, (where, line)))
    return out


def _read_items_jsonl(path: Path) -> list[tuple[Item, Origin]]:
    text = read_text(path)
    where = str(path)
    out: list[tuple[Item, Origin]] = []
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=line) from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"expected a JSON object, got {type(obj).__name__}", path=path, line=line)
        values: dict[str, str] = {}
        for key in _ITEM_KEYS:
            value = obj.get(key)
            if value is None:
                if key != "text":
                    raise InvalidInput(f"missing required key {key!r}", path=path, line=line, field=key)
                continue
            if key == "id" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise InvalidInput(f"must be a string, got {type(value).__name__}", path=path, line=line, field=key)
            values[key] = value.strip() if key != "text" else value
        attributes: dict[str, str] = {}
        for key, value in obj.items():
            if key in _ITEM_KEYS:
                continue
            if key == "attributes" and isinstance(value, dict):
                for sub_key, sub_value in value.items():
                    if sub_value is not None:
                        attributes[str(sub_key)] = _attr(sub_value)
            elif value is not None:
                attributes[key] = _attr(value)
        try:
            item = Item(id=values["id"], title=values["title"], text=values.get("text", ""), attributes=attributes)
        except ValidationError as exc:
            raise validation_error(exc, path, line) from None
        out.append((item, (where, line)))
    if not out:
        raise InvalidInput("file is empty (no items)", path=path)
    return out


def _attr(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


# --------------------------------------------------------------------------------------------------------------------
# Interactions


def read_interactions(path: Path | str) -> list[tuple[Interaction, Origin]]:
    """Interactions from a CSV with header ``user_id,item_id[,rating][,timestamp]``, each with its origin.

    A header-only file gives no interactions. Unknown extra columns are ignored (with a warning). Whether the item ids
    exist is checked later by :meth:`Dataset.validate`.

    Raises:
        InvalidInput: Missing or empty file, bad bytes, malformed row, missing column, bad number, empty id.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "interactions.csv"
        >>> _ = p.write_text("user_id,item_id,rating\\nu1,1,4.5\\n")
        >>> read_interactions(p)[0][0].rating
        4.5
    """
    path = Path(path)
    table = CsvTable(path, read_text(path), required=("user_id", "item_id"))
    unknown = [name for name in table.header if name not in _INTERACTION_COLUMNS]
    if unknown:
        logger.warning("%s: ignoring unknown interaction columns %s", path, ", ".join(unknown))
    i_user, i_item = table.index["user_id"], table.index["item_id"]
    i_rating, i_ts = table.index.get("rating"), table.index.get("timestamp")
    where = str(path)
    out: list[tuple[Interaction, Origin]] = []
    for line, row in table.rows():
        rating = parse_rating(row[i_rating], path, line) if i_rating is not None else None
        timestamp = parse_timestamp(row[i_ts], path, line) if i_ts is not None else None
        try:
            interaction = Interaction(
                user_id=row[i_user].strip(), item_id=row[i_item].strip(), rating=rating, timestamp=timestamp
            )
        except ValidationError as exc:
            raise validation_error(exc, path, line) from None
        out.append((interaction, (where, line)))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Facts


def read_facts(path: Path | str) -> list[tuple[Fact, Origin]]:
    """Facts from a TSV ``head_id<TAB>relation<TAB>tail_id[<TAB>head_label<TAB>tail_label]``, each with its origin.

    A first line starting with ``head_id`` is a header. Fields are not quoted: a tab always separates fields.
    Repeated triples are kept once (the first occurrence, with its labels).

    Raises:
        InvalidInput: Missing or empty file, bad bytes, wrong column count, empty head/relation/tail.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "facts.tsv"
        >>> _ = p.write_text("1\\tdirector\\tdbr:John_Lasseter\\tToy Story\\tJohn Lasseter\\n")
        >>> read_facts(p)[0][0].text()
        'Toy Story —director→ John Lasseter'
    """
    path = Path(path)
    text = read_text(path)
    where = str(path)
    out: list[tuple[Fact, Origin]] = []
    seen: set[str] = set()
    for line, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        if line == 1 and raw.startswith("head_id"):
            continue
        fields = raw.split("\t")
        if len(fields) not in (3, 5):
            raise InvalidInput(
                f"expected 3 or 5 tab-separated fields (head_id, relation, tail_id[, head_label, tail_label]), "
                f"got {len(fields)}",
                path=path,
                line=line,
            )
        head, relation, tail = (f.strip() for f in fields[:3])
        head_label, tail_label = (fields[3].strip(), fields[4].strip()) if len(fields) == 5 else ("", "")
        try:
            fact = Fact(head=head, relation=relation, tail=tail, head_label=head_label, tail_label=tail_label)
        except ValidationError as exc:
            raise validation_error(exc, path, line) from None
        if fact.id in seen:
            continue
        seen.add(fact.id)
        out.append((fact, (where, line)))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Whole datasets


def load_generic_files(
    items: Path | str,
    interactions: Path | str | None = None,
    facts: Path | str | None = None,
    *,
    name: str | None = None,
) -> Dataset:
    """Read a dataset in the generic format from explicit file paths.

    The result is not validated against a store: call :meth:`Dataset.validate` (with the store's item ids) before
    ingesting it.

    Args:
        items: Items CSV or JSONL (``.gz`` allowed).
        interactions: Interactions CSV, or ``None``.
        facts: Facts TSV, or ``None``.
        name: Dataset name; defaults to the items file's folder name.

    Raises:
        InvalidInput: Any file is missing or malformed (the message names file, line and field).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "items.csv").write_text("id,title\\n1,Toy Story\\n")
        >>> _ = (d / "ratings.csv").write_text("user_id,item_id,rating\\nu1,1,5\\n")
        >>> ds = load_generic_files(d / "items.csv", interactions=d / "ratings.csv", name="tiny")
        >>> ds.summary()
        {'items': 1, 'facts': 0, 'interactions': 1, 'users': 1}
    """
    items_path = Path(items)
    item_rows = read_items(items_path)
    interaction_rows = read_interactions(interactions) if interactions is not None else []
    fact_rows = read_facts(facts) if facts is not None else []
    ds = Dataset(
        name=name or items_path.resolve().parent.name or "dataset",
        items=[item for item, _ in item_rows],
        facts=[fact for fact, _ in fact_rows],
        interactions=[interaction for interaction, _ in interaction_rows],
        interaction_origins=[origin for _, origin in interaction_rows],
        fact_origins=[origin for _, origin in fact_rows],
    )
    logger.info("read dataset %s: %s", ds.name, ds.summary())
    return ds


def _find_one(directory: Path, names: tuple[str, ...]) -> Path | None:
    found = [directory / n for n in names if (directory / n).exists()]
    if len(found) > 1:
        raise InvalidInput(
            f"several candidate files: {', '.join(p.name for p in found)}; keep only one", path=directory
        )
    return found[0] if found else None


def load_generic(directory: Path | str) -> Dataset:
    """Read a dataset in the generic format from a folder.

    The folder holds ``items.csv`` or ``items.jsonl`` (required), ``interactions.csv`` and ``facts.tsv`` (both
    optional); each may instead be gzip-compressed with a ``.gz`` suffix.

    Args:
        directory: The folder.

    Raises:
        InvalidInput: The folder or its items file is missing, or any file is malformed.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "items.jsonl").write_text('{"id": "1", "title": "Toy Story", "year": 1995}\\n')
        >>> load_generic(d).items[0].attributes
        {'year': '1995'}
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInput("dataset folder not found", path=directory)
    items = _find_one(directory, ("items.csv", "items.csv.gz", "items.jsonl", "items.jsonl.gz"))
    if items is None:
        raise InvalidInput("no items file (expected items.csv or items.jsonl, optionally .gz)", path=directory)
    interactions = _find_one(directory, ("interactions.csv", "interactions.csv.gz"))
    facts = _find_one(directory, ("facts.tsv", "facts.tsv.gz"))
    return load_generic_files(items, interactions, facts, name=directory.resolve().name)
