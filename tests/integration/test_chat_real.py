"""The chat agent with the real bundled model and embedder on the 8-user demo slice: a scripted conversation,
a restart, and ``knowrec chat`` with piped stdin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knowrec import Recommender, Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOY_STORY = "1"


@pytest.fixture
def chat_dir(demo_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the demo data dir (chat writes sessions and feedback interactions)."""
    dst = tmp_path / "data"
    shutil.copytree(demo_dir, dst)
    return dst


def make(data_dir: Path, extract_with_llm: bool = True) -> Recommender:
    return Recommender(
        Settings(
            data_dir=data_dir,
            progress=False,
            ranker={"mode": "verbalizer", "rerank_top": 6},
            chat={"extract_with_llm": extract_with_llm},
        )
    )


def genres(rec: Recommender, item_ids: tuple[str, ...]) -> dict[str, set[str]]:
    facts = rec.store.facts(list(item_ids))
    return {i: {f.tail_label for f in fs if f.relation == "genre"} for i, fs in facts.items()}


def test_scripted_conversation_and_restart(chat_dir: Path):
    rec = make(chat_dir)
    sid = rec.new_session()
    timings: dict[str, float] = {}

    def say(msg: str, k: int = 5):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        turn = rec.chat(sid, msg, k=k)
        timings[msg] = round(time.perf_counter() - t, 2)
        return turn

    # (a) a stated exclusion holds in every later answer
    t1 = say("no comedies please")
    assert t1.action == "recommend" and len(t1.items) == 5, t1.text
    assert t1.recommendation is not None and t1.recommendation.ranking_mode == "verbalizer"
    # (b) "more like X" returns items sharing KG entities with X
    t2 = say("more like Toy Story")
    assert t2.action == "recommend" and t2.items and TOY_STORY not in t2.items, t2.text
    x = rec.store.item_entities([TOY_STORY])[TOY_STORY]
    ents = rec.store.item_entities(list(t2.items))
    assert all(ents[i] & x for i in t2.items), [(i, ents[i] & x) for i in t2.items]
    # (c) a dislike removes that item and lowers items close to it
    top = t2.items[0]
    t3 = say("not that one")
    assert t3.action == "feedback" and top not in t3.items and t3.items, t3.text
    assert {x.item_id: x.rating for x in rec.store.history(f"chat:{sid}")}[top] == 1.0
    named = {e for e in rec.store.item_entities([top])[top] if not e.startswith(("genre:", "year:", "tag:"))}
    ents3 = rec.store.item_entities(list(t3.items))
    close = [i for i in t3.items if ents3[i] & named]
    far = [i for i in t3.items if not ents3[i] & named]
    assert all(t3.items.index(c) > t3.items.index(f) for c in close for f in far)
    for turn in (t1, t2, t3):
        for item, gs in genres(rec, turn.items).items():
            assert "Comedy" not in gs, (turn.text, item, gs)
        assert "[F" in turn.text
    rec.close()

    # (d) a restart keeps the session, its turns and its profile
    rec = make(chat_dir, extract_with_llm=False)
    turns = rec.chat_history(sid)
    assert len(turns) == 6 and [t.text for t in turns[::2]] == [
        "no comedies please",
        "more like Toy Story",
        "not that one",
    ]
    assert turns[-1].profile is not None
    assert "Comedy" in turns[-1].profile.exclude_genres and top in turns[-1].profile.disliked
    t4 = say("from the 90s")
    assert t4.items and top not in t4.items
    for item, gs in genres(rec, t4.items).items():
        assert "Comedy" not in gs
        assert 1990 <= int(rec.store.items([item])[item].attributes["year"]) <= 1999
    rec.close()
    print("\nchat turn latency (s):", timings)


def test_cli_chat_with_piped_stdin(chat_dir: Path):
    script = "hi\nwho directed Heat?\nno comedies\n/like 1\n/profile\n/quit\nnever read\n"
    env = {**os.environ, "COLUMNS": "200", "KNOWREC_CHAT__EXTRACT_WITH_LLM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "knowrec.cli", "chat", "--data-dir", str(chat_dir), "--mode", "none", "-k", "3"],
        input=script,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "What are you in the mood for?" in out
    assert "Michael Mann" in out
    assert "Here are my picks (no Comedy)" in out
    assert "noted: you liked item" in out
    assert "bye — continue with: knowrec chat --session" in out
    assert "Traceback" not in result.stderr
