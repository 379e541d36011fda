"""knowrec.integrations.langchain on a hand-written RecommenderAPI fake and the real langchain-core (no server)."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from knowrec.api import RecommenderAPI
from knowrec.config import Settings
from knowrec.errors import ConfigError, InvalidInput, NotFound
from knowrec.integrations.langchain import (
    FeedbackTool,
    ItemFactsTool,
    KnowrecRetriever,
    RecommendTool,
    knowrec_tools,
)
from knowrec.types import (
    ChatProgress,
    ChatTurn,
    Fact,
    Item,
    ItemDetails,
    Reason,
    Recommendation,
    RecommendedItem,
    SessionProfile,
)

TITLES = {"1": "Toy Story (1995)", "2": "Jumanji (1995)", "6": "Heat (1995)", "32": "Twelve Monkeys (1995)"}
FACTS = {
    "1": (
        Fact(
            head="1", relation="director", tail="dbr:John_Lasseter", head_label=TITLES["1"], tail_label="John Lasseter"
        ),
        Fact(head="1", relation="genre", tail="genre:Animation", head_label=TITLES["1"], tail_label="Animation"),
    ),
    "2": (
        Fact(
            head="2",
            relation="starring",
            tail="dbr:Robin_Williams",
            head_label=TITLES["2"],
            tail_label="Robin Williams",
        ),
    ),
    "6": (
        Fact(head="6", relation="director", tail="dbr:Michael_Mann", head_label=TITLES["6"], tail_label="Michael Mann"),
    ),
    "32": (),
}
HISTORY_FACT = Fact(head="2355", relation="director", tail="dbr:John_Lasseter", head_label="A Bug's Life (1998)")


class FakeRecommender:
    """Four films; ``recommend`` returns them in id order minus ``exclude``, each with one reason citing its first
    fact. Every call is recorded with the thread it ran on."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(data_dir=tmp_path, llm={"backend": "none"}, ranker={"mode": "none"})
        self.calls: list[tuple[Any, ...]] = []
        self.threads: list[int] = []
        self.feedbacks: list[tuple[str, bool, str | None, str | None]] = []

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        self.threads.append(threading.get_ident())

    def _item(self, item_id: str | int) -> Item:
        item_id = str(item_id)
        if item_id not in TITLES:
            raise NotFound(f"unknown item id {item_id!r}")
        return Item(id=item_id, title=TITLES[item_id], text=f"{TITLES[item_id]}. A film.", attributes={"year": "1995"})

    def recommend(
        self,
        user_id: str | int | None,
        k: int = 10,
        query: str | None = None,
        diversity: float = 0.3,
        *,
        exclude: list[str] | None = None,
        candidates: list[str] | None = None,
        mode: Any = None,
        on_retrieved: Callable[[Recommendation], None] | None = None,
    ) -> Recommendation:
        self._record("recommend", user_id, k, query, exclude, mode)
        ids = [i for i in TITLES if i not in (exclude or [])][:k]
        items = []
        for rank, i in enumerate(ids, start=1):
            facts = FACTS[i][:1]
            reasons = tuple(Reason(text=f"{f.relation.title()}: {f.tail_label}.", fact_ids=(f.id,)) for f in facts)
            if i == "1":  # a reason that also cites a history item's fact
                reasons = (
                    *reasons,
                    Reason(text="Like A Bug's Life.", fact_ids=(facts[0].id,), context_fact_ids=(HISTORY_FACT.id,)),
                )
                facts = (*facts, HISTORY_FACT)
            items.append(
                RecommendedItem(
                    item_id=i,
                    title=TITLES[i],
                    rank=rank,
                    score=1.0 / rank,
                    retrieval_score=0.5 / rank,
                    sources=("kg",),
                    reasons=reasons,
                    facts=facts,
                )
            )
        return Recommendation(
            user_id=None if user_id is None else str(user_id),
            items=tuple(items),
            query=query,
            cold_start=user_id is None,
            ranking_mode=mode or "none",
            model="fake-model",
        )

    def similar(self, item_id: str | int, k: int = 10) -> list[tuple[Item, float]]:
        self._record("similar", item_id, k)
        seed = self._item(item_id)
        return [(self._item(i), 0.9 - n / 10) for n, i in enumerate(i for i in TITLES if i != seed.id)][:k]

    def search(self, query: str, k: int = 10) -> list[tuple[Item, float]]:
        self._record("search", query, k)
        if not query.strip():
            raise InvalidInput("the query is empty", field="query")
        words = query.lower().split()
        hits = [(self._item(i), 0.8) for i, t in TITLES.items() if any(w in t.lower() for w in words)]
        return hits[:k]

    def item(self, item_id: str | int, *, facts: int = 50) -> ItemDetails:
        self._record("item", item_id, facts)
        item = self._item(item_id)
        return ItemDetails(item=item, facts=FACTS[item.id][:facts])

    def feedback(self, item_id: str, liked: bool, *, session_id: str | None = None, user_id: str | None = None) -> None:
        self._record("feedback", item_id, liked, session_id, user_id)
        self._item(item_id)
        if session_id is None and user_id is None:
            raise InvalidInput("give a session_id or a user_id")
        self.feedbacks.append((item_id, liked, session_id, user_id))

    def new_session(self, user_id: str | None = None) -> str:
        return "s1"

    def chat(
        self,
        session_id: str,
        message: str,
        *,
        user_id: str | None = None,
        k: int = 5,
        on_progress: Callable[[ChatProgress], None] | None = None,
    ) -> ChatTurn:
        return ChatTurn(session_id=session_id, role="assistant", text="hi")

    def chat_history(self, session_id: str) -> list[ChatTurn]:
        return []

    def session_profile(self, session_id: str) -> SessionProfile:
        return SessionProfile(session_id=session_id)

    def verify(self) -> dict[str, str]:
        return {"graph": "fake"}

    def stats(self) -> dict[str, int]:
        return {"items": len(TITLES)}

    def info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def fake(tmp_path: Path) -> FakeRecommender:
    rec = FakeRecommender(tmp_path)
    assert isinstance(rec, RecommenderAPI)
    return rec


