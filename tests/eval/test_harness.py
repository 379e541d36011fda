"""The runner end to end on a small generic dataset, resumability, and golden floors on ml-latest-small.

A harness run builds its stores on disk (a SQLite file and a Chroma folder per phase, under the run's folder) and
embeds the catalogue with the bundled embedding model: the tests that run the harness (:func:`tiny_run` and the tests
on it, P4, the golden floors) are marked ``integration``. The tests of the configuration, the report's tables and the
harness's choices on a faked recommender are unit tests.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from knowrec.agent.llm.base import LLMClient
from knowrec.config import Settings
from knowrec.errors import InvalidInput
from knowrec.eval import baselines
from knowrec.eval import harness as harness_module
from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness
from knowrec.eval.report import _p3_section
from knowrec.recommender import Recommender
from knowrec.testing import InMemoryGraphStore, InMemoryItemIndex
from tests.fakes import HashEmbedder

GENRES = ["Drama", "Comedy", "Horror", "Sci-Fi"]
PEOPLE = ["Ann Lee", "Bo Chen", "Cy Diaz", "Di Eze", "Ed Fox", "Flo Gu"]


def write_generic(folder: Path) -> None:
    """24 items with genre and director facts; 30 users whose tastes follow genres, with timestamps."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    items = [(str(i), f"Film {i}", GENRES[i % 4], PEOPLE[i % 6]) for i in range(24)]
    (folder / "items.csv").write_text(
        "id,title,text\n" + "".join(f"{i},{t},A {g} film by {p}\n" for i, t, g, p in items)
    )
    (folder / "facts.tsv").write_text(
        "".join(f"{i}\tgenre\tgenre:{g}\t{t}\t{g}\n{i}\tdirector\tperson:{p}\t{t}\t{p}\n" for i, t, g, p in items)
    )
    rows = ["user_id,item_id,rating,timestamp"]
    for u in range(30):
        # a few random items first, then the user's genre: the held-out (latest) items follow the taste
        liked = rng.sample([i for i, *_ in items], 3) + [i for i, _, g, _ in items if g == GENRES[u % 4]]
        for ts, item in enumerate(dict.fromkeys(liked)):
            rows.append(f"u{u},{item},{rng.choice([3, 4, 5])},{1000 + ts}")
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")


def write_config(tmp: Path, **overrides: str) -> Path:
    data = tmp / "data"
    write_generic(data)
    text = f"""
[run]
name = "tiny"
out = "{tmp / "run"}"
seed = 3
llm_users = "all"

[dataset]
source = "generic"
path = "{data}"
min_uc = 3
min_sc = 3

[protocols]
names = {overrides.get("names", '["p1", "p2", "p3"]')}
{overrides.get("protocols", "")}
p1_negatives = 5
list_len = 10
p3_cutoffs = [5, 10, 20]

[systems]
baselines = {overrides.get("baselines", '["random", "mostpop", "itemknn", "ease"]')}
pipeline = {overrides.get("pipeline", '["retrieval-only", "no-llm"]')}
{overrides.get("systems", "")}
"""
    path = tmp / "run.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A whole harness run (its stores on disk, the bundled embedder): only for tests marked ``integration``."""
    tmp = tmp_path_factory.mktemp("tiny")
    cfg = load_config(write_config(tmp))
    results = Harness(cfg).run()
    return tmp / "run", results


@pytest.mark.integration
def test_runner_writes_results_report_plots_and_candidates(tiny_run):
    out, results = tiny_run
    assert (out / "results.json").exists() and (out / "report.md").exists()
    assert (out / "p2-NDCG10.png").exists() and (out / "latency-p2.png").exists()
    cands = json.loads((out / "p1-candidates-test.json").read_text())
    assert all(len(v) == 6 for v in cands.values())
    systems = results["systems"]
    assert set(systems) == {"random", "mostpop", "itemknn", "ease", "retrieval-only", "no-llm"}
    for entry in systems.values():
        assert entry["protocols"]["p1"]["users"] == results["dataset"]["users"]
        assert 0.0 <= entry["protocols"]["p2"]["metrics"]["NDCG@10"] <= 1.0
    q = systems["no-llm"]["protocols"]["p2"]["quality"]
    assert q["out_of_candidate_rate"] == 0 and q["duplicate_rate"] == 0 and q["grounding_rate"] == 1.0
    assert "kg:Recall@10" in systems["retrieval-only"]["protocols"]["p3"]["metrics"]
    assert "grid" in systems["ease"]["meta"]  # the tuning table is recorded
    report = (out / "report.md").read_text()
    assert "P1 sampled-20" in report and "Beyond accuracy" in report and "Tuning" in report
    # the test phase protects every user's validation item by id and so reuses the validation phase's fusion
    manifest = json.loads((out / "stores" / "test" / "models" / "manifest.json").read_text())
    assert manifest["protected_items"] == results["dataset"]["users"]
    assert manifest["fusion"]["reused_from"] == str(out / "stores" / "val" / "models")


