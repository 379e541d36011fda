"""Shared fixtures."""

from __future__ import annotations

import pytest

from knowrec.kg_store.base import GraphBatch
from knowrec.types import Fact, Interaction, Item
from tests.servers_chroma import chroma_server  # noqa: F401  (session fixture: a real `chroma run`)
from tests.servers_llm import llm_server  # noqa: F401
from tests.servers_neo4j import neo4j_server  # noqa: F401  (session fixture: a real Neo4j 5.26)


def _tiny_kg() -> GraphBatch:
    """Six films, eight entities, twenty facts, three users, nine interactions.

    Entity degrees (items linked): p:d1 2, p:d2 2, p:a1 3, p:a2 2, p:a3 2, genre:Comedy 5, genre:Drama 2,
    p:w1 2 (``p:w1`` is the head of its facts: ``p:w1 —wrote→ m3``, ``p:w1 —wrote→ m6``).
    """
    titles = {"m1": "Alpha", "m2": "Beta", "m3": "Gamma", "m4": "Delta", "m5": "Epsilon", "m6": "Zeta"}
    labels = {
        "p:d1": "Dir One",
        "p:d2": "Dir Two",
        "p:a1": "Actor One",
        "p:a2": "Actor Two",
        "p:a3": "Actor Three",
        "genre:Comedy": "Comedy",
        "genre:Drama": "Drama",
        "p:w1": "Writer W",
    }
    links = {
        "m1": [("director", "p:d1"), ("actor", "p:a1"), ("actor", "p:a2"), ("genre", "genre:Comedy")],
        "m2": [("director", "p:d1"), ("actor", "p:a1"), ("genre", "genre:Comedy")],
        "m3": [("director", "p:d2"), ("actor", "p:a2"), ("genre", "genre:Drama")],
        "m4": [("actor", "p:a1"), ("actor", "p:a3"), ("genre", "genre:Comedy"), ("genre", "genre:Drama")],
        "m5": [("director", "p:d2"), ("actor", "p:a3"), ("genre", "genre:Comedy")],
        "m6": [("genre", "genre:Comedy")],
    }
    items = [Item(id=i, title=t, text=f"{t} is a film.", attributes={"year": "199" + i[1]}) for i, t in titles.items()]
    facts = [
        Fact(head=item, relation=rel, tail=ent, head_label=titles[item], tail_label=labels[ent])
        for item, pairs in links.items()
        for rel, ent in pairs
    ]
    facts += [
        Fact(head="p:w1", relation="wrote", tail=item, head_label=labels["p:w1"], tail_label=titles[item])
        for item in ("m3", "m6")
    ]
    interactions = [
        Interaction(user_id="u1", item_id="m1", rating=5.0, timestamp=100),
        Interaction(user_id="u1", item_id="m2", rating=4.0, timestamp=200),
        Interaction(user_id="u1", item_id="m4", rating=3.0, timestamp=200),
        Interaction(user_id="u1", item_id="m3"),
        Interaction(user_id="u2", item_id="m1", rating=4.0, timestamp=50),
        Interaction(user_id="u2", item_id="m5", rating=2.0, timestamp=60),
        Interaction(user_id="u3", item_id="m1", timestamp=10),
        Interaction(user_id="u3", item_id="m2", rating=5.0, timestamp=20),
        Interaction(user_id="u3", item_id="m6", rating=1.0, timestamp=30),
    ]
    return GraphBatch(items=items, facts=facts, interactions=interactions)


@pytest.fixture
def tiny_kg() -> GraphBatch:
    """A small hand-made knowledge graph (see :func:`_tiny_kg`); a fresh copy per test."""
    return _tiny_kg()
