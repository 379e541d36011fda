"""The public surface (:class:`knowrec.api.RecommenderAPI`) on a real store: the accessors the server, the CLI and the
LangChain layer use instead of the recommender's private parts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from knowrec import NotFound, Recommender, Settings
from knowrec.api import RecommenderAPI

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_demo(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's demo data dir: these tests write feedback, which must not change the shared one."""
    copy = tmp_path_factory.mktemp("api-demo") / "data"
    shutil.copytree(demo_dir, copy)
    return copy


@pytest.fixture(scope="module")
def api(own_demo: Path) -> Iterator[RecommenderAPI]:
    rec = Recommender(Settings(data_dir=own_demo, progress=False, llm={"backend": "none"}, ranker={"mode": "none"}))
    assert isinstance(rec, RecommenderAPI)
    yield rec
    rec.close()


def test_item_returns_the_stored_item_and_its_facts(api: RecommenderAPI) -> None:
    toy = api.item("1", facts=5)
    assert toy.item.id == "1" and toy.item.title.startswith("Toy Story")
    assert 0 < len(toy.facts) <= 5 and all("1" in (f.head, f.tail) for f in toy.facts)
    assert api.item(1, facts=0).facts == ()
    with pytest.raises(NotFound, match="unknown item id"):
        api.item("no-such-item")


def test_search_finds_items_by_their_text(api: RecommenderAPI) -> None:
    hits = api.search("Toy Story animated toys", k=5)
    assert len(hits) == 5 and any(it.title.startswith("Toy Story") for it, _ in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_session_profile_names_what_the_session_learnt(api: RecommenderAPI) -> None:
    sid = api.new_session()
    assert api.session_profile(sid).summary == "nothing yet"
    api.feedback("1", True, session_id=sid)
    prof = api.session_profile(sid)
    assert prof.profile is not None and prof.profile.liked == ("1",)
    assert "Toy Story" in prof.summary
    with pytest.raises(NotFound):
        api.session_profile("no-such-session")
    assert api.stats()["items"] > 0


def test_cli_chat_profile_command_prints_the_session_profile(own_demo: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "KNOWREC_LLM__BACKEND": "none", "KNOWREC_RANKER__MODE": "none"}
    out = subprocess.run(
        [sys.executable, "-m", "knowrec.cli", "chat", "--data-dir", str(own_demo)],
        input="westerns from the 60s\n/like 1\n/profile\n/quit\n",
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    after = out.stdout.split("noted: you liked item", 1)[1]
    assert "liked " in after and "nothing yet" not in after, out.stdout