def p3_section(report: str) -> list[str]:
    """The lines of the report's P3 section (from its heading to the next one)."""
    lines = report.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith("## P3")]
    assert len(starts) == 1, f"one P3 section expected, found {len(starts)}"
    end = next((n for n in range(starts[0] + 1, len(lines)) if lines[n].startswith("## ")), len(lines))
    return lines[starts[0] : end]


@pytest.mark.integration
def test_p3_is_one_table_of_the_generators_and_the_baselines(tiny_run):
    out, results = tiny_run
    section = p3_section((out / "report.md").read_text())
    tables = [line for line in section if line.startswith("| system")]
    assert tables == ["| system | list | users | Recall@5 | Recall@10 | Recall@20 |"], section
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in section if line.startswith("| ")}
    generators = {k.split(":")[0] for k in results["systems"]["retrieval-only"]["protocols"]["p3"]["metrics"]}
    baselines = ["random", "mostpop", "itemknn", "ease"]
    assert {("retrieval-only", g) for g in generators} | {(b, "full ranking") for b in baselines} == set(rows) - {
        ("system", "list")
    }
    for line in rows.values():  # every row is filled: the users and one number per cutoff, none missing
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 6 and "—" not in cells and cells[2] != "", line
    baseline = results["systems"]["ease"]["protocols"]["p3"]["metrics"]
    ease = f"| ease | full ranking | {results['users_evaluated']} | " + " | ".join(
        f"{baseline[f'Recall@{c}']:.4f}" for c in (5, 10, 20)
    )
    assert ease + " |" in section


def test_the_p3_table_merges_cutoffs_and_is_left_out_without_p3():
    res = {
        "systems": {
            "ease": {"protocols": {"p3": {"users": 4, "metrics": {"Recall@20": 0.5, "Recall@50": 0.75}}}},
            "no-llm": {"protocols": {"p2": {"users": 4, "metrics": {"NDCG@10": 0.1}}}},
            "retrieval-only": {
                "protocols": {
                    "p3": {
                        "users": 4,
                        "metrics": {"fused:Recall@20": 0.75, "kg:Recall@20": 0.25, "kg:Recall@100": 0.5, "x": 1.0},
                    }
                }
            },
        }
    }
    assert _p3_section(res) == [
        "## P3 retrieval recall",
        "",
        "Recall of the test item in each candidate list: the pipeline's generators alone and fused, and each "
        "baseline's full ranking cut at the same lengths.",
        "",
        "| system | list | users | Recall@20 | Recall@50 | Recall@100 |",
        "|---|---|---|---|---|---|",
        "| retrieval-only | kg | 4 | 0.2500 | — | 0.5000 |",
        "| retrieval-only | fused | 4 | 0.7500 | — | — |",
        "| ease | full ranking | 4 | 0.5000 | 0.7500 | — |",
        "",
    ]
    assert _p3_section({"systems": {"no-llm": res["systems"]["no-llm"]}}) == []


@pytest.mark.integration
def test_taste_structure_is_learned(tiny_run):
    _, results = tiny_run
    p2 = {n: e["protocols"]["p2"]["metrics"]["NDCG@10"] for n, e in results["systems"].items()}
    assert p2["ease"] > p2["random"]
    assert p2["retrieval-only"] > p2["random"]


@pytest.mark.integration
def test_resume_recomputes_nothing(tiny_run, monkeypatch):
    out, results = tiny_run

    def boom(*args, **kwargs):
        raise AssertionError("a finished user was recomputed")

    monkeypatch.setattr(Recommender, "recommend", boom)
    monkeypatch.setattr(baselines, "tune", boom)
    for cls in baselines.BASELINES.values():
        monkeypatch.setattr(cls, "score_all", boom)
    cfg = load_config(out.parent / "run.toml")
    again = Harness(cfg).run()
    for name in results["systems"]:
        assert again["systems"][name]["protocols"] == results["systems"][name]["protocols"]