def tool_named(tools: list[Any], name: str) -> Any:
    return next(t for t in tools if t.name == name)


# -- retriever ------------------------------------------------------------------------------------------------------
def test_retriever_recommend_documents_carry_reasons_and_cited_facts(fake: FakeRecommender):
    docs = KnowrecRetriever(recommender=fake, user_id="u1", k=2).invoke("something animated")
    assert fake.calls == [("recommend", "u1", 2, "something animated", None, None)]
    assert [d.metadata["item_id"] for d in docs] == ["1", "2"]
    assert [d.id for d in docs] == ["1", "2"]
    first = docs[0]
    director = FACTS["1"][0]
    assert first.page_content == "Toy Story (1995)\nWhy: Director: John Lasseter. Like A Bug's Life."
    meta = first.metadata
    assert (meta["title"], meta["rank"], meta["score"], meta["retrieval_score"]) == ("Toy Story (1995)", 1, 1.0, 0.5)
    assert meta["reasons"][0] == {
        "text": "Director: John Lasseter.",
        "fact_ids": [director.id],
        "context_fact_ids": [],
        "source": "template",
    }
    assert meta["reasons"][1]["context_fact_ids"] == [HISTORY_FACT.id]
    assert meta["facts"][0] == {
        "id": director.id,
        "head": "1",
        "relation": "director",
        "tail": "dbr:John_Lasseter",
        "head_label": "Toy Story (1995)",
        "tail_label": "John Lasseter",
        "source": "dataset",
    }
    assert [f["id"] for f in meta["facts"]] == [director.id, HISTORY_FACT.id]
    assert (meta["mode"], meta["ranking_mode"], meta["model"], meta["user_id"], meta["query"]) == (
        "recommend",
        "none",
        "fake-model",
        "u1",
        "something animated",
    )
    assert meta["cold_start"] is False and meta["fallback"] is False
    assert docs[1].page_content == "Jumanji (1995)\nWhy: Starring: Robin Williams."


def test_retriever_empty_query_and_ranking_mode_override(fake: FakeRecommender):
    docs = KnowrecRetriever(recommender=fake, k=1, ranking_mode="listwise").invoke("  ")
    assert fake.calls == [("recommend", None, 1, None, None, "listwise")]
    assert docs[0].metadata["ranking_mode"] == "listwise" and docs[0].metadata["cold_start"] is True


def test_retriever_async_runs_the_blocking_call_in_a_worker_thread(fake: FakeRecommender):
    retriever = KnowrecRetriever(recommender=fake, user_id="u1", k=3)
    sync_docs = retriever.invoke("heat")
    main = threading.get_ident()
    async_docs = asyncio.run(retriever.ainvoke("heat"))
    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert [d.metadata for d in async_docs] == [d.metadata for d in sync_docs]
    assert fake.threads[0] == main and fake.threads[1] != main


def test_retriever_search_mode_adds_item_text_and_facts(fake: FakeRecommender):
    docs = KnowrecRetriever(recommender=fake, mode="search", k=5, facts=2).invoke("toy")
    assert fake.calls == [("search", "toy", 5), ("item", "1", 2)]
    assert len(docs) == 1
    doc = docs[0]
    assert doc.page_content == (
        "Toy Story (1995)\nToy Story (1995). A film.\n"
        "Facts: Toy Story (1995) —director→ John Lasseter; Toy Story (1995) —genre→ Animation"
    )
    assert doc.metadata["mode"] == "search" and doc.metadata["score"] == 0.8 and doc.metadata["rank"] == 1
    assert doc.metadata["attributes"] == {"year": "1995"}
    assert [f["relation"] for f in doc.metadata["facts"]] == ["director", "genre"]


