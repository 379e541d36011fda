import numpy as np

from knowrec.agent.diversify import item_similarity, mmr
from knowrec.agent.explain import ExplainInput, LLMExplainer, is_grounded, template_reasons
from knowrec.types import Fact, KGPath, Reason, RecommendedItem
from tests.fakes import FakeLLM

V = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 1.0])}
REL = {"a": 1.0, "b": 0.9, "c": 0.8}


def test_mmr_zero_diversity_is_identity():
    assert mmr(REL, 3, 0.0, V, {}) == ["a", "b", "c"]


def test_mmr_prefers_dissimilar_items():
    assert mmr(REL, 2, 0.6, V, {}, embedding_weight=1.0) == ["a", "c"]


def test_mmr_uses_entity_overlap():
    ents = {"a": {"x"}, "b": {"x"}, "c": {"y"}}
    assert mmr(REL, 2, 0.6, {}, ents, embedding_weight=0.0) == ["a", "c"]
    assert item_similarity("a", "b", {}, ents, 0.0) == 1.0


SPIELBERG_JAWS = Fact(head="jaws", relation="director", tail="dbr:Spielberg", tail_label="Steven Spielberg")
SPIELBERG_ET = Fact(head="et", relation="director", tail="dbr:Spielberg", tail_label="Steven Spielberg")
GENRE_ET = Fact(head="et", relation="genre", tail="genre:Sci-Fi", tail_label="Sci-Fi")
PATH = KGPath(
    source_item="jaws",
    entity="dbr:Spielberg",
    entity_label="Steven Spielberg",
    source_fact=SPIELBERG_JAWS.id,
    target_fact=SPIELBERG_ET.id,
    source_relation="director",
    target_relation="director",
    weight=2.0,
)


def test_template_reason_from_path_cites_item_fact():
    inp = ExplainInput(item_id="et", title="E.T.", paths=(PATH,), own_facts=(GENRE_ET,))
    [reason] = template_reasons(inp, {"jaws": "Jaws (1975)"})
    assert reason.text == "Directed by Steven Spielberg, like Jaws (1975), which you liked."
    assert reason.fact_ids == (SPIELBERG_ET.id,) and reason.context_fact_ids == (SPIELBERG_JAWS.id,)
    stored = {f.id: f for f in (SPIELBERG_JAWS, SPIELBERG_ET, GENRE_ET)}
    assert is_grounded(reason, "et", stored)


def test_template_reason_falls_back_to_own_facts():
    inp = ExplainInput(item_id="et", title="E.T.", paths=(), own_facts=(GENRE_ET,))
    [reason] = template_reasons(inp, {})
    assert reason.fact_ids == (GENRE_ET.id,) and reason.text == "A sci-fi film."


def _path(entity: str, label: str, relation: str, weight: float, source: str = "jaws") -> KGPath:
    src = Fact(head=source, relation=relation, tail=entity, tail_label=label)
    dst = Fact(head="et", relation=relation, tail=entity, tail_label=label)
    return KGPath(
        source_item=source,
        entity=entity,
        entity_label=label,
        source_fact=src.id,
        target_fact=dst.id,
        source_relation=relation,
        target_relation=relation,
        weight=weight,
    )


def test_reasons_read_well_put_the_most_specific_connection_first_and_skip_common_ones():
    distributor = _path("dbr:Universal", "Universal Pictures", "distributor", 5.0)  # heaviest, but least telling
    genre = _path("genre:Action", "Action", "genre", 1.0)
    composer = _path("dbr:Williams", "John Williams", "musicComposer", 3.0)
    inp = ExplainInput(item_id="et", title="E.T.", paths=(distributor, genre, composer, PATH), own_facts=())
    titles = {"jaws": "Jaws (1975)"}
    got = [r.text for r in template_reasons(inp, titles, max_reasons=4)]
    assert got == [
        "Directed by Steven Spielberg, like Jaws (1975), which you liked.",
        "Music by John Williams, like Jaws (1975), which you liked.",
        "An action film, like Jaws (1975), which you liked.",  # "An", not "A Action title"
        "Distributed by Universal Pictures, like Jaws (1975), which you liked.",
    ]
    shares = {"dbr:Universal": 0.045, "genre:Action": 0.25, "dbr:Williams": 0.003, "dbr:Spielberg": 0.002}
    kept = [r.text for r in template_reasons(inp, titles, 4, shares, max_share=0.02)]
    assert kept == got[:2]  # what a quarter of the catalogue shares is no reason


def test_reasons_name_films_and_people_as_people_write_them():
    kahn = _path("dbr:Michael_Kahn_(film_editor)", "Michael Kahn (film editor)", "editing", 2.0, source="ark")
    tag = _path("tag:spoof", "spoof (parody)", "tag", 1.0, source="ark")
    inp = ExplainInput(item_id="et", title="E.T.", paths=(kahn, tag), own_facts=())
    got = [r.text for r in template_reasons(inp, {"ark": "Conversation, The (1974)"}, max_reasons=2)]
    assert got == [
        "Edited by Michael Kahn, like The Conversation (1974), which you liked.",
        "Tagged “spoof (parody)”, like The Conversation (1974), which you liked.",  # a tag is quoted whole
    ]