@pytest.mark.integration
def test_interrupted_run_resumes_from_the_cache(tiny_run, monkeypatch):
    out, results = tiny_run
    cache = out / "cache" / "mostpop" / "p2.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:10])  # lost the last users, one line cut mid-write
    calls = []
    real = baselines.MostPopScorer.score_all

    def counting(self, user, history):  # type: ignore[no-untyped-def]
        calls.append(user)
        return real(self, user, history)

    monkeypatch.setattr(baselines.MostPopScorer, "score_all", counting)
    again = Harness(load_config(out.parent / "run.toml")).run()
    assert len(set(calls)) == 3
    before, after = results["systems"]["mostpop"]["protocols"]["p2"], again["systems"]["mostpop"]["protocols"]["p2"]
    assert after["users"] == before["users"] and after["metrics"] == before["metrics"]


@pytest.mark.integration
def test_p4_plays_the_same_script_to_every_system_and_leaves_the_store_alone(tmp_path: Path, monkeypatch):
    from knowrec.eval.simulator import says_title

    path = write_config(
        tmp_path,
        names='["p4"]',
        protocols="p4_users = 8\np4_turns = 4\np4_k = 3\np4_more_rate = 0.4",
        baselines="[]",
        pipeline="[]",
        systems='conversational = ["no-llm", "constrained-pop"]',
    )
    cfg = load_config(path)
    harness = Harness(cfg)
    ctx = harness.load()
    results = harness.run()
    out = tmp_path / "run"
    p4 = results["p4"]
    assert set(p4) == {"no-llm", "constrained-pop"} and all(e["users"] == 8 for e in p4.values())
    records = {
        name: {
            json.loads(x)["user"]: json.loads(x) for x in (out / "cache" / name / "p4.jsonl").read_text().splitlines()
        }
        for name in p4
    }
    titles = {it.id: it.title for it in ctx.dataset.items}
    for user, a in records["no-llm"].items():
        b = records["constrained-pop"][user]
        said_a, said_b = [t["say"] for t in a["dialogue"]], [t["say"] for t in b["dialogue"]]
        n = min(len(said_a), len(said_b))
        assert said_a[:n] == said_b[:n]  # the same script until one of them shows the target
        assert a["target"] == ctx.split.test[user]
        assert not any(says_title(x, titles[a["target"]]) for x in said_a + said_b)
        for rec in (a, b):
            assert all(len(t["items"]) <= 3 for t in rec["dialogue"])
            assert (rec["success_turn"] is not None) == any(t["hit"] for t in rec["dialogue"])
    # what the simulated users said ("None of these.") was never written into the test store as a rating
    rec = harness.recommender(ctx, "test", fitted=False)
    stored = {(x.user_id, x.item_id, x.rating) for x in rec.store.interactions()}
    rec.close()
    expected = {(x.user_id, x.item_id, x.rating) for seq in ctx.sequences.values() for x in seq[:-1]}
    assert stored == expected
    report = (out / "report.md").read_text()
    assert "P4 conversations" in report and "turns to success" in report

    def boom(*args, **kwargs):
        raise AssertionError("a finished dialogue was played again")

    monkeypatch.setattr(Recommender, "chat", boom)
    again = Harness(load_config(path)).run()
    assert again["p4"]["no-llm"]["metrics"] == p4["no-llm"]["metrics"]


