"""The recommendation pipeline: profile → retrieve → facts → rank → diversify → explain.

It only consumes protocols; :class:`knowrec.Recommender` builds the concrete stores and clients and hands them in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from knowrec.agent.diversify import mmr
from knowrec.agent.explain import ExplainInput, LLMExplainer, is_grounded, template_reasons
from knowrec.agent.fusion import (
    FEATURES,
    FusionContext,
    ItemStats,
    LearnedFusion,
    build_candidate_list,
    feature_matrix,
    rrf_order,
)
from knowrec.agent.rank import RankContext, Ranker, RankItem, RankResult
from knowrec.agent.retrieve import CandidateGenerator
from knowrec.config import DiversifyConfig, ExplainConfig, RankerConfig, RetrievalConfig
from knowrec.errors import ConfigError
from knowrec.kg_store.base import GraphStore, ItemIndex
from knowrec.types import (
    Candidate,
    CandidateList,
    Fact,
    Interaction,
    Item,
    KGPath,
    Reason,
    Recommendation,
    RecommendedItem,
    RecQuery,
)

__all__ = ["Pipeline", "Profile"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """What the pipeline knows about the user for one call."""

    user_id: str | None
    liked: tuple[str, ...]
    """Recent positively rated items, most recent first."""
    seen: frozenset[str]
    cold_start: bool
    sequence: tuple[str, ...] = ()
    """Every interacted item, oldest first (the most recent ``sequence_len``)."""


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round(self.ms.get(name, 0.0) + 1000 * (time.perf_counter() - t), 3)


class Pipeline:
    """One recommendation, stage by stage, with per-stage timings recorded in the result."""

    def __init__(
        self,
        store: GraphStore,
        index: ItemIndex,
        generators: Sequence[CandidateGenerator],
        ranker: Ranker,
        retrieval: RetrievalConfig,
        ranking: RankerConfig,
        diversify: DiversifyConfig,
        explain: ExplainConfig,
        explainer: LLMExplainer | None = None,
        model_id: Callable[[], str] = lambda: "none",
        fusion: LearnedFusion | None = None,
        stats: ItemStats | None = None,
        cold_fusion: LearnedFusion | None = None,
        constrained_fusion: LearnedFusion | None = None,
        sequence_len: int = 200,
    ) -> None:
        self.store = store
        self.index = index
        self.generators = list(generators)
        self.ranker = ranker
        self.retrieval = retrieval
        self.ranking = ranking
        self.diversify_cfg = diversify
        self.explain_cfg = explain
        self.explainer = explainer
        self.model_id = model_id
        self.fusion = fusion
        self.cold_fusion = cold_fusion
        self.constrained_fusion = constrained_fusion
        self.stats = stats
        self.sequence_len = sequence_len
        if retrieval.fusion == "learned" and fusion is None:
            raise ConfigError("retrieval.fusion is 'learned' but no fusion model is fitted: run `knowrec fit`")

    # -- stages ---------------------------------------------------------------------------------------------------
    def profile(self, user_id: str | None) -> Profile:
        """The user's recent liked items and everything they have seen; unknown users are cold-start."""
        return self.profile_of(user_id, self.store.history(user_id) if user_id is not None else [])

    def profile_of(self, user_id: str | None, history: Sequence[Interaction]) -> Profile:
        """The profile of a given history (most recent first), e.g. a prefix of the stored one (tuning examples)."""
        seen = frozenset(x.item_id for x in history)
        sequence = tuple(x.item_id for x in reversed(history[: self.sequence_len]))
        cfg = self.retrieval
        liked = [x.item_id for x in history if x.rating is None or x.rating >= cfg.like_threshold]
        if not liked:  # nothing clearly liked: the lukewarm items, but never a dislike (e.g. feedback "not that one")
            liked = [x.item_id for x in history if x.rating is not None and x.rating > cfg.dislike_threshold]
        return Profile(
            user_id=user_id,
            liked=tuple(liked[: self.retrieval.history_len]),
            seen=seen,
            cold_start=not history,
            sequence=sequence,
        )

    def generate(self, query: RecQuery, n: int, timer: _Timer | None = None) -> dict[str, list[Candidate]]:
        """Every generator's own list (each timed), ``max(n, retrieval.pool_size)`` long."""
        lists: dict[str, list[Candidate]] = {}
        pool = max(n, self.retrieval.pool_size)
        for gen in self.generators:
            t = time.perf_counter()
            lists[gen.name] = gen.generate(query, pool)
            if timer is not None:
                timer.ms[f"retrieve.{gen.name}"] = round(1000 * (time.perf_counter() - t), 3)
        return lists

    def fusion_context(self, query: RecQuery, cands: Sequence[Candidate]) -> FusionContext:
        """What the fusion features need for one query: whole-catalogue sequential and EASE scores, and the cosine
        of every candidate to the history and query vectors."""
        ctx = FusionContext(
            history=query.history,
            sequence_len=len(query.sequence),
            has_query=bool(query.query),
            sequence=query.sequence,
        )
        for gen in self.generators:
            model = getattr(gen, "model", None)
            if gen.name == "sequential" and model is not None:
                ctx.sequential_scores = gen.scores(query)  # type: ignore[attr-defined]
                ctx.sequential_index = model.index
            elif gen.name == "collaborative" and model is not None and query.seen:
                ctx.collaborative_scores, ctx.collaborative_index = model.scores_all(list(query.seen)), model.index
            elif gen.name == "vector":
                hist = gen.history_vector(query)  # type: ignore[attr-defined]
                qv = gen.query_vector(query)  # type: ignore[attr-defined]
                if hist is not None or qv is not None:
                    vecs = gen.index.vectors([c.item_id for c in cands])  # type: ignore[attr-defined]
                    if hist is not None:
                        ctx.history_sims = {i: float(v @ hist) for i, v in vecs.items()}
                    if qv is not None:
                        ctx.query_sims = {i: float(v @ qv) for i, v in vecs.items()}
        return ctx

    def fuse(self, query: RecQuery, lists: Mapping[str, Sequence[Candidate]], n: int) -> CandidateList:
        """One typed candidate list: the learned fusion when fitted (and allowed), else weighted RRF."""
        union = build_candidate_list(lists)
        names = tuple(lists)
        if self.fusion is None or self.retrieval.fusion == "rrf" or not union:
            fused = rrf_order(union, self.retrieval.weights, self.retrieval.rrf_k)[:n]
            return CandidateList(items=tuple(fused), fusion="rrf", generators=names)
        x = feature_matrix(union, self.fusion_context(query, union), self.stats)
        model = self.fusion
        if not query.history and not query.sequence:  # cold start: with fixed candidates (a constraint), or not
            if query.candidates and self.constrained_fusion is not None:
                model = self.constrained_fusion
            elif self.cold_fusion is not None:
                model = self.cold_fusion
        scores = model.score(x)
        order = sorted(range(len(union)), key=lambda r: (-scores[r], union[r].item_id))[:n]
        fused = [
            union[r].model_copy(update={"score": float(scores[r]), "features": tuple(float(v) for v in x[r])})
            for r in order
        ]
        return CandidateList(items=tuple(fused), fusion="learned", generators=names, feature_names=FEATURES)

    def retrieve(self, query: RecQuery, n: int, timer: _Timer | None = None) -> CandidateList:
        """Run every generator and fuse their lists into the ``n`` best candidates."""
        lists = self.generate(query, n, timer)
        t = time.perf_counter()
        out = self.fuse(query, lists, n)
        if timer is not None:
            timer.ms["retrieve.fusion"] = round(1000 * (time.perf_counter() - t), 3)
        return out

    def candidate_facts(
        self, cands: Sequence[Candidate], liked: Sequence[str]
    ) -> tuple[dict[str, tuple[KGPath, ...]], dict[str, list[Fact]]]:
        """Connecting paths (from the KG generator, else looked up) and each candidate's own top facts."""
        paths: dict[str, tuple[KGPath, ...]] = {c.item_id: c.paths for c in cands}
        lookup = [c.item_id for c in cands if not c.paths]
        if liked and lookup:  # one store round trip for every candidate without paths
            for item_id, found in self.store.paths_many(list(liked), lookup, n=5).items():
                paths[item_id] = tuple(found)
        # the rarest few: the prompt takes facts_per_candidate of them, a reason without a path the most telling two
        own = self.store.facts([c.item_id for c in cands], n=max(self.ranking.facts_per_candidate, 8))
        return paths, own

    # -- the whole thing --------------------------------------------------------------------------------------------
    def recommend(
        self, query: RecQuery, on_retrieved: Callable[[Recommendation], None] | None = None
    ) -> Recommendation:
        """Recommend ``query.k`` items; see :meth:`knowrec.Recommender.recommend`.

        ``on_retrieved`` is called once the candidates are known and before an LLM ranks them (not at all when the
        ranking mode is ``none``), with the top ``k`` in retrieval order and no reasons: what a chat shows at once.
        """
        timer = _Timer()
        with timer.stage("profile"):
            prof = self.profile(query.user_id)
            q = query.model_copy(update={"history": prof.liked, "seen": prof.seen, "sequence": prof.sequence})
        with timer.stage("retrieve"):
            n = max(self.retrieval.n_candidates, q.k, len(q.candidates))
            fused = self.retrieve(q, n, timer)
            cands = list(fused.items)
            if q.candidates:  # fixed candidate lists: anything no generator scored goes last, in the given order
                found = {c.item_id for c in cands}
                banned = q.seen | set(q.exclude)
                cands += [
                    Candidate(item_id=i, score=0.0, sources={})
                    for i in dict.fromkeys(q.candidates)
                    if i not in found and i not in banned
                ]
        # the diversification pool: the reranked items, then retrieval order, at least 2k so MMR has a choice
        pool = max(q.k * 2, self.ranking.rerank_top if self.ranker.mode != "none" else 0)
        top = cands[:pool]
        rerank = top[: self.ranking.rerank_top] if self.ranker.mode != "none" else top
        with timer.stage("facts"):
            paths, own = self.candidate_facts(top, prof.liked)
            titles = self.store.items([c.item_id for c in top] + list(prof.liked))
        if on_retrieved is not None and self.ranker.mode != "none":
            on_retrieved(self._preliminary(query, prof.cold_start, fused.fusion, cands[: q.k], titles, timer))
        with timer.stage("rank"):
            ctx, items = self.rank_inputs(prof, q.query, rerank, paths, own, titles)
            result = self.ranker.rank(ctx, items, q.k) if items else RankResult(order=[], final_scores={})
            ranked = list(result.order) + [c.item_id for c in top if c.item_id not in set(result.order)]
        with timer.stage("diversify"):
            relevance = {i: 1.0 - pos / max(len(ranked) - 1, 1) for pos, i in enumerate(ranked)}
            if q.diversity > 0 and len(ranked) > 1:
                vectors = self.index.vectors(ranked)
                entities = self.store.item_entities(ranked)
                chosen = mmr(
                    relevance,
                    q.k,
                    q.diversity,
                    vectors,
                    entities,
                    embedding_weight=self.diversify_cfg.embedding_weight,
                    order=ranked,
                )
            else:
                chosen = ranked[: q.k]
        with timer.stage("explain"):
            liked_titles = {i: titles[i].title for i in prof.liked if i in titles}
            reasons, cited, usage_explain = self._explain(chosen, titles, paths, own, liked_titles, ctx)
        by_id = {c.item_id: c for c in cands}
        out_items = []
        for rank, item_id in enumerate(chosen, start=1):
            cand = by_id[item_id]
            out_items.append(
                RecommendedItem(
                    item_id=item_id,
                    title=titles[item_id].title if item_id in titles else item_id,
                    rank=rank,
                    score=round(
                        result.final_scores.get(item_id, 0.0) if result.final_scores else relevance[item_id], 6
                    ),
                    retrieval_score=round(cand.score, 6),
                    llm_score=round(result.llm_scores[item_id], 6) if item_id in result.llm_scores else None,
                    sources=tuple(sorted(cand.sources)),
                    reasons=tuple(reasons.get(item_id, [])),
                    facts=tuple(cited.get(item_id, [])),
                )
            )
        usage = dict(result.usage)
        for key, val in usage_explain.items():
            usage[f"explain_{key}"] = val
        return Recommendation(
            user_id=query.user_id,
            items=tuple(out_items),
            query=query.query,
            cold_start=prof.cold_start,
            fusion=fused.fusion,
            ranking_mode=self.ranker.mode,
            model=result.model if self.ranker.mode != "none" else "none",
            prompt_id=result.prompt.id if result.prompt else None,
            prompt_version=result.prompt.version if result.prompt else None,
            fallback=result.fallback,
            fallback_reason=result.fallback_reason,
            repairs=tuple(result.repairs),
            timings_ms={**timer.ms, "total": round(sum(v for k, v in timer.ms.items() if "." not in k), 3)},
            usage=usage,
        )

    # -- helpers --------------------------------------------------------------------------------------------------
    def _preliminary(
        self,
        query: RecQuery,
        cold_start: bool,
        fusion: str,
        cands: Sequence[Candidate],
        titles: Mapping[str, Item],
        timer: _Timer,
    ) -> Recommendation:
        items = tuple(
            RecommendedItem(
                item_id=c.item_id,
                title=titles[c.item_id].title if c.item_id in titles else c.item_id,
                rank=rank,
                score=round(c.score, 6),
                retrieval_score=round(c.score, 6),
                sources=tuple(sorted(c.sources)),
            )
            for rank, c in enumerate(cands, start=1)
        )
        return Recommendation(
            user_id=query.user_id,
            items=items,
            query=query.query,
            cold_start=cold_start,
            fusion=fusion,
            ranking_mode="none",
            model="none",
            timings_ms=dict(timer.ms),
        )

    def rank_inputs(
        self,
        prof: Profile,
        query: str | None,
        rerank: Sequence[Candidate],
        paths: Mapping[str, Sequence[KGPath]] | None = None,
        own: Mapping[str, Sequence[Fact]] | None = None,
        titles: Mapping[str, Item] | None = None,
    ) -> tuple[RankContext, list[RankItem]]:
        """What the LLM ranker sees for ``rerank``: the history titles, each candidate's title and prompt facts.
        Facts and titles are looked up unless given (the tuning examples build their prompts here too)."""
        if paths is None or own is None:
            paths, own = self.candidate_facts(rerank, prof.liked)
        if titles is None:
            titles = self.store.items([c.item_id for c in rerank] + list(prof.liked))
        # facts on paths that are not among the candidates' own top facts: one lookup for all candidates
        known = {f.id for c in rerank for f in own.get(c.item_id, [])}
        on_paths = {p.target_fact for c in rerank for p in paths.get(c.item_id, ())} - known
        path_facts = self.store.get_facts(sorted(on_paths)) if on_paths else {}
        items = [
            RankItem(
                candidate=c,
                title=titles[c.item_id].title if c.item_id in titles else c.item_id,
                facts=self._prompt_facts(paths.get(c.item_id, ()), own.get(c.item_id, []), path_facts),
            )
            for c in rerank
        ]
        ctx = RankContext(
            history_titles=tuple(titles[i].title for i in prof.liked[: self.ranking.history_in_prompt] if i in titles),
            query=query,
        )
        return ctx, items

    def _prompt_facts(
        self, paths: Sequence[KGPath], own: Sequence[Fact], path_facts: Mapping[str, Fact]
    ) -> tuple[Fact, ...]:
        """Facts shown to the LLM: those on paths to the history first, then the item's rarest own facts.

        ``path_facts`` holds the path facts that are not among ``own`` (looked up once for all candidates).
        """
        limit = self.ranking.facts_per_candidate
        on_path = [p.target_fact for p in paths]
        own_by_id = {f.id: f for f in own}
        picked: list[Fact] = []
        own_by_id.update({fid: path_facts[fid] for fid in on_path if fid not in own_by_id and fid in path_facts})
        for fid in dict.fromkeys(on_path):
            if fid in own_by_id and len(picked) < limit:
                picked.append(own_by_id[fid])
        for f in own:
            if len(picked) >= limit:
                break
            if f not in picked:
                picked.append(f)
        return tuple(picked)

    def _explain(
        self,
        chosen: Sequence[str],
        titles: Mapping[str, Item],
        paths: dict[str, tuple[KGPath, ...]],
        own: dict[str, list[Fact]],
        liked_titles: dict[str, str],
        ctx: RankContext,
    ) -> tuple[dict[str, list[Reason]], dict[str, list[Fact]], dict[str, int]]:
        inputs = [
            ExplainInput(
                item_id=i,
                title=titles[i].title if i in titles else i,
                paths=paths.get(i, ()),
                own_facts=tuple(own.get(i, [])),
            )
            for i in chosen
        ]
        entities = sorted({p.entity for inp in inputs for p in inp.paths})
        n_items = max(self.store.stats().get("items", 0), 1)
        shares = {e: df / n_items for e, df in self.store.entity_degrees(entities).items()} if entities else {}
        cfg = self.explain_cfg
        reasons = {
            inp.item_id: template_reasons(inp, liked_titles, cfg.max_reasons, shares, cfg.max_share) for inp in inputs
        }
        usage: dict[str, int] = {}
        if self.explain_cfg.mode == "llm" and self.explainer is not None and self.explain_cfg.llm_items > 0:
            proposed, usage = self.explainer.explain(inputs[: self.explain_cfg.llm_items], ctx.history_titles)
            for item_id, reason in proposed.items():
                reasons[item_id].insert(0, reason)
        # every reason is checked against the store: cited facts must exist and touch the item
        wanted = {fid for rs in reasons.values() for r in rs for fid in (*r.fact_ids, *r.context_fact_ids)}
        stored = self.store.get_facts(sorted(wanted))
        kept: dict[str, list[Reason]] = {}
        cited: dict[str, list[Fact]] = {}
        for item_id, rs in reasons.items():
            good = [r for r in rs if is_grounded(r, item_id, stored)]
            dropped = len(rs) - len(good)
            if dropped:
                log.info("dropped %d ungrounded reason(s) for item %s", dropped, item_id)
            kept[item_id] = good[: self.explain_cfg.max_reasons]
            ids = dict.fromkeys(fid for r in kept[item_id] for fid in (*r.fact_ids, *r.context_fact_ids))
            cited[item_id] = [stored[fid] for fid in ids]
        return kept, cited, usage
