"""Relation schemas: which facts about an item the extractor may state, and what kind of thing each object is.

A schema is a TOML file::

    domain = "books"
    [relations.author]
    description = "who wrote the book"
    types = ["person"]

    [aliases]
    "dbr:Stephen_King" = ["S. King", "Steven King"]

Object types are free words (``person``, ``organisation``, ``work``…): an extracted object only joins a stored entity
whose relations allow one of its types, so "Michael Mann" the director and a company of the same name stay apart.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowrec.errors import InvalidInput

__all__ = ["ExtractionSchema", "RelationSpec", "default_schema", "load_schema"]


@dataclass(frozen=True)
class RelationSpec:
    """One relation the extractor may state: ``item —name→ object``."""

    name: str
    description: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class ExtractionSchema:
    """The relations of a domain, the types of relations stored by other sources, and known aliases of entities."""

    domain: str
    relations: tuple[RelationSpec, ...]
    known_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Types of relations that are not extracted but may be stored (e.g. a dataset's ``tag``)."""
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Entity id → other names it goes by."""

    def relation(self, name: str) -> RelationSpec | None:
        return next((r for r in self.relations if r.name == name), None)

    def types_of(self, relation: str) -> tuple[str, ...]:
        """The object types of a stored relation (empty when the schema does not know it)."""
        spec = self.relation(relation)
        return spec.types if spec is not None else self.known_types.get(relation, ())

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything that shapes the answers changes (part of the resume cache's key)."""
        body = json.dumps(
            [self.domain, [(r.name, r.description, r.types) for r in self.relations], sorted(self.aliases.items())],
            sort_keys=True,
        )
        return hashlib.sha1(body.encode()).hexdigest()[:12]

    def answer_schema(self, max_facts: int, mentions: list[str] | None = None, n_sentences: int = 0) -> dict[str, Any]:
        """The JSON schema an answer must follow: ``{"facts": [[relation, object, evidence], …]}``.

        Each fact is a ``[relation, object, evidence]`` triple (half the tokens of an object with named keys: the
        bundled model decodes about 12 tokens a second on 2 cores under a grammar). With ``mentions`` the object is one
        of those names and the evidence the number of a sentence (small models copy far better than they write);
        without, both are free strings, checked after the answer.
        """
        obj: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 120}
        evidence: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 300}
        if mentions is not None:
            obj = {"type": "string", "enum": list(mentions)} if mentions else obj
            evidence = {"type": "integer", "enum": list(range(1, max(1, n_sentences) + 1))}  # grammars ignore maximum
        relation = {"type": "string", "enum": [r.name for r in self.relations]}
        return {
            "type": "object",
            "properties": {
                "facts": {
                    "type": "array",
                    "maxItems": max_facts,
                    "items": {"type": "array", "prefixItems": [relation, obj, evidence], "minItems": 3, "maxItems": 3},
                }
            },
            "required": ["facts"],
            "additionalProperties": False,
        }


_PERSON = ("person",)
_MOVIES = ExtractionSchema(
    domain="movies",
    relations=(
        RelationSpec("director", "who directed the film", _PERSON),
        RelationSpec("starring", "an actor or actress in the film's cast", _PERSON),
        RelationSpec("writer", "who wrote the screenplay or story", _PERSON),
        RelationSpec("producer", "who produced the film", _PERSON),
        RelationSpec("musicComposer", "who composed the film's music or score", _PERSON),
        RelationSpec("cinematography", "the director of photography", _PERSON),
        RelationSpec("editing", "who edited the film", _PERSON),
        RelationSpec("distributor", "the company that distributed or released the film", ("organisation",)),
        RelationSpec("basedOn", "the author or work the film is adapted from", ("person", "work")),
        RelationSpec("narrator", "who narrates the film", _PERSON),
    ),
    known_types={"genre": ("genre",), "year": ("year",), "tag": ("tag",)},
)
_GENERIC = ExtractionSchema(
    domain="generic",
    relations=(
        RelationSpec("creator", "who made, wrote or designed the item", _PERSON),
        RelationSpec("contributor", "another person who took part in making it", _PERSON),
        RelationSpec("publisher", "the company that publishes, makes or sells it", ("organisation",)),
        RelationSpec("brand", "the brand or series it belongs to", ("organisation", "work")),
        RelationSpec("topic", "what it is about", ("concept", "person", "place")),
        RelationSpec("place", "where it is set or comes from", ("place",)),
    ),
    known_types={"genre": ("genre",), "year": ("year",), "tag": ("tag",)},
)


def default_schema(domain: str) -> ExtractionSchema:
    """The bundled schema of ``movies`` or ``generic``."""
    schemas = {"movies": _MOVIES, "generic": _GENERIC}
    if domain not in schemas:
        raise InvalidInput(f"no bundled schema for domain {domain!r}; choose {', '.join(schemas)}", field="domain")
    return schemas[domain]


def load_schema(path: Path | str) -> ExtractionSchema:
    """Read a TOML schema; :class:`InvalidInput` naming the file and field when it is malformed."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput("schema file not found", path=path) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"not a readable TOML file: {exc}", path=path) from exc
    unknown = set(data) - {"domain", "relations", "aliases", "known_types"}
    if unknown:
        raise InvalidInput(f"unknown keys {sorted(unknown)}", path=path, field=sorted(unknown)[0])
    rels = data.get("relations")
    if not isinstance(rels, dict) or not rels:
        raise InvalidInput("needs at least one [relations.NAME] table", path=path, field="relations")
    specs = []
    for name, body in rels.items():
        where = f"relations.{name}"
        if not isinstance(body, dict):
            raise InvalidInput("must be a table", path=path, field=where)
        types = body.get("types", ["thing"])
        if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
            raise InvalidInput("types must be a non-empty list of words", path=path, field=f"{where}.types")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise InvalidInput("description must be a string", path=path, field=f"{where}.description")
        extra = set(body) - {"types", "description"}
        if extra:
            raise InvalidInput(f"unknown keys {sorted(extra)}", path=path, field=where)
        specs.append(RelationSpec(name, description or name, tuple(types)))
    aliases: dict[str, tuple[str, ...]] = {}
    for entity, names in (data.get("aliases") or {}).items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput("must be a list of names", path=path, field=f"aliases.{entity}")
        aliases[entity] = tuple(names)
    known: dict[str, tuple[str, ...]] = dict(_MOVIES.known_types)
    for rel, types in (data.get("known_types") or {}).items():
        if not isinstance(types, list):
            raise InvalidInput("must be a list of types", path=path, field=f"known_types.{rel}")
        known[rel] = tuple(types)
    return ExtractionSchema(
        domain=str(data.get("domain", path.stem)), relations=tuple(specs), known_types=known, aliases=aliases
    )
