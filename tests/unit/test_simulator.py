"""P4's simulated users and dialogue scoring, on the bundled demo catalogue and small fakes."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from knowrec.datasets import load_demo
from knowrec.eval.conversation import Catalogue, ConstrainedPopularity, run_dialogue, simulated_user, summarise_p4
from knowrec.eval.simulator import Revealed, SimulatedUser, TargetProfile, Utterance, says_title


@pytest.fixture(scope="module")
def demo() -> tuple[Catalogue, list[str]]:
    ds = load_demo()
    items = [it.id for it in ds.items]
    return Catalogue(ds, items), items


def _scripts(cat: Catalogue, items: list[str], seed: int, n: int = 300) -> dict[str, list[Utterance]]:
    out = {}
    for j, target in enumerate(items[:n]):
        liked = items[n + j : n + j + 30]  # some other items as the user's liked history
        out[target] = simulated_user(f"u{j}", target, liked, cat, seed).script(5, cat.titles)
    return out


def test_the_script_is_fixed_by_the_seed(demo):
    cat, items = demo
    a, b, c = _scripts(cat, items, 0, 60), _scripts(cat, items, 0, 60), _scripts(cat, items, 1, 60)
    assert [[u.text for u in s] for s in a.values()] == [[u.text for u in s] for s in b.values()]
    assert [[u.text for u in s] for s in a.values()] != [[u.text for u in s] for s in c.values()]


def test_the_simulator_never_says_the_target_title(demo):
    cat, items = demo
    for seed in (0, 1):
        for target, script in _scripts(cat, items, seed).items():
            for u in script:
                assert not says_title(u.text, cat.titles[target]), (target, u.text)


def test_a_title_hidden_inside_a_liked_title_or_a_name_is_never_said():
    t = TargetProfile(item_id="1", title="Alien (1979)", genres=("Horror", "Sci-Fi"), year=1979)
    liked = [("2", "Alien vs. Predator (2004)", ("Horror", "Sci-Fi")), ("3", "Aliens (1986)", ("Sci-Fi",))]
    for seed in range(30):
        for u in SimulatedUser(t, liked, seed, "u", ("Comedy", "Drama")).script(
            5, {"2": liked[0][1], "3": liked[1][1]}
        ):
            assert not says_title(u.text, t.title)
            assert u.revealed.like != "2"  # "like Alien vs. Predator" would name the target


def test_what_the_user_reveals_is_true_of_its_target(demo):
    cat, items = demo
    for target, script in _scripts(cat, items, 0).items():
        genres = cat.genres[target]
        last = script[-1].revealed
        assert set(last.genres) <= genres
        assert not set(last.exclude_genres) & genres
        assert set(last.people) <= cat.names(target)
        if last.era is not None:
            assert last.era[0] <= cat.years[target] <= last.era[1]
        assert last.like is None or last.like != target
        assert script[0].intent in ("genre", "like") or not genres


def test_the_simulator_varies_its_phrasing_and_asks_for_more(demo):
    cat, items = demo
    texts: dict[str, set[str]] = defaultdict(set)
    for script in _scripts(cat, items, 0).values():
        for u in script:
            texts[u.intent].add(re.sub(r"\b[A-Z][\w'.-]*\b|\d+", "X", u.text))  # the phrasing, names blanked
    assert {"genre", "person", "era", "like", "exclude", "more"} <= set(texts)
    assert all(len(v) >= 3 for v in texts.values()), {k: len(v) for k, v in texts.items()}


def test_the_simulator_writes_an_before_a_vowel(demo):
    """P4's dialogues had "Can you recommend a animation movie?" and "I feel like watching a adventure."."""
    cat, items = demo
    said = [u.text for script in _scripts(cat, items, 0).values() for u in script if u.intent == "genre"]
    assert any(re.search(r"\ban (action|adventure|animation)\b", t) for t in said)
    assert not [t for t in said if re.search(r"\ba [aeiou]", t)]


class _Fake:
    """A chat system that answers from a fixed list per turn."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.heard: list[str] = []

    def start(self, user: str) -> str:
        return "s"

    def answer(self, session: str, user: str, utterance: Utterance, k: int) -> tuple[list[str], str]:
        self.heard.append(utterance.text)
        return self.answers[len(self.heard) - 1][:k], "text"


def _catalogue() -> Catalogue:
    from knowrec.datasets import Dataset
    from knowrec.types import Fact, Item

    items = [Item(id=str(i), title=f"Film {i} (199{i % 10})") for i in range(10)]
    facts = [Fact(head=str(i), relation="genre", tail=f"genre:{g}", tail_label=g) for i in range(10) for g in
             (["Horror"] if i % 2 else ["Comedy"])]  # fmt: skip
    facts += [Fact(head=str(i), relation="year", tail=f"year:199{i}", tail_label=f"199{i}") for i in range(10)]
    return Catalogue(Dataset(name="t", items=items, facts=facts, interactions=[]), [it.id for it in items])


def _script(intents: list[str], exclude_from: int = 99) -> list[Utterance]:
    out = []
    for n, intent in enumerate(intents, start=1):
        r = Revealed(exclude_genres=["Horror"] if n >= exclude_from else [])
        out.append(Utterance(n, f"message {n}", intent, False, r))  # type: ignore[arg-type]
    return out


def test_a_dialogue_counts_repeats_violations_and_stops_at_the_target():
    cat = _catalogue()
    fake = _Fake([["0", "2"], ["2", "3"], ["4", "6", "8"], ["9"]])
    rec = run_dialogue(fake, "u", _script(["genre", "more", "exclude", "genre"], exclude_from=2), "8", 3, cat)
    assert rec["success_turn"] == 3 and len(fake.heard) == 3  # the dialogue ends when the target is shown
    m = rec["metrics"]
    assert (m["Success@3@1"], m["Success@3@2"], m["Success@3@3"], m["Success@3@4"]) == (0.0, 0.0, 1.0, 1.0)
    assert m["repeats"] == 1 and m["repeats_after_more"] == 1  # "2" again, on the "more" turn
    assert m["violations"] == 1  # "3" is a horror film, shown after horror was excluded
    assert m["short"] == 2  # turns 1 and 2 answered 2 of 3 items
    assert [t["items"] for t in rec["dialogue"]] == [["0", "2"], ["2", "3"], ["4", "6", "8"]]
    summary = summarise_p4([rec, {**rec, "user": "v", "success_turn": None, "metrics": {**m, "Success@3@3": 0.0}}])
    assert summary["mean_turns_to_success"] == 3.0 and summary["successes"] == 1
    assert summary["metrics"]["Success@3@3"] == 0.5


def test_constrained_popularity_filters_relaxes_and_never_repeats():
    cat = _catalogue()
    counts = {str(i): 100 - i for i in range(10)}
    pop = ConstrainedPopularity(counts, cat, lambda u: {"0"})
    s = pop.start("u")
    first, _ = pop.answer(s, "u", Utterance(1, "a comedy", "genre", False, Revealed(genres=["Comedy"])), 2)
    assert first == ["2", "4"]  # comedies by popularity, the seen "0" left out
    more, _ = pop.answer(s, "u", Utterance(2, "more", "more", False, Revealed(genres=["Comedy"])), 2)
    assert more == ["6", "8"]
    era = Revealed(genres=["Comedy"], era=(1990, 1999), exclude_genres=["Horror"])
    last, _ = pop.answer(s, "u", Utterance(3, "more", "more", False, era), 3)
    assert last == []  # every comedy is shown or seen; relaxing the genre still leaves only horror, excluded
