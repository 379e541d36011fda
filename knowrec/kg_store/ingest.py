"""Ingest a validated :class:`~knowrec.datasets.Dataset` into the graph store and the item index.

Order of work, so that a failure anywhere leaves every store as it was:

1. validate every row (cross-file references included) — nothing is written before this passes;
2. upsert changed item documents into the index, remembering what they replaced;
3. write the graph batch in one transaction; if it fails, the index is restored.

Fitting models on what was stored is a separate step (:mod:`knowrec.fitting`, ``knowrec fit``).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from knowrec.datasets import Dataset
from knowrec.kg_store.base import GraphStore, ItemIndex, Progress
from knowrec.kg_store.chroma_index import doc_hash
from knowrec.types import Fact, IngestSummary, Item

__all__ = ["ingest_dataset", "item_document", "item_documents", "rich_progress"]

log = logging.getLogger(__name__)

_DOC_RELATIONS = ("director", "starring", "writer", "basedOn", "musicComposer")


def item_document(item: Item, facts: list[Fact]) -> str:
    """The text embedded for an item: title, description, and its most telling people facts.

    Example:
        >>> from knowrec.types import Item, Fact
        >>> it = Item(id="1", title="Heat (1995)", text="Crime thriller.")
        >>> item_document(it, [Fact(head="1", relation="director", tail="dbr:MM", tail_label="Michael Mann")])
        'Heat (1995). Crime thriller. Director: Michael Mann.'
    """
    parts = [item.title.rstrip(".") + "."]
    if item.text and item.text.strip() != item.title.strip():
        text = item.text.strip()
        if text.startswith(item.title):
            text = text[len(item.title) :].lstrip(" .")
        if text:
            parts.append(text if text.endswith(".") else text + ".")
    by_rel: dict[str, list[str]] = defaultdict(list)
    for f in facts:
        if f.head == item.id and f.relation in _DOC_RELATIONS and len(by_rel[f.relation]) < 3:
            by_rel[f.relation].append(f.tail_label or f.tail)
    for rel in _DOC_RELATIONS:
        if by_rel.get(rel):
            name = {"basedOn": "Based on", "musicComposer": "Music"}.get(rel, rel.capitalize())
            parts.append(f"{name}: {', '.join(by_rel[rel])}.")
    return " ".join(parts)


def item_documents(dataset: Dataset) -> dict[str, str]:
    """:func:`item_document` of every item of ``dataset``, by item id."""
    facts_by_item: dict[str, list[Fact]] = defaultdict(list)
    for f in dataset.facts:
        facts_by_item[f.head].append(f)
    return {it.id: item_document(it, facts_by_item.get(it.id, [])) for it in dataset.items}


@contextmanager
def rich_progress(enabled: bool, totals: dict[str, int]) -> Iterator[Progress | None]:
    """A rich progress display with one bar per stage; yields the callback (``None`` when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<13}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        tasks = {stage: bar.add_task(stage, total=total) for stage, total in totals.items() if total}

        def advance(stage: str, n: int) -> None:
            if stage in tasks:
                bar.advance(tasks[stage], n)

        yield advance


def ingest_dataset(
    dataset: Dataset,
    store: GraphStore,
    index: ItemIndex,
    progress: Callable[[dict[str, int]], Any] | None = None,
) -> IngestSummary:
    """Validate and write ``dataset`` atomically; see the module docstring. Idempotent.

    Args:
        progress: called with the per-stage totals, returns a context manager yielding a :data:`Progress` callback
            (e.g. ``lambda totals: rich_progress(True, totals)``).
    """
    started = time.perf_counter()
    new_item_ids = {it.id for it in dataset.items}
    referenced = {x.item_id for x in dataset.interactions} - new_item_ids
    dataset.validate(known_items=store.has_items(sorted(referenced)) if referenced else set())

    # 2. item documents: only new or changed ones are embedded
    docs = item_documents(dataset)
    stored = index.doc_hashes(list(docs))
    changed = [i for i, d in docs.items() if stored.get(i) != doc_hash(d)]
    before = index.snapshot([i for i in changed if i in stored])
    batch = dataset.to_batch()
    totals = {
        "index": len(changed),
        "items": len(batch.items),
        "facts": len(batch.facts),
        "interactions": len(batch.interactions),
    }
    cm = progress(totals) if progress is not None else rich_progress(False, totals)
    with cm as tick:
        try:
            if changed:
                index.upsert(changed, [docs[i] for i in changed], progress=tick)
            stats = store.write(batch, progress=tick)
        except BaseException:
            log.error("ingest failed; restoring the item index")
            try:
                index.restore(before, [i for i in changed if i not in stored])
            except Exception:  # a second failure must not hide the first
                log.exception("could not restore the item index; re-run the ingest to repair it")
            raise
    counts = store.stats()
    return IngestSummary(
        items=counts["items"],
        facts=counts["facts"],
        entities=counts["entities"],
        users=counts["users"],
        interactions=counts["interactions"],
        indexed=len(changed),
        seconds=round(time.perf_counter() - started, 3),
        new_items=stats.items,
        new_facts=stats.facts,
        new_interactions=stats.interactions,
    )