def test_bad_config_names_file_and_field(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[systems]\nbaselines = ["oracle"]\n')
    with pytest.raises(InvalidInput, match=r"bad\.toml.*systems\.baselines"):
        load_config(bad)
    bad.write_text('[dataset]\nsource = "generic"\n')
    with pytest.raises(InvalidInput, match=r"dataset\.path"):
        load_config(bad)
    bad.write_text("[run\n")
    with pytest.raises(InvalidInput, match="TOML"):
        load_config(bad)


@pytest.mark.integration
@pytest.mark.slow
def test_golden_floors_on_ml_latest_small(tmp_path: Path):
    cfg_path = tmp_path / "golden.toml"
    cfg_path.write_text(
        '[run]\nout = "run"\n[protocols]\nnames = ["p2"]\n[systems]\nbaselines = ["random", "mostpop", "ease"]\n'
        "pipeline = []\n"
    )
    results = Harness(load_config(cfg_path)).run()
    ndcg = {n: e["protocols"]["p2"]["metrics"]["NDCG@10"] for n, e in results["systems"].items()}
    assert results["dataset"] == {"users": 610, "items": 3650, "interactions": 90274}
    assert ndcg["mostpop"] > ndcg["random"]
    assert ndcg["ease"] > ndcg["mostpop"]
    assert ndcg["mostpop"] == pytest.approx(0.0205, abs=0.002)  # BENCHMARKS.md reference


def test_a_tuned_systems_llm_weight_uses_its_settings_and_is_chosen_again_for_more_users(tmp_path: Path, monkeypatch):
    from types import SimpleNamespace

    from knowrec.eval.config import PIPELINE_SYSTEMS

    base = load_config(write_config(tmp_path, pipeline='["tuned-no-facts"]'))

    def harness(ablation: int | str) -> tuple[Harness, list]:  # type: ignore[type-arg]
        cfg = base.model_copy(update={"systems": base.systems.model_copy(update={"ablation_users": ablation})})
        h = Harness(cfg)
        calls: list = []  # type: ignore[type-arg]

        def recommend(user: str, k: int, diversity: float) -> SimpleNamespace:
            calls.append(user)
            items = [SimpleNamespace(item_id=str(i), retrieval_score=1 - i / 10, llm_score=i / 10) for i in range(5)]
            return SimpleNamespace(items=items, fallback=False)

        fake = SimpleNamespace(
            settings=SimpleNamespace(ranker=SimpleNamespace(rerank_top=5)), recommend=recommend, close=lambda: None
        )
        monkeypatch.setattr(
            h, "recommender", lambda ctx, phase, overrides=None, **kw: (h.asked.append(overrides), fake)[1]
        )
        h.asked = []  # type: ignore[attr-defined]
        return h, calls

    h, calls = harness(5)
    ctx = h.load()
    # ablation_users cuts only the ablations; other tuned systems (a second adapter) keep every tuned user
    assert len(h.tuned_users(ctx, "tuned-no-facts")) == 5
    assert len(h.tuned_users(ctx, "tuned-shuffled")) == len(h.tuned_users(ctx, "knowrec-tuned")) > 5
    settings = PIPELINE_SYSTEMS["tuned-no-facts"]["settings"]
    meta = h.tune_llm_weight(ctx, "tuned-no-facts", tmp_path / "adapter", settings)
    # its own prompt settings (no facts) and its adapter, on its 5 users
    assert h.asked[0]["ranker"]["facts_per_candidate"] == 0 and h.asked[0]["llm"]["adapter"] == str(
        tmp_path / "adapter"
    )
    assert meta["users"] == 5 and len(calls) == 5
    h2, calls2 = harness("all")
    meta2 = h2.tune_llm_weight(ctx, "tuned-no-facts", tmp_path / "adapter", settings)
    assert meta2["users"] == len(ctx.llm_users)  # the cached choice on 5 users is not reused for all of them …
    assert len(calls2) == len(ctx.llm_users) - 5  # … and the 5 users' lists are


def test_extracted_facts_join_the_dataset_and_change_the_fingerprint(tmp_path: Path):
    plain = load_config(write_config(tmp_path))
    harness = Harness(plain)
    ctx = harness.load()
    before = harness._fingerprint(ctx)
    results = tmp_path / "extract" / "results.jsonl"
    results.parent.mkdir()
    key = {"model": "m", "prompt": "kg_extract@1"}
    fact = {
        "relation": "starring",
        "object": "Ann Lee",
        "entity": "kx:person/ann_lee",
        "label": "Ann Lee",
        "evidence": "x",
    }
    results.write_text(
        json.dumps({"item": "3", "key": key, "facts": [fact]}) + "\n"
        + json.dumps({"item": "not-an-item", "key": key, "facts": [fact]}) + "\n"
    )  # fmt: skip
    cfg_path = tmp_path / "with.toml"
    cfg_path.write_text(
        (tmp_path / "run.toml")
        .read_text()
        .replace("min_uc = 3", 'min_uc = 3\nextracted_facts = "extract/results.jsonl"')
    )
    with_facts = load_config(cfg_path)
    assert with_facts.dataset.extracted_facts == tmp_path / "extract" / "results.jsonl"  # relative to the file
    h2 = Harness(with_facts)
    ctx2 = h2.load()
    added = [f for f in ctx2.dataset.facts if f.source == "llm"]
    assert [(f.head, f.tail, f.head_label) for f in added] == [("3", "kx:person/ann_lee", "Film 3")]
    assert added[0].provenance is not None and added[0].provenance.model == "m"
    assert h2._fingerprint(ctx2) != before  # its stores are its own
    assert Harness(load_config(tmp_path / "run.toml"))._fingerprint(ctx) == before


@pytest.mark.parametrize("backend", ["memory", pytest.param("disk", marks=pytest.mark.integration)])
def test_reuse_stores_is_relative_to_the_config_and_offered_to_the_fit(tmp_path: Path, monkeypatch, backend: str):
    """``memory``: the harness's recommenders run on in-memory stores and the hash embedder; ``disk``: on the stores
    the harness builds under the run's folder, with the bundled embedder."""
    if backend == "memory":

        def in_memory(settings: Settings, embedder: object = None, llm: LLMClient | None = None) -> Recommender:
            return Recommender(
                settings,
                store=InMemoryGraphStore(),
                index=InMemoryItemIndex(HashEmbedder()),
                embedder=HashEmbedder(),
                llm=llm,
            )

        monkeypatch.setattr(harness_module, "Recommender", in_memory)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("seed = 3", 'seed = 3\nreuse_stores = "other/stores"'))
    cfg = load_config(path)
    assert cfg.run.reuse_stores == tmp_path / "other" / "stores"
    offered: list[list[Path]] = []

    def fake_fit(self, progress=None, reuse=None, protect=None):
        offered.append(list(reuse or []))
        raise RuntimeError("stop here")

    monkeypatch.setattr("knowrec.recommender.Recommender.fit", fake_fit)
    harness = Harness(cfg)
    with pytest.raises(RuntimeError, match="stop here"):
        harness.recommender(harness.load(), "val")
    assert offered == [[tmp_path / "other" / "stores" / "val" / "models"]]


