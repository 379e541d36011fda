"""`knowrec fit`: the sequential generator, the learned fusion, leakage, determinism, reload (hash embedder, no LLM).

Every test that needs a store runs on :mod:`knowrec.testing`'s in-memory graph store and item index (``memory``, a
unit test) and again on the embedded stores, a SQLite file and a Chroma folder (``disk``, marked ``integration``). The
fitted models go to the data dir (a temporary folder) either way.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knowrec import Recommender, Settings
from knowrec.agent.fusion import LearnedFusion
from knowrec.datasets import Dataset
from knowrec.errors import ConfigError
from knowrec.fitting import COLD_FUSION_DIR, FUSION_DIR, FittedModels, holdout_split
from knowrec.kg_store.base import GraphBatch, GraphStore
from knowrec.testing import InMemoryGraphStore, InMemoryItemIndex
from knowrec.types import Fact, Interaction, Item
from tests.fakes import HashEmbedder

N_ITEMS = 30
EXTRA = 4  # items 30..33 are in the catalogue but on no chain (the leakage test's validation and test items)
GENRES = ("Drama", "Comedy", "Western")

SMALL_FIT = {
    "threads": 1,
    "sequential": {"hidden": 16, "max_epochs": 12, "eval_every": 2, "patience": 2, "max_len": 20, "dropout": 0.2},
    "fusion": {"min_users": 5, "rounds": 30, "min_data_in_leaf": 5, "early_stopping": 10},
}


def chains(n_users: int = 80, seed: int = 7, tail: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Users walk the catalogue in order (item i is followed by i + 1): a pattern only order reveals."""
    rng = random.Random(seed)
    out = {}
    for u in range(n_users):
        start = rng.randrange(N_ITEMS)
        length = rng.randint(6, 12)
        out[f"u{u}"] = [str((start + k) % N_ITEMS) for k in range(length)] + list(tail)
    return out


def dataset(seqs: dict[str, list[str]]) -> Dataset:
    # every text distinct in length, so that no two items tie in the (approximate) vector search
    items = [
        Item(id=str(i), title=f"Film {i} ({1950 + i})", text=f"A {GENRES[i % 3]} film{' indeed' * i}.")
        for i in range(N_ITEMS + EXTRA)
    ]
    facts = [
        Fact(
            head=str(i),
            relation="genre",
            tail=f"genre:{GENRES[i % 3]}",
            head_label=f"Film {i}",
            tail_label=GENRES[i % 3],
        )
        for i in range(N_ITEMS)
    ] + [
        Fact(head=str(i), relation="director", tail=f"dbr:D{i // 4}", tail_label=f"Director {i // 4}")
        for i in range(N_ITEMS)
    ]
    interactions = [
        Interaction(user_id=u, item_id=i, rating=4.0 + (t % 2), timestamp=t)
        for u, seq in seqs.items()
        for t, i in enumerate(seq)
    ]
    return Dataset(name="chains", items=items, facts=facts, interactions=interactions)


