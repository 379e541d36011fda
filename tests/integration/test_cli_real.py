"""The CLI against the real bundled model, embedder and Chroma (a slice of the demo data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowrec import Settings
from knowrec.kg_store.sqlite import SQLiteGraphStore
from tests.integration.conftest import DEMO_USERS, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_ingests_on_first_run_and_prints_reasons(demo_run):
    data_dir, result = demo_run
    assert result.returncode == 0, result.stderr
    assert "First run" in result.stdout and "ingested" in result.stdout
    assert "user 1" in result.stdout
    assert "Directed by" in result.stdout or "Stars" in result.stdout or "like" in result.stdout
    assert f"{DEMO_USERS} users" in result.stdout
    # a second run does not ingest again
    again = run_cli("demo", "--users", "2", "--k", "2", "--data-dir", str(data_dir), "--mode", "none")
    assert again.returncode == 0, again.stderr
    assert "First run" not in again.stdout and "user 2" in again.stdout


def test_recommend_json_gives_ten_distinct_grounded_items(demo_dir: Path):
    result = run_cli("recommend", "1", "--json", "--data-dir", str(demo_dir))
    assert result.returncode == 0, result.stderr
    rec = json.loads(result.stdout)
    items = rec["items"]
    assert len(items) == 10
    assert len({it["item_id"] for it in items}) == 10
    assert rec["ranking_mode"] == "verbalizer"
    assert rec["model"].startswith("SmolLM2")
    assert (rec["prompt_id"], rec["prompt_version"]) == ("rank_verbalizer", "2")
    assert set(rec["timings_ms"]) >= {"profile", "retrieve", "facts", "rank", "diversify", "explain", "total"}
    store = SQLiteGraphStore(Settings(data_dir=demo_dir).graph_path)
    seen = {x.item_id for x in store.history("1")}
    for it in items:
        assert it["item_id"] not in seen
        assert it["reasons"], f"item {it['item_id']} has no reason"
        cited = [fid for r in it["reasons"] for fid in r["fact_ids"]]
        stored = store.get_facts(cited)
        assert cited and set(cited) == set(stored)
        assert all(it["item_id"] in (f.head, f.tail) for f in stored.values())
        assert {f["id"] for f in it["facts"]} >= set(cited)
    store.close()


def test_recommend_unknown_user_is_cold_start(demo_dir: Path):
    result = run_cli("recommend", "no-such-user", "--json", "--k", "4", "--mode", "none", "--data-dir", str(demo_dir))
    assert result.returncode == 0, result.stderr
    rec = json.loads(result.stdout)
    assert rec["cold_start"] is True and len(rec["items"]) == 4
    assert all("popularity" in it["sources"] for it in rec["items"])


def test_cli_errors_are_one_line(tmp_path: Path, demo_dir: Path):
    empty = run_cli("recommend", "1", "--data-dir", str(tmp_path / "empty"))
    assert empty.returncode == 1
    assert empty.stderr.strip().count("\n") == 0 and "ingest data first" in empty.stderr
    assert "Traceback" not in empty.stderr
    missing = run_cli("ingest", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "x"))
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
    bad_mode = run_cli("recommend", "1", "--mode", "psychic", "--data-dir", str(demo_dir))
    assert bad_mode.returncode == 1 and "ranker.mode" in bad_mode.stderr
    assert "Traceback" not in bad_mode.stderr
    no_data = run_cli("tune", "--out", str(tmp_path / "adapter"), "--data-dir", str(tmp_path / "empty2"))
    assert no_data.returncode == 1 and "nothing to tune on" in no_data.stderr
    assert no_data.stderr.strip().count("\n") == 0
    bad_rank = run_cli("tune", "--out", str(tmp_path / "adapter"), "--rank", "12", "--data-dir", str(demo_dir))
    assert bad_rank.returncode == 1 and "tune.rank 12" in bad_rank.stderr and "Traceback" not in bad_rank.stderr


def test_info_and_similar(demo_dir: Path):
    info = run_cli("info", "--json", "--data-dir", str(demo_dir))
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["stats"]["users"] == DEMO_USERS and data["index_count"] == data["stats"]["items"]
    assert data["vector_search"] == "exact"  # the embedded index, well under retrieval.exact_search_items
    sim = run_cli("similar", "1", "--k", "3", "--data-dir", str(demo_dir))
    assert sim.returncode == 0, sim.stderr
    assert "Toy Story 2" in sim.stdout


def test_ingest_no_fit_then_fit_and_info_show_the_models(tmp_path: Path):
    """A generic dataset through the CLI: `ingest --no-fit` leaves RRF, `fit` trains the sequential model and the
    fusion with progress and says so, `info` shows what is fitted and that it is current."""
    import random

    folder = tmp_path / "shop"
    folder.mkdir()
    rng = random.Random(1)
    (folder / "items.csv").write_text(
        "id,title,text\n" + "".join(f"p{i},Product {i},Thing number {i} of kind {i % 4}\n" for i in range(30))
    )
    rows = []
    for u in range(60):
        start = rng.randrange(30)
        rows += [f"u{u},p{(start + k) % 30},4,{k}\n" for k in range(rng.randint(6, 10))]
    (folder / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(rows))
    data = tmp_path / "data"
    env = {"KNOWREC_LLM__BACKEND": "none", "KNOWREC_RANKER__MODE": "none"}
    ing = run_cli("ingest", str(folder), "--no-fit", "--data-dir", str(data), env=env)
    assert ing.returncode == 0, ing.stderr
    before = run_cli("recommend", "u1", "--json", "--data-dir", str(data), env=env)
    assert json.loads(before.stdout)["fusion"] == "rrf"
    small = {"KNOWREC_FIT__FUSION__MIN_USERS": "5", "KNOWREC_FIT__FUSION__MIN_DATA_IN_LEAF": "5", **env}
    fit = run_cli("fit", "--max-epochs", "6", "--threads", "1", "--data-dir", str(data), env=small)
    assert fit.returncode == 0, fit.stderr
    assert "sequential: best epoch" in fit.stdout and "fusion: learned" in fit.stdout
    info = run_cli("info", "--json", "--data-dir", str(data), env=small)
    models = json.loads(info.stdout)["models"]
    assert models["fitted"] and models["fusion"] == "learned" and not models["stale"]
    after = run_cli("recommend", "u1", "--json", "--data-dir", str(data), env=small)
    assert json.loads(after.stdout)["fusion"] == "learned"