@pytest.mark.integration
def test_the_stores_keep_the_splits_order_where_timestamps_tie(tmp_path: Path):
    """Each user's last three items share one second, written in the file in no order: the split orders them by
    item id numerically (9, 10, 23: validation 10, test 23) and the stores must read them back in that order, so
    the validation item is the test store's latest item (text order would put "9" last, a store tying by item id
    read the validation item as older than a training item)."""
    path = write_config(tmp_path)
    rng = random.Random(11)
    rows = ["user_id,item_id,rating,timestamp"]
    for u in range(24):
        tied = [["9", "10", "23"], ["2", "11", "20"], ["5", "12", "21"]][u % 3]
        rest = rng.sample([str(i) for i in range(24) if str(i) not in tied], 6)
        rows += [f"u{u},{item},4,{1000 + k}" for k, item in enumerate(rest)]
        rows += [f"u{u},{item},5,5000" for item in rng.sample(tied, 3)]
    (tmp_path / "data" / "interactions.csv").write_text("\n".join(rows) + "\n")
    harness = Harness(load_config(path))
    ctx = harness.load()
    assert all(ctx.split.val[u] in ("10", "11", "12") for u in ctx.split.users)
    for phase in ("val", "test"):
        rec = harness.recommender(ctx, phase, fitted=False)
        stored: dict[str, list[str]] = {}
        for x in rec.store.interactions():
            stored.setdefault(x.user_id, []).append(x.item_id)
        latest = {u: rec.store.history(u, 1)[0].item_id for u in ctx.split.users}
        rec.close()
        want = {u: ctx.split.train[u] + ([ctx.split.val[u]] if phase == "test" else []) for u in ctx.split.users}
        assert stored == want
        assert latest == {u: seq[-1] for u, seq in want.items()}
    assert latest == ctx.split.val


def _noisy(rng: random.Random, base: dict[str, float], shift: float, noise: float) -> dict[str, float]:
    return {u: v + shift + rng.gauss(0.0, noise) for u, v in base.items()}


def test_the_llm_weight_must_beat_weight_zero_on_validation_to_be_chosen():
    from knowrec.eval.harness import choose_llm_weight

    rng = random.Random(0)
    zero = {str(u): rng.random() for u in range(400)}
    grid = [0.0, 0.1, 0.3, 0.5, 1.0]
    # a tie, or a small noisy edge, at every weight: the grid's maximum is not 0, but nothing beats 0
    flat = {w: (zero if w == 0.0 else _noisy(rng, zero, 0.0, 0.05)) for w in grid}
    meta = choose_llm_weight(flat)
    assert meta["best"] != 0.0 and meta["llm_weight"] == 0.0 and meta["test"]["p_t"] >= meta["threshold"]
    assert choose_llm_weight(flat, "max")["llm_weight"] == meta["best"]  # the old rule took the noise
    # a real gain at 0.3 (every user a little better) is taken
    gain = {**flat, 0.3: _noisy(rng, zero, 0.02, 0.01)}
    meta = choose_llm_weight(gain)
    assert meta["llm_weight"] == 0.3 and meta["test"]["p_t"] < meta["threshold"]
    # exact ties go to the smaller weight; a loss is never chosen
    assert choose_llm_weight({0.0: zero, 0.5: dict(zero), 1.0: dict(zero)})["llm_weight"] == 0.0
    assert choose_llm_weight({0.0: zero, 0.5: _noisy(rng, zero, -0.02, 0.01)})["llm_weight"] == 0.0
    # Bonferroni: an edge significant at 0.05 with one weight tried is not with four
    edge = _noisy(random.Random(7), zero, 0.003, 0.03)
    one = choose_llm_weight({0.0: zero, 0.5: edge})
    four = choose_llm_weight({0.0: zero, 0.1: zero, 0.2: zero, 0.3: zero, 0.5: edge})
    assert 0.05 / 4 <= one["test"]["p_t"] < 0.05
    assert one["llm_weight"] == 0.5 and four["llm_weight"] == 0.0


