"""Build the knowledge graph from item text with the LLM (``knowrec kg extract``, :meth:`Recommender.extract_facts`).

- :mod:`~knowrec.extraction.schema`: the relations that may be extracted (bundled per domain, or a TOML file);
- :mod:`~knowrec.extraction.text`: sentences (evidence) and names (objects) of a text;
- :mod:`~knowrec.extraction.resolve`: objects to stored or new entities;
- :mod:`~knowrec.extraction.extract`: the LLM call, the evidence check, resumable runs and the review report.
"""

from __future__ import annotations

from knowrec.extraction.extract import ExtractionRun, ExtractSummary, FactExtractor, ItemAnswer, parse_item_ids
from knowrec.extraction.resolve import EntityResolver, Resolution
from knowrec.extraction.schema import ExtractionSchema, RelationSpec, default_schema, load_schema

__all__ = [
    "EntityResolver",
    "ExtractSummary",
    "ExtractionRun",
    "ExtractionSchema",
    "FactExtractor",
    "ItemAnswer",
    "RelationSpec",
    "Resolution",
    "default_schema",
    "load_schema",
    "parse_item_ids",
]