def test_retriever_similar_mode_takes_an_item_id(fake: FakeRecommender):
    docs = asyncio.run(KnowrecRetriever(recommender=fake, mode="similar", k=2, facts=0).ainvoke(" 6 "))
    assert fake.calls == [("similar", "6", 2)]  # facts=0: no item look-ups
    assert [(d.metadata["item_id"], d.metadata["rank"], d.metadata["score"]) for d in docs] == [
        ("1", 1, 0.9),
        ("2", 2, 0.8),
    ]
    assert docs[0].page_content == "Toy Story (1995)\nToy Story (1995). A film."
    with pytest.raises(NotFound, match="'999'"):
        KnowrecRetriever(recommender=fake, mode="similar").invoke("999")


def test_retriever_rejects_a_non_recommender():
    with pytest.raises(ValueError, match="RecommenderAPI"):
        KnowrecRetriever(recommender=object())


# -- tools: schemas -------------------------------------------------------------------------------------------------
def test_knowrec_tools_names_and_argument_schemas(fake: FakeRecommender):
    tools = knowrec_tools(fake)
    assert [t.name for t in tools] == ["recommend", "search_items", "similar_items", "item_facts", "feedback"]
    assert all(len(t.description) > 60 for t in tools)
    rec = tool_named(tools, "recommend")
    assert set(rec.args) == {"query", "k", "exclude", "user_id"}
    schema = rec.tool_call_schema.model_json_schema()
    props = schema["properties"]
    assert props["k"]["type"] == "integer" and props["k"]["default"] == 5 and props["k"]["maximum"] == 50
    assert props["exclude"]["type"] == "array" and props["exclude"]["items"] == {"type": "string"}
    assert {"type": "string"} in props["query"]["anyOf"] and {"type": "null"} in props["query"]["anyOf"]
    assert "required" not in schema  # every argument is optional
    facts_schema = tool_named(tools, "item_facts").tool_call_schema.model_json_schema()
    assert facts_schema["required"] == ["item_id"]
    assert facts_schema["properties"]["item_id"]["type"] == "string"
    assert facts_schema["properties"]["n"]["type"] == "integer"
    fb = tool_named(tools, "feedback").tool_call_schema.model_json_schema()
    assert sorted(fb["required"]) == ["item_id", "liked"] and fb["properties"]["liked"]["type"] == "boolean"
    assert set(fb["properties"]) == {"item_id", "liked", "session_id", "user_id"}
    assert set(tool_named(tools, "similar_items").args) == {"item_id", "k"}
    assert set(tool_named(tools, "search_items").args) == {"query", "k"}


def test_binding_a_user_removes_user_id_from_the_schemas(fake: FakeRecommender):
    tools = knowrec_tools(fake, user_id="u7")
    assert set(tool_named(tools, "recommend").args) == {"query", "k", "exclude"}
    assert set(tool_named(tools, "feedback").args) == {"item_id", "liked", "session_id"}
    # what bind_tools sends to an OpenAI-compatible server
    spec = convert_to_openai_tool(tool_named(tools, "item_facts"))
    assert spec["type"] == "function" and spec["function"]["name"] == "item_facts"
    assert spec["function"]["parameters"]["required"] == ["item_id"]
    assert "knowledge-graph facts" in spec["function"]["description"]


# -- tools: calls ---------------------------------------------------------------------------------------------------
def test_recommend_tool_for_a_bound_user(fake: FakeRecommender):
    tool = tool_named(knowrec_tools(fake, user_id="u7", ranking_mode="none"), "recommend")
    out = tool.invoke({"query": "funny", "k": 2, "exclude": ["1"], "user_id": "someone-else"})
    assert fake.calls == [("recommend", "u7", 2, "funny", ["1"], "none")]
    assert out["user_id"] == "u7" and out["query"] == "funny"
    assert out["items"] == [
        {
            "item_id": "2",
            "title": "Jumanji (1995)",
            "rank": 1,
            "score": 1.0,
            "why": ["Starring: Robin Williams."],
            "facts": ["Jumanji (1995) —starring→ Robin Williams"],
        },
        {
            "item_id": "6",
            "title": "Heat (1995)",
            "rank": 2,
            "score": 0.5,
            "why": ["Director: Michael Mann."],
            "facts": ["Heat (1995) —director→ Michael Mann"],
        },
    ]
    json.dumps(out)  # JSON-able