def test_a_tag_that_runs_the_film_down_is_never_a_reason():
    # MovieLens users tag films "bad dialogue", "predictible plot", "plot holes": facts, but no reason to watch
    bad = Fact(head="et", relation="tag", tail="tag:bad dialogue", tail_label="bad dialogue")
    holes = Fact(head="et", relation="tag", tail="tag:plot holes", tail_label="Plot holes")
    black_hole = Fact(head="et", relation="tag", tail="tag:black hole", tail_label="black hole")
    inp = ExplainInput(item_id="et", title="E.T.", paths=(), own_facts=(bad, holes, black_hole, GENRE_ET))
    [reason] = template_reasons(inp, {})
    assert reason.text == "Tagged “black hole”; a sci-fi film." and reason.fact_ids == (black_hole.id, GENRE_ET.id)
    boring = _path("tag:boring", "boring", "tag", 9.0)  # the heaviest connection, and a shared opinion of it
    badass = _path("tag:badass", "badass", "tag", 1.0)
    got = [r.text for r in template_reasons(ExplainInput("et", "E.T.", (boring, badass), ()), {"jaws": "Jaws"})]
    assert got == ["Tagged “badass”, like Jaws, which you liked."]
    # nor is it offered to the LLM explainer as a fact to cite
    llm = FakeLLM(replies=['{"reasons": []}'])
    LLMExplainer(llm).explain([inp], [])
    prompt = "\n".join(m["content"] for m in llm.calls[0]["messages"])
    assert "black hole" in prompt and "bad dialogue" not in prompt and "Plot holes" not in prompt


def test_a_tag_about_its_tagger_is_never_a_reason():
    # one demo user tagged 131 films "In Netflix queue": rare enough to pass the share cut, and about the user
    queue = _path("tag:in netflix queue", "In Netflix queue", "tag", 9.0)
    heist = _path("tag:heist", "heist", "tag", 1.0)
    got = [r.text for r in template_reasons(ExplainInput("et", "E.T.", (queue, heist), ()), {"jaws": "Jaws"})]
    assert got == ["Tagged “heist”, like Jaws, which you liked."]
    seen = Fact(head="et", relation="tag", tail="tag:seen at the cinema", tail_label="seen at the cinema")
    handle = Fact(head="et", relation="tag", tail="tag:ummarti2006", tail_label="ummarti2006")
    [reason] = template_reasons(ExplainInput("et", "E.T.", (), (seen, handle, GENRE_ET)), {})
    assert reason.text == "A sci-fi film." and reason.fact_ids == (GENRE_ET.id,)


def test_the_demo_tags_taken_for_personal_are_the_personal_ones():
    import csv
    import gzip

    from knowrec.agent.explain import personal
    from knowrec.datasets import demo_path

    with gzip.open(demo_path() / "tags.csv.gz", "rt", encoding="utf-8") as fh:
        tags = {" ".join(row["tag"].lower().split()) for row in csv.DictReader(fh)}
    assert sorted(t for t in tags if personal("tag", t)) == [
        "in netflix queue", "no dvd at netflix", "not available from netflix", "not seen", "seen at the cinema",
        "seen more than once", "ummarti2006",
    ]  # fmt: skip


def test_a_recommended_item_carries_its_display_title_through_json():
    item = RecommendedItem(item_id="9", title="Matrix, The (1999)", rank=1, score=1.0, retrieval_score=1.0)
    assert item.display_title == "The Matrix (1999)"
    assert RecommendedItem.model_validate_json(item.model_dump_json()) == item
    given = RecommendedItem(
        item_id="9", title="Matrix, The (1999)", display_title="Matrix", rank=1, score=1.0, retrieval_score=1.0
    )
    assert given.display_title == "Matrix"


def test_grounding_rejects_missing_foreign_and_uncited():
    stored = {f.id: f for f in (SPIELBERG_JAWS, SPIELBERG_ET)}
    # the control: a reason citing a stored fact about its item (and a stored context fact) is grounded …
    good = Reason(text="x", fact_ids=(SPIELBERG_ET.id,), context_fact_ids=(SPIELBERG_JAWS.id,))
    assert is_grounded(good, "et", stored)
    # … and each of these is not
    assert not is_grounded(Reason(text="x", fact_ids=("Fnope",)), "et", stored)
    assert not is_grounded(Reason(text="x", fact_ids=(SPIELBERG_JAWS.id,)), "et", stored)  # touches jaws, not et
    assert not is_grounded(Reason(text="x"), "et", stored)
    assert not is_grounded(Reason(text="x", fact_ids=(SPIELBERG_ET.id,), context_fact_ids=("Fnope",)), "et", stored)


def test_llm_explainer_maps_aliases_and_marks_invented_ones():
    llm = FakeLLM(
        replies=[
            '{"reasons": [{"item": "A", "text": "Spielberg again!", "facts": ["f1"]},'
            ' {"item": "B", "text": "Made up", "facts": ["f9"]}]}'
        ]
    )
    inputs = [
        ExplainInput(item_id="et", title="E.T.", paths=(), own_facts=(SPIELBERG_ET,)),
        ExplainInput(item_id="jaws", title="Jaws", paths=(), own_facts=(SPIELBERG_JAWS,)),
    ]
    proposed, usage = LLMExplainer(llm).explain(inputs, ["Jaws (1975)"])
    assert proposed["et"] == Reason(text="Spielberg again!", fact_ids=(SPIELBERG_ET.id,), source="llm")
    assert proposed["jaws"].fact_ids == ("unknown:f9",)
    stored = {f.id: f for f in (SPIELBERG_JAWS, SPIELBERG_ET)}
    assert is_grounded(proposed["et"], "et", stored)
    assert not is_grounded(proposed["jaws"], "jaws", stored)
    assert usage["prompt_tokens"] == 10