def test_a_new_weight_rule_is_applied_to_cached_validation_lists_and_retires_stale_test_lists(tmp_path: Path):
    cfg = load_config(write_config(tmp_path, pipeline='["knowrec"]'))
    h = Harness(cfg)
    ctx = h.load()

    def no_store(*args: object, **kw: object) -> None:
        raise AssertionError("the cached validation lists need no recommender")

    h.recommender = no_store  # type: ignore[method-assign]
    folder = h.out / "cache" / "knowrec"
    folder.mkdir(parents=True)
    with (folder / "val-p2.jsonl").open("w") as fh:  # the LLM puts the validation item last: it only loses
        for user in ctx.llm_users:
            val = ctx.split.val[user]
            retrieval = [val] + [f"x{i}" for i in range(4)]
            llm = {item: (0.0 if item == val else 0.5) for item in retrieval}
            fh.write(json.dumps({"user": user, "retrieval": retrieval, "llm": llm, "fallback": False}) + "\n")
    (folder / "weight.json").write_text(json.dumps({"llm_weight": 1.0, "grid": [], "users": len(ctx.llm_users)}))
    meta = h.tune_llm_weight(ctx)  # a choice made under the old rule (no "rule" recorded) is made again
    assert meta["rule"] == "paired" and meta["llm_weight"] == 0.0 and meta["users"] == len(ctx.llm_users)
    assert json.loads((folder / "weight.json").read_text())["llm_weight"] == 0.0

    # the test lists a run cached at the old weight (recorded in its results.json) are not reused at the new one
    old = {"retrieval": {"fusion": "learned"}, "ranker": {"llm_weight": 1.0}}
    (h.out / "results.json").write_text(json.dumps({"systems": {"knowrec": {"meta": {"settings": old, "call": {}}}}}))
    (folder / "p2.jsonl").write_text('{"user": "u1"}\n')
    h._retire_stale_lists("knowrec", {"retrieval": {"fusion": "learned"}, "ranker": {"llm_weight": 0.0}}, {}, "s1")
    assert not (folder / "p2.jsonl").exists() and (folder / "stale" / "p2.jsonl").exists()
    (folder / "p2.jsonl").write_text('{"user": "u1"}\n')  # made again at 0.0: kept while the settings hold
    h._retire_stale_lists("knowrec", {"retrieval": {"fusion": "learned"}, "ranker": {"llm_weight": 0.0}}, {}, "s1")
    assert (folder / "p2.jsonl").exists()
    adapter = {"llm": {"adapter": "/elsewhere/adapters/main"}, "ranker": {"llm_weight": 0.0}}
    h._retire_stale_lists("knowrec", {**adapter, "llm": {"adapter": "adapters/main"}}, {}, "s1")
    (folder / "p2.jsonl").write_text('{"user": "u1"}\n')
    h._retire_stale_lists("knowrec", adapter, {}, "s1")  # the same adapter named from another folder
    assert (folder / "p2.jsonl").exists()
    h._retire_stale_lists("knowrec", adapter, {}, "s2")  # the same settings over another store
    assert not (folder / "p2.jsonl").exists()
    # a record from before the store was part of it: its lists were made over a store that tied by item id
    (folder / "p2.jsonl").write_text('{"user": "u1"}\n')
    (folder / "settings.json").write_text(json.dumps({"settings": adapter, "call": {}}))
    h._retire_stale_lists("knowrec", adapter, {}, "s2")
    assert not (folder / "p2.jsonl").exists()
    assert json.loads((folder / "settings.json").read_text())["store"] == "s2"
