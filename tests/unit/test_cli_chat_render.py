"""The terminal chat prints fact ids as footnotes and each pick once (``knowrec chat``)."""

from __future__ import annotations

import io

from rich.console import Console

from knowrec import cli
from knowrec.types import ChatTurn, Fact, Reason, Recommendation, RecommendedItem

HEAT = Fact(head="3", relation="director", tail="dbr:Mann", head_label="Heat (1995)", tail_label="Michael Mann")
YEAR = Fact(head="3", relation="year", tail="year:1995", head_label="Heat (1995)", tail_label="1995")


def _printed(turn: ChatTurn, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buf, width=120, color_system=None))
    cli._print_turn(turn)
    return buf.getvalue()


def test_a_lookup_shows_numbered_facts_not_ids(monkeypatch):
    text = f"Here is what I know about Heat (1995):\n- {HEAT.text()} [{HEAT.id}]\n- {YEAR.text()} [{YEAR.id}]"
    turn = ChatTurn(session_id="s", role="assistant", text=text, action="lookup", facts=(HEAT, YEAR))
    shown = _printed(turn, monkeypatch)
    assert HEAT.id not in shown and YEAR.id not in shown
    assert "Michael Mann [1]" in shown and "[1] Heat (1995) —director→ Michael Mann" in shown
    assert "[2] Heat (1995) —year→ 1995" in shown


def test_a_recommendation_lists_each_pick_once_with_footnotes(monkeypatch):
    item = RecommendedItem(
        item_id="3",
        title="Heat (1995) [REC]",  # square brackets in a title are text, not markup
        rank=1,
        score=1.0,
        retrieval_score=1.0,
        reasons=(
            Reason(text="Directed by Michael Mann, like Collateral (2004), which you liked.", fact_ids=(HEAT.id,)),
        ),
        facts=(HEAT,),
    )
    rec = Recommendation(user_id="u", items=(item,), ranking_mode="none", model="m")
    text = f"Here are my picks:\n1. Heat (1995) [REC] — Directed by Michael Mann [{HEAT.id}]"
    turn = ChatTurn(session_id="s", role="assistant", text=text, action="recommend", recommendation=rec, items=("3",))
    shown = _printed(turn, monkeypatch)
    assert shown.count("Heat (1995) [REC]") == 1  # the card-like table only, not the numbered text too
    assert HEAT.id not in shown
    assert "which you liked. [1]" in shown and "[1] Heat (1995) —director→ Michael Mann" in shown


def test_the_terminal_chat_warms_up_while_you_type_and_a_failure_stays_quiet():
    import threading
    from types import SimpleNamespace

    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def warm_up() -> dict[str, float]:
        started.set()
        assert release.wait(10)
        calls.append("warm_up")
        return {"llm": 1.0}

    thread = cli._warm_up_in_background(SimpleNamespace(warm_up=warm_up))  # type: ignore[arg-type]
    assert thread is not None and started.wait(10) and thread.is_alive()  # running beside the prompt …
    release.set()
    thread.join(10)
    assert calls == ["warm_up"] and not thread.is_alive()  # … and done

    def broken() -> dict[str, float]:
        raise RuntimeError("no model here")

    failed = cli._warm_up_in_background(SimpleNamespace(warm_up=broken))  # type: ignore[arg-type]
    assert failed is not None
    failed.join(10)  # the error is logged, not printed as a thread traceback, and the chat goes on
    assert cli._warm_up_in_background(SimpleNamespace()) is None  # type: ignore[arg-type]  # a remote API


def test_the_demo_names_the_llm_while_loading_only_when_one_loads():
    from knowrec.config import Settings

    assert "LLM" in cli._loading_message(Settings(ranker={"mode": "verbalizer"}))
    assert "LLM" not in cli._loading_message(Settings(ranker={"mode": "none"}))
    # a server behind llm.base_url loads its own model: nothing to wait for here
    assert "LLM" not in cli._loading_message(Settings(llm={"backend": "http", "base_url": "http://x:1/v1"}))