@pytest.fixture(scope="module", params=["memory", pytest.param("disk", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def recommender(backend: str, settings: Settings, like: Recommender | None = None) -> Recommender:
    """A recommender on in-memory stores (``memory``) or on the SQLite file and Chroma folder of ``settings.data_dir``
    (``disk``). ``like``: another recommender whose stores this one opens again (its graph, its index)."""
    if backend == "disk":
        return Recommender(settings, embedder=HashEmbedder())
    if like is None:
        return Recommender(
            settings, store=InMemoryGraphStore(), index=InMemoryItemIndex(HashEmbedder()), embedder=HashEmbedder()
        )
    assert isinstance(like.store, InMemoryGraphStore)
    store = InMemoryGraphStore(same_graph_as=like.store)
    return Recommender(settings, store=store, index=like.index, embedder=HashEmbedder())


def small_settings(tmp: Path, fit: dict | None = None) -> Settings:
    """No LLM, small candidate pools, the quick fit."""
    return Settings(
        data_dir=tmp,
        progress=False,
        llm={"backend": "none"},
        ranker={"mode": "none"},
        retrieval={"ease_min_count": 1, "n_candidates": 10, "pool_size": 15},
        fit=fit or SMALL_FIT,
    )


def make(
    tmp: Path, seqs: dict[str, list[str]], fit: dict | None = None, ingest_fit: bool = True, *, backend: str
) -> Recommender:
    rec = recommender(backend, small_settings(tmp, fit))
    rec.ingest_dataset(dataset(seqs), fit=ingest_fit)
    return rec


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Recommender]:
    rec = make(tmp_path_factory.mktemp("fit"), chains(), backend=backend)
    yield rec
    rec.close()


def test_fit_writes_models_and_the_learned_fusion_orders_candidates(fitted: Recommender):
    info = fitted.models_info()
    assert info["fitted"] and info["fusion"] == "learned" and not info["stale"]
    manifest = json.loads((fitted.settings.models_path / "manifest.json").read_text())
    assert manifest["sequential"]["best_epoch"] >= 1 and manifest["sequential"]["curve"]
    assert manifest["fusion"]["groups_with_item"] >= 5
    r = fitted.recommend("u0", k=5, diversity=0.0)
    assert r.fusion == "learned" and len(r.items) == 5
    # the chain's next item is the sequential model's (and the fused list's) first pick
    last = fitted.pipeline("none").profile("u0").sequence[-1]
    assert r.items[0].item_id == str((int(last) + 1) % N_ITEMS)
    assert "sequential" in r.items[0].sources


def test_without_fitted_models_rrf_is_used_and_the_result_says_so(tmp_path: Path, backend: str):
    rec = make(tmp_path, chains(), ingest_fit=False, backend=backend)
    r = rec.recommend("u0", k=3)
    assert r.fusion == "rrf" and len(r.items) == 3
    assert rec.models_info()["fitted"] is False
    rec.close()


def test_unknown_users_and_empty_histories_still_work(fitted: Recommender):
    r = fitted.recommend("nobody", k=4)
    assert r.cold_start and len(r.items) == 4 and r.fusion == "learned"
    q = fitted.recommend(None, k=3, query="a Western film")
    assert len(q.items) == 3


def test_a_new_interaction_changes_the_next_answer_without_refitting(fitted: Recommender):
    pipe = fitted.pipeline("none")
    before = fitted.recommend("u1", k=3, diversity=0.0)
    seen = set(pipe.profile("u1").sequence)
    jump = next(str(i) for i in range(N_ITEMS) if str(i) not in seen and str((i + 1) % N_ITEMS) not in seen)
    fitted.store.write(GraphBatch(interactions=[Interaction(user_id="u1", item_id=jump, rating=5.0, timestamp=999)]))
    after = fitted.recommend("u1", k=3, diversity=0.0)
    assert [it.item_id for it in after.items] != [it.item_id for it in before.items]
    # the sequential model reads the new item as the latest one, with the same fitted weights
    q = fitted.pipeline("none").profile("u1")
    assert q.sequence[-1] == jump
    model = fitted.models.sequential
    assert model is not None
    assert not np.allclose(model.score(q.sequence), model.score(q.sequence[:-1]))


def test_fitted_models_reload_and_give_the_same_lists(fitted: Recommender, backend: str):
    again = recommender(backend, fitted.settings, like=fitted)
    for user in ("u2", "u3", "nobody"):
        a = [it.item_id for it in fitted.recommend(user, k=5).items]
        b = [it.item_id for it in again.recommend(user, k=5).items]
        assert a == b
    again.close()


def test_a_stale_or_broken_fitted_fusion_is_a_config_error_and_rrf_takes_over(fitted: Recommender, tmp_path: Path):
    folder = tmp_path / "models"
    shutil.copytree(fitted.settings.models_path, folder)
    meta_file = folder / FUSION_DIR / LearnedFusion.META_FILE
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "features": ["something", "else"]}))
    with pytest.raises(ConfigError, match="trained on other features"):
        LearnedFusion.load(folder / FUSION_DIR)
    (folder / COLD_FUSION_DIR / LearnedFusion.MODEL_FILE).write_text("not a LightGBM model")
    with pytest.raises(ConfigError, match="cannot read the fitted fusion"):
        LearnedFusion.load(folder / COLD_FUSION_DIR)
    models = FittedModels.load(folder)
    assert models.fusion is None and models.cold_fusion is None and models.constrained_fusion is not None


