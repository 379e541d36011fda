"""``knowrec kg extract`` with real models: the bundled SmolLM2 in process and behind the llama.cpp HTTP server (the
vLLM stand-in), the CLI, and the bundled MiniLM for entity resolution. The 135M model's facts are often wrong (see
docs/benchmarks/kg-extract.md); these tests check what must hold whatever it answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from knowrec import Settings
from knowrec.extraction.text import contains
from knowrec.kg_store.base import GraphBatch
from knowrec.kg_store.sqlite import SQLiteGraphStore
from knowrec.recommender import Recommender
from knowrec.types import Fact, Item
from tests.integration.conftest import run_cli
from tests.servers_llm import MODEL_ALIAS

pytestmark = pytest.mark.integration

ITEMS = [
    Item(
        id="6",
        title="Heat (1995)",
        text="Heat is a crime film directed by Michael Mann. Al Pacino and Robert De Niro lead the cast. "
        "The score was composed by Elliot Goldenthal.",
    ),
    Item(id="70", title="From Dusk Till Dawn (1996)", text="It was written by Quentin Tarantino. Harvey Keitel stars."),
    Item(id="3", title="Collateral (2004)", text="Collateral (2004). Genres: Crime. Tags: tom cruise, michael mann."),
]


def _store(path: Path) -> SQLiteGraphStore:
    store = SQLiteGraphStore(path)
    store.write(
        GraphBatch(
            items=[*ITEMS, Item(id="9", title="Thief (1981)")],
            facts=[Fact(head="9", relation="director", tail="dbr:Michael_Mann", tail_label="Michael Mann")],
        )
    )
    return store


def _check_extracted(store: SQLiteGraphStore, model: str) -> int:
    """Every extracted fact rests on a sentence of its item's text that names its object; returns how many."""
    texts = {it.id: it.text for it in ITEMS}
    n = 0
    for item_id, facts in store.facts(list(texts)).items():
        for f in facts:
            if f.source != "llm":
                continue
            n += 1
            assert f.provenance is not None and f.provenance.model == model and f.provenance.prompt == "kg_extract@1"
            assert contains(texts[item_id], f.provenance.evidence), f
            if f.tail == "dbr:Michael_Mann":  # an object that names the stored director joined it
                assert f.tail_label == "Michael Mann"
            else:
                assert f.tail.startswith("kx:") and contains(f.provenance.evidence, f.tail_label), f
    return n


def test_bundled_model_in_process_end_to_end(tmp_path: Path):
    store = _store(tmp_path / "graph.sqlite")
    rec = Recommender(Settings(data_dir=tmp_path, progress=False), store=store)
    summary = rec.extract_facts()
    assert summary.items == 4 and summary.extracted + sum(summary.failed.values()) == 4
    assert summary.proposed >= summary.kept + sum(summary.dropped.values())  # two objects may name one entity
    kept = _check_extracted(store, rec.llm.model_id)  # type: ignore[union-attr]
    assert kept == summary.written
    again = rec.extract_facts()
    assert again.skipped == 4 and again.written == 0 and again.extracted == 0
    report = json.loads((tmp_path / "extract" / "report.json").read_text())
    assert report["summary"]["items"] == 4
    rec.close()


def test_over_the_http_server_with_two_requests_in_flight(tmp_path: Path, llm_server: str):
    store = _store(tmp_path / "graph.sqlite")
    model = None if os.environ.get("KNOWREC_TEST_LLM_URL") else MODEL_ALIAS
    dialect = os.environ.get("KNOWREC_TEST_LLM_DIALECT", "llama_cpp")
    settings = Settings(
        data_dir=tmp_path,
        progress=False,
        llm={"backend": "http", "base_url": llm_server, "model": model, "dialect": dialect, "timeout_s": 120},
        extract={"concurrency": 2, "write_every": 1},
    )
    rec = Recommender(settings, store=store)
    summary = rec.extract_facts(["6", "70", "3"])
    assert summary.extracted == 3 and not summary.failed
    assert _check_extracted(store, rec.llm.model_id) == summary.written  # type: ignore[union-attr]
    lines = (tmp_path / "extract" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["item"] for x in lines] == ["6", "70", "3"]  # answers written in item order
    rec.close()


def test_cli_extracts_and_a_bad_id_is_one_clear_line(tmp_path: Path):
    _store(tmp_path / "graph.sqlite").close()
    done = run_cli("kg", "extract", "--data-dir", str(tmp_path), "--items", "6,70", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["items"] == 2 and summary["extracted"] + sum(summary["failed"].values()) == 2
    bad = run_cli("kg", "extract", "--data-dir", str(tmp_path), "--items", "6,nope")
    assert bad.returncode == 1 and "nope" in bad.stderr and "Traceback" not in bad.stderr
