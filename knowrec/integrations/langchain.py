"""LangChain over any :class:`~knowrec.api.RecommenderAPI`: a retriever and agent tools (``pip install
'knowrec[langchain]'``).

* :class:`KnowrecRetriever` turns a query into :class:`~langchain_core.documents.Document` s: a user's
  recommendations steered by the query (``mode="recommend"``), the items whose text matches it (``"search"``), or
  the items like the item whose id it is (``"similar"``). Each document's metadata carries the item id, title,
  score, rank, the reasons with the ids of the facts they cite, and those facts.
* :func:`knowrec_tools` gives an agent ``recommend``, ``search_items``, ``similar_items``, ``item_facts`` and
  ``feedback``: typed argument schemas, sync and async, compact JSON-able dict results. A
  :class:`~knowrec.errors.KnowrecError` (an unknown item, a missing user) comes back to the model as a readable
  ``"NotFound: …"`` tool result, not an exception.

Only the protocol's public methods are called, so a remote client or a test fake works as well as
:class:`~knowrec.Recommender`. The blocking calls run in a worker thread on the async paths.

Example (needs a populated data dir; not run as a doctest)::

    from knowrec import Recommender, Settings
    from knowrec.integrations.langchain import KnowrecRetriever, knowrec_tools
    rec = Recommender(Settings(data_dir="./knowrec-data"))
    docs = KnowrecRetriever(recommender=rec, user_id="1", k=3).invoke("time travel")
    docs[0].metadata["title"], docs[0].metadata["reasons"][0]["fact_ids"]
    # → ('Twelve Monkeys (a.k.a. 12 Monkeys) (1995)', ['F3eb4e00ae011'])
    [t.name for t in knowrec_tools(rec, user_id="1")]
    # → ['recommend', 'search_items', 'similar_items', 'item_facts', 'feedback']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from knowrec.api import RankingMode, RecommenderAPI
from knowrec.errors import ConfigError, KnowrecError
from knowrec.types import Fact, Item, Reason, Recommendation

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.tools import ArgsSchema, BaseTool, ToolException
except ImportError as _exc:  # pragma: no cover - exercised by a test that blocks the import
    raise ConfigError(
        f"knowrec.integrations.langchain needs langchain-core ({_exc}): pip install 'knowrec[langchain]'"
    ) from _exc

__all__ = [
    "FeedbackTool",
    "ItemFactsTool",
    "KnowrecRetriever",
    "KnowrecTool",
    "RecommendTool",
    "SearchItemsTool",
    "SimilarItemsTool",
    "knowrec_tools",
]

RetrieverMode = Literal["recommend", "search", "similar"]


# -- shared conversions ---------------------------------------------------------------------------------------------
def _fact_meta(fact: Fact) -> dict[str, Any]:
    return {
        "id": fact.id,
        "head": fact.head,
        "relation": fact.relation,
        "tail": fact.tail,
        "head_label": fact.head_label,
        "tail_label": fact.tail_label,
        "source": fact.source,
    }


def _reason_meta(reason: Reason) -> dict[str, Any]:
    return {
        "text": reason.text,
        "fact_ids": list(reason.fact_ids),
        "context_fact_ids": list(reason.context_fact_ids),
        "source": reason.source,
    }


def _score(value: float) -> float:
    return round(float(value), 4)


# -- retriever ------------------------------------------------------------------------------------------------------
class KnowrecRetriever(BaseRetriever):
    """Items as LangChain documents, from any :class:`~knowrec.api.RecommenderAPI`.

    ``mode`` says what the query is:

    * ``"recommend"`` (default): a free-text wish steering ``user_id``'s recommendations (an empty query asks for
      the user's plain recommendations; no user is the cold-start path). Documents read ``title`` then ``Why: …``
      (the reasons); metadata adds ``reasons`` (text and cited ``fact_ids``), ``facts`` (every cited fact:
      id, head, relation, tail, labels), ``ranking_mode``, ``model``, ``fallback``.
    * ``"search"``: text matched against the items' text by embedding (``RecommenderAPI.search``).
    * ``"similar"``: the query is an item id; its nearest items by embedding (``RecommenderAPI.similar``).

    In ``search`` and ``similar`` modes ``facts`` (default 3) facts per item are looked up and added to the text and
    the metadata (``0`` skips the look-ups). Errors are :class:`~knowrec.errors.KnowrecError` s (``NotFound`` for
    an unknown item id, ``InvalidInput`` for an empty search).

    Example (needs a populated data dir; not run as a doctest)::

        retriever = KnowrecRetriever(recommender=rec, mode="search", k=2)
        [d.metadata["title"] for d in retriever.invoke("Toy Story")]
        # → ['Toy Story (1995)', 'Toy Story 2 (1999)']
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    recommender: RecommenderAPI
    user_id: str | None = None
    """Whose recommendations (``mode="recommend"``); ``None``: the cold-start path."""
    k: int = Field(default=5, ge=1, le=200)
    mode: RetrieverMode = "recommend"
    ranking_mode: RankingMode | None = None
    """``mode="recommend"``: override the recommender's configured ranking mode (``"none"``: retrieval order)."""
    facts: int = Field(default=3, ge=0, le=50)
    """``mode="search"`` / ``"similar"``: facts per item to add (one ``item`` call per document)."""

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._documents(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await run_in_executor(None, self._documents, query)

    def _documents(self, query: str) -> list[Document]:
        if self.mode == "recommend":
            wish = query.strip() or None
            result = self.recommender.recommend(self.user_id, k=self.k, query=wish, mode=self.ranking_mode)
            return self._recommendation_documents(result)
        if self.mode == "search":
            hits = self.recommender.search(query, k=self.k)
        else:
            hits = self.recommender.similar(query.strip(), k=self.k)
        return [self._item_document(item, score, rank, query) for rank, (item, score) in enumerate(hits, start=1)]

    def _recommendation_documents(self, result: Recommendation) -> list[Document]:
        docs = []
        for it in result.items:
            why = " ".join(r.text for r in it.reasons)
            content = it.title + (f"\nWhy: {why}" if why else "")
            meta: dict[str, Any] = {
                "item_id": it.item_id,
                "title": it.title,
                "rank": it.rank,
                "score": it.score,
                "retrieval_score": it.retrieval_score,
                "llm_score": it.llm_score,
                "sources": list(it.sources),
                "reasons": [_reason_meta(r) for r in it.reasons],
                "facts": [_fact_meta(f) for f in it.facts],
                "mode": "recommend",
                "user_id": result.user_id,
                "query": result.query,
                "cold_start": result.cold_start,
                "ranking_mode": result.ranking_mode,
                "model": result.model,
                "fallback": result.fallback,
            }
            docs.append(Document(page_content=content, metadata=meta, id=it.item_id))
        return docs

    def _item_document(self, item: Item, score: float, rank: int, query: str) -> Document:
        facts = self.recommender.item(item.id, facts=self.facts).facts if self.facts else ()
        lines = [item.title]
        if item.text:
            lines.append(item.text)
        if facts:
            lines.append("Facts: " + "; ".join(f.text() for f in facts))
        meta: dict[str, Any] = {
            "item_id": item.id,
            "title": item.title,
            "rank": rank,
            "score": float(score),
            "attributes": dict(item.attributes),
            "reasons": [],
            "facts": [_fact_meta(f) for f in facts],
            "mode": self.mode,
            "query": query,
        }
        return Document(page_content="\n".join(lines), metadata=meta, id=item.id)


# -- tool argument schemas ------------------------------------------------------------------------------------------
class RecommendInput(BaseModel):
    """``recommend`` for the user the tools were made for."""

    query: str | None = Field(
        default=None, description="What the user asks for in their own words, e.g. 'a funny heist film'. Optional."
    )
    k: int = Field(default=5, ge=1, le=50, description="How many items to recommend.")
    exclude: list[str] = Field(default=[], description="Item ids never to recommend (e.g. already shown).")


class RecommendAnyUserInput(RecommendInput):
    """``recommend`` when the tools are not bound to a user."""

    user_id: str | None = Field(
        default=None, description="The user's id; leave empty for someone unknown (popular items plus the query)."
    )


class SearchItemsInput(BaseModel):
    query: str = Field(description="Words to match against the items' titles and descriptions, e.g. 'Toy Story'.")
    k: int = Field(default=5, ge=1, le=50, description="How many items to return.")


class SimilarItemsInput(BaseModel):
    item_id: str = Field(description="The id of the item to find similar items for.")
    k: int = Field(default=5, ge=1, le=50, description="How many similar items to return.")


class ItemFactsInput(BaseModel):
    item_id: str = Field(description="The id of the item to describe.")
    n: int = Field(default=10, ge=1, le=50, description="At most this many facts, most informative first.")


class FeedbackInput(BaseModel):
    """``feedback`` for the user the tools were made for."""

    item_id: str = Field(description="The id of the item the user reacted to.")
    liked: bool = Field(description="true if the user liked the item, false if they disliked it.")
    session_id: str | None = Field(default=None, description="The chat session to remember this in. Optional.")


class FeedbackAnyUserInput(FeedbackInput):
    """``feedback`` when the tools are not bound to a user: a user id or a session id is needed."""

    user_id: str | None = Field(default=None, description="The user who reacted (give this or session_id).")


def _invalid_arguments(exc: Exception) -> str:
    """A pydantic validation error as one readable line for the model."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"invalid arguments: {exc}"
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'input'}: {e.get('msg', '')}" for e in errors()]
    return "invalid arguments: " + "; ".join(parts)


# -- tools ----------------------------------------------------------------------------------------------------------
class KnowrecTool(BaseTool):
    """Base of the knowrec tools: a :class:`~knowrec.errors.KnowrecError` becomes a readable tool result
    (``"NotFound: unknown item id '999'"``), invalid arguments too; the async path runs the blocking call in a
    worker thread. Subclasses implement :meth:`_call` on the validated arguments."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    recommender: RecommenderAPI
    handle_tool_error: bool | str | Callable[..., Any] | None = True
    handle_validation_error: bool | str | Callable[..., str] | None = _invalid_arguments

    def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = self.args_schema
        if args and isinstance(schema, type) and issubclass(schema, BaseModel):  # a bare string: the first argument
            kwargs = {next(iter(schema.model_fields)): args[0], **kwargs}
        try:
            return self._call(kwargs)
        except KnowrecError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc

    async def _arun(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await run_in_executor(None, self._run, *args, **kwargs)


class RecommendTool(KnowrecTool):
    """``recommend``: items for the user, each with the reasons (grounded in stored facts) it was picked.

    With ``user_id`` set the tool always acts for that user and the model cannot name another one (``user_id`` is
    not in its arguments); without it the model may pass one.
    """

    name: str = "recommend"
    description: str = (
        "Recommend items (films) for the user, optionally steered by a free-text request such as "
        "'something funny from the 90s'. Returns item ids, titles, scores and the reasons each was chosen, "
        "with the knowledge-graph facts the reasons rest on. Use the item ids with the other tools."
    )
    args_schema: Annotated[ArgsSchema | None, SkipValidation()] = RecommendAnyUserInput
    user_id: str | None = None
    ranking_mode: RankingMode | None = None
    """Override the recommender's ranking mode (``"none"``: retrieval order, no LLM)."""

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if self.user_id is not None and self.args_schema is RecommendAnyUserInput:
            self.args_schema = RecommendInput

    def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.user_id is None:
            a: RecommendInput = RecommendAnyUserInput.model_validate(args)
            user = getattr(a, "user_id", None)
        else:
            a = RecommendInput.model_validate(args)
            user = self.user_id
        result = self.recommender.recommend(
            user, k=a.k, query=a.query or None, exclude=list(a.exclude) or None, mode=self.ranking_mode
        )
        return {
            "user_id": result.user_id,
            "query": result.query,
            "items": [
                {
                    "item_id": it.item_id,
                    "title": it.title,
                    "rank": it.rank,
                    "score": _score(it.score),
                    "why": [r.text for r in it.reasons],
                    "facts": [f.text() for f in it.facts],
                }
                for it in result.items
            ],
        }


class SearchItemsTool(KnowrecTool):
    """``search_items``: find items (and their ids) by title or description."""

    name: str = "search_items"
    description: str = (
        "Find items (films) whose title or description matches some words, e.g. a title the user mentions, to get "
        "their item ids. Returns item ids, titles and match scores, best first."
    )
    args_schema: Annotated[ArgsSchema | None, SkipValidation()] = SearchItemsInput

    def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        a = SearchItemsInput.model_validate(args)
        hits = self.recommender.search(a.query, k=a.k)
        return {
            "query": a.query,
            "items": [{"item_id": i.id, "title": i.title, "score": _score(s)} for i, s in hits],
        }


class SimilarItemsTool(KnowrecTool):
    """``similar_items``: the items most like one item."""

    name: str = "similar_items"
    description: str = (
        "Find the items (films) most similar to a given item, by its item id ('more like this'). Returns item ids, "
        "titles and similarity scores, most similar first."
    )
    args_schema: Annotated[ArgsSchema | None, SkipValidation()] = SimilarItemsInput

    def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        a = SimilarItemsInput.model_validate(args)
        hits = self.recommender.similar(a.item_id, k=a.k)
        seed = self.recommender.item(a.item_id, facts=0).item
        return {
            "item_id": seed.id,
            "title": seed.title,
            "similar": [{"item_id": i.id, "title": i.title, "score": _score(s)} for i, s in hits],
        }


class ItemFactsTool(KnowrecTool):
    """``item_facts``: one item and its knowledge-graph facts."""

    name: str = "item_facts"
    description: str = (
        "Look up one item (film) by its item id: its title, description and knowledge-graph facts (director, "
        "actors, genres, …), most informative first. Use it to answer questions about an item."
    )
    args_schema: Annotated[ArgsSchema | None, SkipValidation()] = ItemFactsInput

    def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        a = ItemFactsInput.model_validate(args)
        details = self.recommender.item(a.item_id, facts=a.n)
        item = details.item
        return {
            "item_id": item.id,
            "title": item.title,
            "text": item.text,
            "attributes": dict(item.attributes),
            "facts": [f.text() for f in details.facts],
        }


class FeedbackTool(KnowrecTool):
    """``feedback``: record that the user liked or disliked an item.

    With ``user_id`` set the tool records for that user (``user_id`` is not in its arguments); without it the
    model must pass a ``user_id`` or a ``session_id``.
    """

    name: str = "feedback"
    description: str = (
        "Record that the user liked or disliked an item (film), by its item id, so later recommendations take it "
        "into account. Call it when the user says they loved, enjoyed, hated or did not like something."
    )
    args_schema: Annotated[ArgsSchema | None, SkipValidation()] = FeedbackAnyUserInput
    user_id: str | None = None

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if self.user_id is not None and self.args_schema is FeedbackAnyUserInput:
            self.args_schema = FeedbackInput

    def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.user_id is None:
            a: FeedbackInput = FeedbackAnyUserInput.model_validate(args)
            user = getattr(a, "user_id", None)
        else:
            a = FeedbackInput.model_validate(args)
            user = self.user_id
        self.recommender.feedback(a.item_id, a.liked, session_id=a.session_id, user_id=user)
        title = self.recommender.item(a.item_id, facts=0).item.title
        return {
            "recorded": True,
            "item_id": a.item_id,
            "title": title,
            "liked": a.liked,
            "user_id": user,
            "session_id": a.session_id,
        }


def knowrec_tools(
    recommender: RecommenderAPI, *, user_id: str | None = None, ranking_mode: RankingMode | None = None
) -> list[BaseTool]:
    """The agent tools over ``recommender``: ``recommend``, ``search_items``, ``similar_items``, ``item_facts``,
    ``feedback``.

    Args:
        recommender: any :class:`~knowrec.api.RecommenderAPI` (a :class:`~knowrec.Recommender`, a fake).
        user_id: bind ``recommend`` and ``feedback`` to this user: the model cannot act for anyone else. ``None``:
            both take an optional ``user_id`` argument.
        ranking_mode: override the recommender's ranking mode in ``recommend`` (``"none"``: no LLM ranking).

    Example (needs a populated data dir; not run as a doctest)::

        tools = knowrec_tools(rec, user_id="1")
        llm.bind_tools(tools)
    """
    return [
        RecommendTool(recommender=recommender, user_id=user_id, ranking_mode=ranking_mode),
        SearchItemsTool(recommender=recommender),
        SimilarItemsTool(recommender=recommender),
        ItemFactsTool(recommender=recommender),
        FeedbackTool(recommender=recommender, user_id=user_id),
    ]