def test_fitting_is_deterministic_with_a_seed(tmp_path: Path, backend: str):
    a = make(tmp_path / "a", chains(), backend=backend)
    b = make(tmp_path / "b", chains(), backend=backend)
    ma = json.loads((a.settings.models_path / "manifest.json").read_text())
    mb = json.loads((b.settings.models_path / "manifest.json").read_text())
    assert ma["fusion"]["examples_sha1"] == mb["fusion"]["examples_sha1"]
    assert ma["sequential"]["curve"] == mb["sequential"]["curve"]
    wa, wb = a.models.sequential.state(), b.models.sequential.state()  # type: ignore[union-attr]
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    for user in ("u4", "u5"):
        assert [it.item_id for it in a.recommend(user, k=5).items] == [
            it.item_id for it in b.recommend(user, k=5).items
        ]
    a.close()
    b.close()


def test_the_fusion_never_trains_on_a_validation_or_test_item(tmp_path: Path, backend: str):
    """As in ``knowrec eval``'s test phase: the store holds train + validation item and ``protect_last=1``. Changing
    every user's validation and test items leaves the fusion's training examples (and early stopping) unchanged."""
    base = chains(seed=3)
    one = {u: [*s, "30", "31"] for u, s in base.items()}  # … + validation item + test item
    two = {u: [*s, "32", "33"] for u, s in base.items()}
    fit = {**SMALL_FIT, "protect_last": 1}
    stored_one = {u: s[:-1] for u, s in one.items()}  # the test item is never stored
    stored_two = {u: s[:-1] for u, s in two.items()}
    a = make(tmp_path / "a", stored_one, fit=fit, backend=backend)
    b = make(tmp_path / "b", stored_two, fit=fit, backend=backend)
    ma = json.loads((a.settings.models_path / "manifest.json").read_text())
    mb = json.loads((b.settings.models_path / "manifest.json").read_text())
    assert ma["data_fingerprint"] != mb["data_fingerprint"]  # the stores differ …
    assert ma["sequential_fingerprint"] == mb["sequential_fingerprint"]  # … the probe stage does not
    assert ma["fusion"]["examples_sha1"] == mb["fusion"]["examples_sha1"]
    # the cold-start models' examples too (their targets are the same held-out items)
    assert ma["fusion"]["cold"]["examples_sha1"] == mb["fusion"]["cold"]["examples_sha1"]
    assert ma["fusion"]["constrained"]["examples_sha1"] == mb["fusion"]["constrained"]["examples_sha1"]
    assert ma["sequential"]["curve"] == mb["sequential"]["curve"]
    # and the held-out labels are training items, never the protected validation item
    seqs = {u: [(i, 5.0) for i in s] for u, s in stored_one.items()}
    held = holdout_split(seqs, protect_last=1, per_user=5).heldout
    assert held and all([i for i, _ in held[u]] == base[u][-len(held[u]) :] for u in held)
    a.close()
    b.close()


def test_a_generic_format_dataset_fits_and_recommends(tmp_path: Path, backend: str):
    folder = tmp_path / "shop"
    folder.mkdir()
    seqs = chains(n_users=50, seed=11)
    (folder / "items.csv").write_text(
        "id,title,text\n" + "".join(f"p{i},Product {i},A {GENRES[i % 3]} thing\n" for i in range(N_ITEMS))
    )
    rows = [f"{u},p{i},,{t}\n" for u, seq in seqs.items() for t, i in enumerate(seq)]
    (folder / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(rows))
    (folder / "facts.tsv").write_text("".join(f"p{i}\tcategory\tcat:{i % 5}\n" for i in range(N_ITEMS)))
    settings = Settings(
        data_dir=tmp_path / "data",
        progress=False,
        llm={"backend": "none"},
        ranker={"mode": "none"},
        retrieval={"ease_min_count": 1, "n_candidates": 10, "pool_size": 15},
        fit=SMALL_FIT,
    )
    rec = recommender(backend, settings)
    rec.ingest(folder, format="generic")
    assert rec.models_info()["fitted"]
    r = rec.recommend("u0", k=5)
    assert len(r.items) == 5 and all(it.item_id.startswith("p") for it in r.items)
    rec.close()


def test_sasrec_baseline_and_pipeline_share_one_implementation():
    from knowrec.eval.baselines import SASRecScorer
    from knowrec.fitting.sequential import SequentialModel

    s = SASRecScorer(hidden=8, max_len=5, epochs=1)
    s.fit({"a": ["1", "2", "3"], "b": ["2", "3"]}, ["1", "2", "3"])
    assert isinstance(s.model, SequentialModel)
    assert s.score_all("a", ["1"]).shape == (3,)