def test_recommend_tool_unbound_takes_user_id_and_defaults(fake: FakeRecommender):
    tool = RecommendTool(recommender=fake)
    out = tool.invoke({"user_id": "u3"})
    assert fake.calls == [("recommend", "u3", 5, None, None, None)]
    assert [i["item_id"] for i in out["items"]] == ["1", "2", "6", "32"]
    cold = asyncio.run(tool.ainvoke({"query": "animated"}))
    assert fake.calls[-1] == ("recommend", None, 5, "animated", None, None) and cold["user_id"] is None


def test_search_and_similar_tools(fake: FakeRecommender):
    tools = knowrec_tools(fake)
    found = tool_named(tools, "search_items").invoke({"query": "heat", "k": 3})
    assert found == {"query": "heat", "items": [{"item_id": "6", "title": "Heat (1995)", "score": 0.8}]}
    similar = asyncio.run(tool_named(tools, "similar_items").ainvoke({"item_id": "6", "k": 2}))
    assert similar == {
        "item_id": "6",
        "title": "Heat (1995)",
        "similar": [
            {"item_id": "1", "title": "Toy Story (1995)", "score": 0.9},
            {"item_id": "2", "title": "Jumanji (1995)", "score": 0.8},
        ],
    }


def test_item_facts_tool_sync_async_and_string_input(fake: FakeRecommender):
    tool = ItemFactsTool(recommender=fake)
    out = tool.invoke({"item_id": "1", "n": 1})
    assert out == {
        "item_id": "1",
        "title": "Toy Story (1995)",
        "text": "Toy Story (1995). A film.",
        "attributes": {"year": "1995"},
        "facts": ["Toy Story (1995) —director→ John Lasseter"],
    }
    main = threading.get_ident()
    assert asyncio.run(tool.ainvoke({"item_id": "1", "n": 1})) == out
    assert fake.threads[-1] != main  # the async path ran the blocking call in a worker thread
    assert tool.invoke("6")["facts"] == ["Heat (1995) —director→ Michael Mann"]  # a bare string is the item id
    assert fake.calls[-1] == ("item", "6", 10)


def test_feedback_tool_records_for_the_bound_user(fake: FakeRecommender):
    tool = FeedbackTool(recommender=fake, user_id="u7")
    out = tool.invoke({"item_id": "6", "liked": True})
    assert fake.feedbacks == [("6", True, None, "u7")]
    assert out == {
        "recorded": True,
        "item_id": "6",
        "title": "Heat (1995)",
        "liked": True,
        "user_id": "u7",
        "session_id": None,
    }
    asyncio.run(tool.ainvoke({"item_id": "1", "liked": False, "session_id": "s9"}))
    assert fake.feedbacks[-1] == ("1", False, "s9", "u7")


def test_tool_errors_come_back_as_readable_results(fake: FakeRecommender):
    tools = knowrec_tools(fake)
    facts = tool_named(tools, "item_facts")
    assert facts.invoke({"item_id": "999"}) == "NotFound: unknown item id '999'"
    assert asyncio.run(facts.ainvoke({"item_id": "999"})) == "NotFound: unknown item id '999'"
    assert tool_named(tools, "similar_items").invoke({"item_id": "999"}) == "NotFound: unknown item id '999'"
    assert tool_named(tools, "feedback").invoke({"item_id": "6", "liked": True}) == (
        "InvalidInput: give a session_id or a user_id"
    )
    assert fake.feedbacks == []
    assert tool_named(tools, "search_items").invoke({"query": " "}) == "InvalidInput: field query: the query is empty"
    bad_k = tool_named(tools, "recommend").invoke({"k": 0})
    assert bad_k.startswith("invalid arguments: k: ") and "greater than or equal to 1" in bad_k
    assert not any(c[0] == "recommend" for c in fake.calls)


def test_a_model_tool_call_gets_an_error_tool_message(fake: FakeRecommender):
    call = {"name": "item_facts", "args": {"item_id": "999"}, "id": "call_1", "type": "tool_call"}
    msg = tool_named(knowrec_tools(fake), "item_facts").invoke(call)
    assert isinstance(msg, ToolMessage)
    assert (msg.status, msg.tool_call_id, msg.content) == ("error", "call_1", "NotFound: unknown item id '999'")
    ok = tool_named(knowrec_tools(fake), "item_facts").invoke({**call, "args": {"item_id": "6", "n": 1}})
    assert ok.status == "success" and json.loads(ok.content)["title"] == "Heat (1995)"


# -- optional dependency --------------------------------------------------------------------------------------------
def test_importing_without_langchain_core_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    for name in [m for m in sys.modules if m == "langchain_core" or m.startswith("langchain_core.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.delitem(sys.modules, "knowrec.integrations.langchain")
    with pytest.raises(ConfigError, match=r"pip install 'knowrec\[langchain\]'"):
        importlib.import_module("knowrec.integrations.langchain")
