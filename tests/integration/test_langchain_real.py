"""knowrec.integrations.langchain on a real Recommender (the demo slice of tests/integration/conftest.py) and real
tool calls made by ``langchain_openai.ChatOpenAI`` against the OpenAI-compatible server of ``llm_server``
(``python -m llama_cpp.server`` with the bundled SmolLM2-135M, or ``KNOWREC_TEST_LLM_URL``).

The 135M model cannot pick a tool by itself, so the calls force the tool (``tool_choice``): llama-cpp-python's
server then constrains the arguments with a grammar built from the tool's JSON schema. Decoding is greedy
(temperature 0), so the model's arguments are reproducible.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

from knowrec import Recommender, Settings
from knowrec.integrations.langchain import KnowrecRetriever, knowrec_tools
from tests.servers_llm import MODEL_ALIAS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "1"
SYSTEM = SystemMessage("You help users pick films. Call the tools.")


@pytest.fixture(scope="module")
def rec(demo_dir: Path) -> Iterator[Recommender]:
    settings = Settings(data_dir=demo_dir, progress=False, llm={"backend": "none"}, ranker={"mode": "none"})
    r = Recommender(settings)
    yield r
    r.close()


@pytest.fixture(scope="module")
def chat_model(llm_server: str) -> ChatOpenAI:
    model = MODEL_ALIAS
    if os.environ.get("KNOWREC_TEST_LLM_URL"):
        with urllib.request.urlopen(f"{llm_server}/models", timeout=10) as resp:
            model = json.loads(resp.read())["data"][0]["id"]
    # langchain-openai sends max_completion_tokens, which llama-cpp-python's server ignores (it then generates up to
    # the context size): max_tokens goes in the request body itself
    return ChatOpenAI(
        base_url=llm_server,
        api_key="x",
        model=model,
        temperature=0,
        extra_body={"max_tokens": 64},
        timeout=120,
        max_retries=0,
    )


def _stored_fact_ok(rec: Recommender, fact: dict[str, str]) -> bool:
    stored = rec.store.get_facts([fact["id"]]).get(fact["id"])
    return stored is not None and (stored.head, stored.relation, stored.tail) == (
        fact["head"],
        fact["relation"],
        fact["tail"],
    )


def test_retriever_recommendations_cite_stored_facts(rec: Recommender):
    retriever = KnowrecRetriever(recommender=rec, user_id=USER, k=5)
    docs = retriever.invoke("time travel")
    direct = rec.recommend(USER, k=5, query="time travel")
    assert [d.metadata["item_id"] for d in docs] == [it.item_id for it in direct.items]
    assert len(docs) == 5
    for doc in docs:
        meta = doc.metadata
        assert doc.page_content.startswith(meta["title"] + "\nWhy: ")
        assert meta["reasons"] and meta["ranking_mode"] == "none" and meta["user_id"] == USER
        facts = {f["id"]: f for f in meta["facts"]}
        for reason in meta["reasons"]:
            assert reason["text"] in doc.page_content
            assert reason["fact_ids"], reason
            for fid in reason["fact_ids"]:  # a fact about the recommended item itself, as stored
                assert meta["item_id"] in (facts[fid]["head"], facts[fid]["tail"])
                assert _stored_fact_ok(rec, facts[fid])
            for fid in reason["context_fact_ids"]:
                assert _stored_fact_ok(rec, facts[fid])
    again = asyncio.run(retriever.ainvoke("time travel"))
    assert [d.metadata for d in again] == [d.metadata for d in docs]


def test_retriever_search_and_similar(rec: Recommender):
    found = KnowrecRetriever(recommender=rec, mode="search", k=3).invoke("Toy Story")
    assert found[0].metadata["title"] == "Toy Story (1995)" and found[0].metadata["item_id"] == "1"
    assert "Facts: Toy Story (1995) —" in found[0].page_content and len(found[0].metadata["facts"]) == 3
    similar = KnowrecRetriever(recommender=rec, mode="similar", k=4, facts=0).invoke("1")
    assert len(similar) == 4 and "1" not in [d.metadata["item_id"] for d in similar]
    assert [d.metadata["item_id"] for d in similar] == [i.id for i, _ in rec.similar("1", k=4)]


def test_a_forced_item_facts_call_from_chat_openai_names_the_item(rec: Recommender, chat_model: ChatOpenAI):
    tools = knowrec_tools(rec, user_id=USER, ranking_mode="none")
    facts_tool = next(t for t in tools if t.name == "item_facts")
    model = chat_model.bind_tools(tools, tool_choice="item_facts")
    ai = model.invoke([SYSTEM, HumanMessage('Call item_facts with {"item_id": "1"}.')])
    print(f"\nmodel answered: tool_calls={ai.tool_calls} metadata={ai.response_metadata}")
    assert isinstance(ai, AIMessage) and ai.response_metadata["finish_reason"] == "tool_calls"
    assert len(ai.tool_calls) == 1 and ai.tool_calls[0]["name"] == "item_facts"
    call = ai.tool_calls[0]
    assert call["args"]["item_id"] == "1"
    result = facts_tool.invoke(call)
    assert isinstance(result, ToolMessage) and result.status == "success" and result.tool_call_id == call["id"]
    content = json.loads(result.content)
    assert content["title"] == "Toy Story (1995)"
    n = call["args"].get("n", 10)
    assert content["facts"] == [f.text() for f in rec.item("1", facts=n).facts] and content["facts"]
    # an id the model makes up (the 135M model wrote './1.jpg' for "item_id is 1") becomes an error message
    bad = facts_tool.invoke({**call, "args": {"item_id": "./1.jpg"}})
    assert (bad.status, bad.content) == ("error", "NotFound: unknown item id './1.jpg'")


def test_a_forced_recommend_call_async_returns_the_users_recommendations(rec: Recommender, chat_model: ChatOpenAI):
    tools = knowrec_tools(rec, user_id=USER, ranking_mode="none")
    recommend_tool = next(t for t in tools if t.name == "recommend")

    async def run() -> tuple[AIMessage, ToolMessage]:
        model = chat_model.bind_tools(tools, tool_choice="recommend")
        ai = await model.ainvoke([SYSTEM, HumanMessage("Recommend films for me.")])
        assert isinstance(ai, AIMessage)
        print(f"\nmodel answered: tool_calls={ai.tool_calls}")
        assert [c["name"] for c in ai.tool_calls] == ["recommend"]
        msg = await recommend_tool.ainvoke(ai.tool_calls[0])
        assert isinstance(msg, ToolMessage)
        return ai, msg

    ai, msg = asyncio.run(run())
    args = ai.tool_calls[0]["args"]
    assert "user_id" not in recommend_tool.args  # bound to USER: the model cannot name another user
    assert msg.status == "success", msg.content
    out = json.loads(msg.content)
    direct = rec.recommend(USER, k=args.get("k", 5), query=args.get("query") or None, exclude=args.get("exclude"))
    assert out["user_id"] == USER
    assert [(i["item_id"], i["title"]) for i in out["items"]] == [(it.item_id, it.title) for it in direct.items]
    assert out["items"] and all(i["why"] and i["facts"] for i in out["items"])


def test_the_tool_result_goes_back_to_the_model(rec: Recommender, chat_model: ChatOpenAI):
    """The agent loop of examples/langchain_agent.py: tool call, tool result, the model's answer."""
    tools = knowrec_tools(rec, user_id=USER, ranking_mode="none")
    messages: list[BaseMessage] = [SYSTEM, HumanMessage('Call item_facts with {"item_id": "1"}.')]
    ai = chat_model.bind_tools(tools, tool_choice="item_facts").invoke(messages)
    assert isinstance(ai, AIMessage) and ai.tool_calls
    # llama-cpp-python's server rejects an assistant message whose content is null (langchain-openai sends null
    # for an empty content with tool calls): a one-space content passes everywhere
    messages.append(AIMessage(content=ai.content or " ", tool_calls=ai.tool_calls))
    messages += [next(t for t in tools if t.name == c["name"]).invoke(c) for c in ai.tool_calls]
    final = chat_model.bind_tools(tools).invoke(messages)
    print(f"\nfinal answer: {final.content!r}")
    assert isinstance(final, AIMessage) and final.response_metadata["finish_reason"] in ("stop", "length")
    assert isinstance(final.content, str) and "Toy Story" in final.content  # it read the tool's result