def test_each_kind_of_request_gets_its_own_fusion(fitted: Recommender):
    """History → the main fusion; no history → the cold-start one; no history and fixed candidates (the chat's
    constraints) → the constrained cold-start one."""
    assert fitted.models.constrained_fusion is not None and fitted.models.cold_fusion is not None
    pipe = fitted.pipeline("none")
    used: list[str] = []

    class Spy:
        def __init__(self, inner, name: str) -> None:
            self.inner, self.name = inner, name

        def score(self, x):
            used.append(self.name)
            return self.inner.score(x)

    saved = pipe.fusion, pipe.cold_fusion, pipe.constrained_fusion
    pipe.fusion, pipe.cold_fusion, pipe.constrained_fusion = (
        Spy(saved[0], "main"),
        Spy(saved[1], "cold"),
        Spy(saved[2], "constrained"),
    )
    try:
        westerns = [str(i) for i in range(N_ITEMS) if GENRES[i % 3] == "Western"]
        fitted.recommend("u0", k=3, candidates=westerns)
        fitted.recommend(None, k=3, query="Western")
        r = fitted.recommend(None, k=3, query="Western", candidates=westerns)
    finally:
        pipe.fusion, pipe.cold_fusion, pipe.constrained_fusion = saved
    assert used == ["main", "cold", "constrained"]
    assert r.fusion == "learned" and {it.item_id for it in r.items} <= set(westerns)


def test_changing_the_constrained_settings_refits_that_model_alone(fitted: Recommender, tmp_path: Path, backend: str):
    fit = {**SMALL_FIT, "fusion": {**SMALL_FIT["fusion"], "constrained_users": 20}}
    rec = make(tmp_path, chains(), fit=fit, ingest_fit=False, backend=backend)
    manifest = rec.fit(reuse=[fitted.settings.models_path])
    before = json.loads((fitted.settings.models_path / "manifest.json").read_text())
    assert manifest["probe_fingerprint"] == before["probe_fingerprint"]
    assert "reused_from" in manifest["fusion"] and "reused_from" in manifest["sequential"]
    assert "fusion_constrained" in manifest["timings_s"] and "probe_sequential" not in manifest["timings_s"]
    assert manifest["fusion"]["constrained"]["fingerprint"] != before["fusion"]["constrained"]["fingerprint"]
    assert manifest["fusion"]["constrained"]["groups"] < before["fusion"]["constrained"]["groups"]
    assert rec.models.constrained_fusion is not None
    rec.close()


def test_a_fusion_fitted_over_other_facts_is_not_reused(fitted: Recommender, tmp_path: Path, backend: str):
    """The same interactions and settings, one triple more: the fusion is trained again (its KG features changed),
    the probe sequential model, fitted on the interactions alone, is reused."""
    rec = make(tmp_path, chains(), ingest_fit=False, backend=backend)
    rec.store.write(GraphBatch(facts=[Fact(head="0", relation="director", tail="p:someone")]))
    manifest = rec.fit(reuse=[fitted.settings.models_path])
    before = json.loads((fitted.settings.models_path / "manifest.json").read_text())
    assert manifest["sequential_fingerprint"] == before["sequential_fingerprint"]
    assert manifest["probe_fingerprint"] != before["probe_fingerprint"]
    assert "reused_from" not in manifest["fusion"] and "fusion" in manifest["timings_s"]
    assert "reused_from" in manifest["sequential"]
    rec.close()


def test_scoring_threads_restore_the_torch_thread_count():
    """One history is scored on one torch thread; concurrent scorers must leave the process-wide count as it was."""
    import random
    import threading
    import time

    import torch

    from knowrec.fitting.sequential import _one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []

        def score() -> None:
            for _ in range(20):
                with _one_thread(True):
                    seen.append(torch.get_num_threads())
                    time.sleep(random.random() / 500)

        threads = [threading.Thread(target=score) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_facts_retrieval_sees_enter_the_probe_fingerprint(tmp_path: Path, backend: str):
    """A fusion trained over other facts is not reused: a triple of the data changed, or facts read from text. The last
    check opens the graph again reading the dataset's facts only: a second in-memory store on the same graph
    (``memory``), the SQLite file opened again (``disk``)."""
    from knowrec.fitting import facts_fingerprint
    from knowrec.kg_store.sqlite import SQLiteGraphStore

    path = tmp_path / "g.sqlite"
    memory = InMemoryGraphStore()
    store: GraphStore = memory if backend == "memory" else SQLiteGraphStore(path)
    items = [Item(id="1", title="A"), Item(id="2", title="B")]
    store.write(GraphBatch(items=items, facts=[Fact(head="1", relation="director", tail="p:x")]))
    data_only = facts_fingerprint(store, ["1", "2"])
    assert len(data_only) == 16 and facts_fingerprint(store, ["2", "1"]) == data_only
    store.write(GraphBatch(facts=[Fact(head="2", relation="director", tail="p:z")]))  # the data's triples changed
    more = facts_fingerprint(store, ["1", "2"])
    assert more != data_only
    store.write(GraphBatch(facts=[Fact(head="2", relation="director", tail="p:x", source="llm")]))
    with_text = facts_fingerprint(store, ["1", "2"])
    assert with_text not in (data_only, more)
    store.close()
    if backend == "memory":
        dataset_only: GraphStore = InMemoryGraphStore(fact_sources={"dataset"}, same_graph_as=memory)
    else:
        dataset_only = SQLiteGraphStore(path, fact_sources={"dataset"})
    assert facts_fingerprint(dataset_only, ["1", "2"]) == more  # what retrieval sees: the text's facts left out


def test_the_shipped_demo_models_match_the_code():
    """The bundled demo's fitted models are what `knowrec demo` reuses on its first run; after a change to the fusion's
    features or the fitting defaults they must be rebuilt (scripts/build_demo_models.py), or the first run fits
    everything again (tens of minutes instead of about three)."""
    from knowrec.config import FitConfig
    from knowrec.datasets import demo_models_path
    from knowrec.fitting import CONSTRAINED_FUSION_DIR, MANIFEST_FILE

    folder = demo_models_path()
    for name in (FUSION_DIR, COLD_FUSION_DIR, CONSTRAINED_FUSION_DIR):
        LearnedFusion.load(folder / name)  # ConfigError when trained on other features
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    defaults = FitConfig().model_dump(mode="json")
    for part in ("fusion", "sequential", "holdout_min_len", "holdout_per_user", "seed"):
        assert manifest["config"][part] == defaults[part], part
    assert manifest["fusion_fitted"] is True


def test_a_validation_item_tied_in_time_is_protected_wherever_the_store_puts_it(tmp_path: Path, backend: str):
    """``knowrec eval``'s test phase: the validation item shares its timestamp with the last training item, and was
    written before it (the store keeps equal timestamps in write order), so it is not the last stored item.
    Protected by id, it is never a label: the probe stage is exactly the validation phase's (so that phase's fusion
    is reused); cutting the last stored item instead (``protect_last=1``) would cut a training item and make the
    validation item a label. (The harness writes each user's items in the split's order; a store from before schema
    v3 tied them by item id, which put 41 of 610 ml-latest-small validation items before a training item.)"""
    base = chains(seed=5)
    val = str(N_ITEMS)

    def stored(with_val: bool) -> Dataset:
        ds = dataset(base)
        if not with_val:
            return ds
        tied = [Interaction(user_id=u, item_id=val, rating=5.0, timestamp=len(s) - 1) for u, s in base.items()]
        return Dataset(name=ds.name, items=ds.items, facts=ds.facts, interactions=[*tied, *ds.interactions])

    def fit(folder: Path, ds: Dataset, **kw: Any) -> dict[str, Any]:
        rec = recommender(backend, small_settings(folder, {**SMALL_FIT, **kw.pop("cfg", {})}))
        rec.ingest_dataset(ds, fit=False)
        if "history" in kw:
            kw.pop("history").update({u: [x.item_id for x in reversed(rec.store.history(u))] for u in base})
        manifest = rec.fit(**kw)
        rec.close()
        return manifest

    history: dict[str, list[str]] = {}
    val_phase = fit(tmp_path / "val", stored(False))
    test_phase = fit(tmp_path / "test", stored(True), protect={u: {val} for u in base}, history=history)
    assert any(h[-1] != val for h in history.values()), "no validation item was stored before a training item"
    assert test_phase["protected_items"] == len(base)
    assert test_phase["sequential_fingerprint"] == val_phase["sequential_fingerprint"]
    assert test_phase["probe_fingerprint"] == val_phase["probe_fingerprint"]
    assert test_phase["fusion"]["examples_sha1"] == val_phase["fusion"]["examples_sha1"]
    by_last = fit(tmp_path / "last", stored(True), cfg={"protect_last": 1})
    assert by_last["sequential_fingerprint"] != val_phase["sequential_fingerprint"]
