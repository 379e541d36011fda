"""Facts from item text (knowrec.extraction) with a scripted LLM and an in-memory store (SQLite's ``:memory:`` or
:class:`knowrec.testing.InMemoryGraphStore`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from knowrec.agent.llm.base import LLMReply, Message
from knowrec.config import ExtractConfig
from knowrec.errors import InvalidInput, LLMError
from knowrec.extraction import (
    EntityResolver,
    ExtractionRun,
    FactExtractor,
    default_schema,
    load_schema,
)
from knowrec.extraction.extract import load_results
from knowrec.extraction.text import mentions, normalise, sentences
from knowrec.kg_store.base import GraphBatch, GraphStore
from knowrec.kg_store.sqlite import SQLiteGraphStore
from knowrec.testing import InMemoryGraphStore
from knowrec.types import Entity, Fact, Item
from tests.fakes import HashEmbedder

HEAT = Item(
    id="6",
    title="Heat (1995)",
    text="Heat is a crime film directed by Michael Mann. Al Pacino and Robert De Niro lead the cast. "
    "The film is dedicated to John Smith.",
)
INSIDER = Item(
    id="2", title="The Insider (1999)", text="The Insider was directed by michael mann (director), with Al Pacino."
)
BLANK = Item(id="9", title="Blank (2000)", text="")


class ScriptedLLM:
    """Answers by the title in the prompt; counts calls; can fail or be interrupted at a given call."""

    def __init__(self, answers: dict[str, Any], interrupt_at: int | None = None, fail_titles: Sequence[str] = ()):
        self.answers = answers
        self.calls: list[str] = []
        self.schemas: list[dict[str, Any]] = []
        self.interrupt_at = interrupt_at
        self.fail_titles = set(fail_titles)

    @property
    def model_id(self) -> str:
        return "scripted"

    def chat(
        self, messages: Sequence[Message], schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> LLMReply:
        title = re.search(r'description of "([^"]+)"', messages[-1]["content"]).group(1)  # type: ignore[union-attr]
        self.calls.append(title)
        self.schemas.append(schema or {})
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if title in self.fail_titles:
            raise LLMError("server down", retryable=True)
        answer = self.answers.get(title, {"facts": []})
        text = answer if isinstance(answer, str) else json.dumps(answer)
        parsed = json.loads(text) if text.startswith("{") else None
        return LLMReply(text=text, parsed=parsed, model="scripted")

    def format_chat(self, messages: Sequence[Message], assistant_prefix: str = "") -> str:
        return ""

    def label_logprobs(self, prompt: str, labels: Sequence[str]) -> dict[str, float]:
        raise AssertionError("not used")


def fact(relation: str, obj: str, evidence: Any) -> dict[str, Any]:
    return {"relation": relation, "object": obj, "evidence": evidence}


HEAT_ANSWER = {
    "facts": [
        fact("director", "Michael Mann", 1),
        fact("starring", "Al Pacino", 2),
        fact("starring", "Robert De Niro", 2),
    ]
}


def stored_store(path: Path | str = ":memory:", store: GraphStore | None = None) -> GraphStore:
    """Heat and The Insider, and Michael Mann stored as a director (dbr:Michael_Mann) of another film: in ``store``,
    or in a new SQLite store at ``path`` (in memory by default)."""
    store = SQLiteGraphStore(path) if store is None else store
    collateral = Item(id="3", title="Collateral (2004)")
    store.write(
        GraphBatch(
            items=[HEAT, INSIDER, BLANK, collateral],
            facts=[Fact(head="3", relation="director", tail="dbr:Michael_Mann", tail_label="Michael Mann")],
        )
    )
    return store


def run_for(store: GraphStore, llm: ScriptedLLM, out: Path, **cfg: Any) -> tuple[ExtractionRun, ExtractConfig]:
    config = ExtractConfig(**cfg)
    schema = default_schema("movies")
    entities = [e for batch in store.iter_entities() for e in batch]
    resolver = EntityResolver(entities, schema, HashEmbedder(), threshold=0.99)
    return ExtractionRun(store, FactExtractor(llm, schema, config), resolver, out, write_every=1), config  # type: ignore[arg-type]


# --- text -----------------------------------------------------------------------------------------------------------


def test_sentences_keep_offsets_and_abbreviations():
    text = "Mr. Holland's Opus was shot by O. Smith. It stars Ann Lee! Then more."
    got = sentences(text)
    assert [s.text for s in got] == ["Mr. Holland's Opus was shot by O. Smith.", "It stars Ann Lee!", "Then more."]
    assert all(text[s.start : s.end] == s.text for s in got)


def test_mentions_find_names_and_list_items_not_the_title():
    assert mentions(HEAT.text, exclude=("Heat",)) == ["Michael Mann", "Al Pacino", "Robert De Niro", "John Smith"]
    tags = "Inception (2010). Genres: Action, Drama. Tags: leonardo dicaprio, christopher nolan, dreams."
    assert mentions(tags, exclude=("Inception (2010)", "Inception")) == [
        "Action",
        "Drama",
        "leonardo dicaprio",
        "christopher nolan",
        "dreams",
    ]
    assert mentions("Edited by Wiebe van der Vliet.") == ["Wiebe van der Vliet"]


# --- the evidence check ---------------------------------------------------------------------------------------------


def test_invented_facts_are_dropped_and_counted(tmp_path: Path):
    answer = {
        "facts": [
            fact("director", "Michael Mann", "directed by Michael Mann"),  # kept: quote and object in the text
            fact("writer", "Michael Mann", "written by Michael Mann"),  # invented evidence
            fact("starring", "Val Kilmer", "Al Pacino and Robert De Niro lead the cast"),  # object not in the text
            fact("starring", "Al Pacino", "directed by Michael Mann"),  # object not in its evidence
            fact("producer", "Heat", "Heat is a crime film"),  # the item itself
            fact("director", "michael  mann", "directed by Michael Mann"),  # the same fact again
            fact("sequel", "Heat 2", "Heat"),  # a relation outside the schema
        ]
    }
    store = stored_store()
    llm = ScriptedLLM({"Heat (1995)": answer})
    run, _ = run_for(store, llm, tmp_path, constrain_objects=False)
    summary = run.run([HEAT])
    assert summary.kept == 1 and summary.proposed == 7
    assert summary.dropped == {
        "evidence_not_in_text": 1,
        "object_not_in_text": 1,
        "object_not_in_evidence": 1,
        "object_is_the_item": 1,
        "duplicate": 1,
        "unknown_relation": 1,
    }
    llm_facts = [f for f in store.facts(["6"])["6"] if f.source == "llm"]
    assert [(f.relation, f.tail) for f in llm_facts] == [("director", "dbr:Michael_Mann")]
    prov = llm_facts[0].provenance
    assert prov is not None and prov.evidence == "directed by Michael Mann" and prov.model == "scripted"
    assert prov.prompt == "kg_extract@1" and prov.field == "text"


def test_constrained_answers_name_a_sentence_and_offer_the_texts_names(tmp_path: Path):
    store = stored_store()
    llm = ScriptedLLM({"Heat (1995)": {"facts": [*HEAT_ANSWER["facts"], fact("writer", "John Smith", 9)]}})
    run, _ = run_for(store, llm, tmp_path)
    summary = run.run([HEAT])
    item_schema = dict(
        zip(
            ("relation", "object", "evidence"),
            llm.schemas[0]["properties"]["facts"]["items"]["prefixItems"],
            strict=True,
        )
    )
    assert item_schema["object"]["enum"] == ["Michael Mann", "Al Pacino", "Robert De Niro", "John Smith"]
    assert item_schema["evidence"] == {"type": "integer", "enum": [1, 2, 3]}
    assert summary.kept == 3 and summary.dropped == {"evidence_not_in_text": 1}
    evidence = {f.tail_label: f.provenance.evidence for f in store.facts(["6"])["6"] if f.provenance}
    assert evidence["Al Pacino"] == "Al Pacino and Robert De Niro lead the cast."


# --- entity resolution ----------------------------------------------------------------------------------------------


def test_resolution_merges_spellings_and_keeps_other_types_apart():
    schema = default_schema("movies")
    stored = [Entity(id="dbr:Michael_Mann", label="Michael Mann", relations=("director",), degree=3)]
    resolver = EntityResolver(stored, schema, embedder=None)
    assert resolver.resolve("michael mann (director)", ("person",)).entity_id == "dbr:Michael_Mann"
    assert resolver.resolve("Michael Mann", ("person",)).method == "label"
    company = resolver.resolve("Michael Mann", ("organisation",))  # a company of the same name is not the director
    assert company.entity_id == "kx:organisation/michael_mann" and company.method == "new"
    assert resolver.resolve("MICHAEL MANN", ("organisation",)).entity_id == company.entity_id  # and stays one entity


def test_resolution_by_alias_and_by_embedding():
    schema = load_schema_text(
        """
        [relations.author]
        types = ["person"]
        [aliases]
        "ent:king" = ["Steven King"]
        """
    )
    stored = [
        Entity(id="ent:king", label="Stephen King", relations=("author",)),
        Entity(id="dbr:Ursula_K._Le_Guin", label="Le Guin", relations=("author",)),
    ]
    resolver = EntityResolver(stored, schema, HashEmbedder(), threshold=0.7)
    assert resolver.resolve("Steven King", ("person",)).method == "alias"
    assert resolver.resolve("Ursula K. Le Guin", ("person",)).entity_id == "dbr:Ursula_K._Le_Guin"  # the id's name
    near = resolver.resolve("Stephen King novelist", ("person",))  # HashEmbedder: 2 of 3 words shared, cos 0.82
    assert (near.entity_id, near.method) == ("ent:king", "embedding") and 0.7 <= near.score < 1.0
    strict = EntityResolver(stored, schema, HashEmbedder(), threshold=0.9)
    assert strict.resolve("Stephen King novelist", ("person",)).method == "new"


# --- runs: idempotence, resume, failures ----------------------------------------------------------------------------


def test_a_second_run_on_unchanged_text_asks_and_writes_nothing(tmp_path: Path):
    store = stored_store()
    answers = {
        "Heat (1995)": HEAT_ANSWER,
        "The Insider (1999)": {"facts": [fact("director", "michael mann (director)", 1)]},
    }
    first, _ = run_for(store, ScriptedLLM(answers), tmp_path)
    s1 = first.run([HEAT, INSIDER, BLANK])
    assert s1.written == 4 and s1.resolved == {"label": 2, "new": 2}
    assert store.facts(["2"])["2"][0].tail == "dbr:Michael_Mann"  # "michael mann (director)" joined the director
    llm = ScriptedLLM(answers)
    second, _ = run_for(store, llm, tmp_path)
    before = store.stats()
    s2 = second.run([HEAT, INSIDER, BLANK])
    assert llm.calls == [] and s2.skipped == 3 and s2.written == 0 and store.stats() == before
    changed = HEAT.model_copy(update={"text": HEAT.text + " Music by Elliot Goldenthal."})
    third, _ = run_for(store, llm, tmp_path)
    s3 = third.run([changed, INSIDER])
    assert llm.calls == ["Heat (1995)"] and s3.skipped == 1


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_a_changed_text_replaces_the_facts_of_the_old_one(tmp_path: Path, backend: str):
    store = stored_store(store=InMemoryGraphStore() if backend == "memory" else None)
    store.write(GraphBatch(facts=[Fact(head="6", relation="director", tail="dbr:Michael_Mann")]))  # the data's too

    def llm_facts() -> set[tuple[str, str]]:
        return {(f.relation, f.tail_label) for f in store.facts(["6"])["6"] if f.source == "llm"}

    def entities() -> set[str]:
        return {e.label for batch in store.iter_entities() for e in batch}

    first, _ = run_for(store, ScriptedLLM({"Heat (1995)": HEAT_ANSWER}), tmp_path)
    s1 = first.run([HEAT])
    assert (s1.written, s1.retracted) == (2, 0)  # the director fact was stored from the data first
    assert llm_facts() == {("starring", "Al Pacino"), ("starring", "Robert De Niro")}

    # De Niro leaves the text: his fact goes, and the entity only that fact named with it
    v2 = HEAT.model_copy(
        update={
            "text": "Heat is a crime film directed by Michael Mann. Al Pacino leads the cast. "
            "Music by Elliot Goldenthal."
        }
    )
    answer = {
        "facts": [
            fact("director", "Michael Mann", 1),
            fact("starring", "Al Pacino", 2),
            fact("musicComposer", "Elliot Goldenthal", 3),
        ]
    }
    second, _ = run_for(store, ScriptedLLM({"Heat (1995)": answer}), tmp_path)
    s2 = second.run([v2])
    assert (s2.written, s2.retracted) == (1, 1)
    assert llm_facts() == {("starring", "Al Pacino"), ("musicComposer", "Elliot Goldenthal")}
    assert "Robert De Niro" not in entities()

    # The text changes again and the LLM fails: what the new text still supports stays, the rest goes.
    v3 = HEAT.model_copy(update={"text": "Heat is a crime film. Al Pacino leads the cast. The score is new."})
    failing = ScriptedLLM({}, fail_titles=["Heat (1995)"])
    third, _ = run_for(store, failing, tmp_path)
    s3 = third.run([v3])
    assert (s3.failed, s3.retracted) == ({"llm_error": 1}, 1)  # the composer; the director is the data's
    assert llm_facts() == {("starring", "Al Pacino")}
    # Pacino's fact stays tracked: asked again, an answer without it retracts it
    again, _ = run_for(store, ScriptedLLM({"Heat (1995)": {"facts": []}}), tmp_path)
    assert again.run([v3]).skipped == 1  # the failure is kept …
    s4 = again.run([v3], retry_failed=True)  # … until asked again
    assert (s4.written, s4.retracted, s4.failed) == (0, 1, {})
    assert llm_facts() == set() and "Al Pacino" not in entities()
    assert [f.source for f in store.facts(["6"])["6"]] == ["dataset"] and "Michael Mann" in entities()
    last = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()][-1]
    assert (last["item"], last["facts"], last["failure"]) == ("6", [], "")


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path):
    store = stored_store()
    answers = {
        "Heat (1995)": HEAT_ANSWER,
        "The Insider (1999)": {"facts": [fact("director", "michael mann (director)", 1)]},
    }
    llm = ScriptedLLM(answers, interrupt_at=2)
    run, _ = run_for(store, llm, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run.run([HEAT, INSIDER])
    assert [f.source for f in store.facts(["6"])["6"]].count("llm") == 3  # the first item was written whole
    again = ScriptedLLM(answers)
    resumed, _ = run_for(store, again, tmp_path)
    summary = resumed.run([HEAT, INSIDER])
    assert again.calls == ["The Insider (1999)"] and summary.skipped == 1 and summary.written == 1


def test_a_failed_or_invalid_answer_skips_the_item_and_writes_none_of_it(tmp_path: Path):
    store = stored_store()
    llm = ScriptedLLM({"Heat (1995)": '{"facts": "Michael Mann"}'}, fail_titles=["The Insider (1999)"])
    run, _ = run_for(store, llm, tmp_path)
    summary = run.run([HEAT, INSIDER])
    assert summary.failed == {"invalid_answer": 1, "llm_error": 1} and summary.written == 0
    assert not [f for fs in store.facts(["6", "2"]).values() for f in fs if f.source == "llm"]
    retry = ScriptedLLM({"Heat (1995)": HEAT_ANSWER})
    again, _ = run_for(store, retry, tmp_path)
    assert again.run([HEAT, INSIDER]).skipped == 2 and retry.calls == []  # failures are kept …
    assert again.run([HEAT], retry_failed=True).written == 3  # … until asked again


def test_the_report_lists_merges_and_new_entities(tmp_path: Path):
    store = stored_store()
    answers = {
        "Heat (1995)": HEAT_ANSWER,
        "The Insider (1999)": {"facts": [fact("director", "michael mann (director)", 1)]},
    }
    run, _ = run_for(store, ScriptedLLM(answers), tmp_path)
    run.run([HEAT, INSIDER])
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(m["object"], m["entity"]) for m in report["merges"]] == [("michael mann (director)", "dbr:Michael_Mann")]
    assert {e["id"] for e in report["new_entities"]} == {"kx:person/al_pacino", "kx:person/robert_de_niro"}
    assert "kx:person/al_pacino" in (tmp_path / "report.md").read_text()


# --- schema files ---------------------------------------------------------------------------------------------------


def load_schema_text(text: str, tmp: Path | None = None) -> Any:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "schema.toml"
    path.write_text(text)
    return load_schema(path)


def test_a_schema_file_defines_relations_and_bad_ones_name_the_field():
    schema = load_schema_text('[relations.author]\ndescription = "who wrote it"\ntypes = ["person"]\n')
    assert [(r.name, r.types) for r in schema.relations] == [("author", ("person",))]
    assert schema.answer_schema(4)["properties"]["facts"]["items"]["prefixItems"][0]["enum"] == ["author"]
    with pytest.raises(InvalidInput, match=r"relations\.author\.types"):
        load_schema_text('[relations.author]\ntypes = "person"\n')
    with pytest.raises(InvalidInput, match="relations"):
        load_schema_text('domain = "x"\n')
    with pytest.raises(InvalidInput, match="not a readable TOML"):
        load_schema_text("[relations\n")


def test_extraction_results_load_and_a_malformed_one_names_its_line(tmp_path: Path):
    good = {"item": "1", "key": {"model": "m"}, "facts": [{"relation": "director", "entity": "p:x", "label": "X"}]}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(good) + "\n")
    [fact] = load_results(path, titles={"1": "Film"})
    assert (fact.head, fact.relation, fact.tail, fact.head_label, fact.tail_label) == (
        "1",
        "director",
        "p:x",
        "Film",
        "X",
    )
    no_entity = {"item": "2", "facts": [{"relation": "director", "label": "Y"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(no_entity) + "\n")
    with pytest.raises(InvalidInput, match=r"results\.jsonl:2: .*KeyError"):
        load_results(path)
    empty_relation = {"item": "3", "facts": [{"relation": "", "entity": "p:z", "label": "Z"}]}
    path.write_text("\n" + json.dumps(empty_relation) + "\n")
    with pytest.raises(InvalidInput, match=r"results\.jsonl:2: "):
        load_results(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(InvalidInput, match=r"results\.jsonl:1: "):
        load_results(path)


def test_normalise():
    assert normalise("Michael Mann (director)") == normalise("michael  mann") == "michael mann"


# --- use: the source switch and the reasons -------------------------------------------------------------------------


def test_fact_sources_setting_reaches_the_store(tmp_path: Path):
    from knowrec import Settings
    from knowrec.recommender import Recommender

    rec = Recommender(Settings(data_dir=tmp_path, retrieval={"fact_sources": ["dataset"]}))
    assert rec.store.fact_sources == frozenset({"dataset"})  # type: ignore[attr-defined]
    assert Recommender(Settings(data_dir=tmp_path / "b")).store.fact_sources is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["memory", pytest.param("disk", marks=pytest.mark.integration)])
def test_extracted_facts_feed_the_kg_generator_unless_switched_off(tmp_path: Path, backend: str):
    """The store of the extraction, then a second one on the same graph that reads only the dataset's facts: an
    in-memory store (``memory``), or a SQLite file opened again (``disk``)."""
    memory = InMemoryGraphStore()
    store = stored_store(store=memory) if backend == "memory" else stored_store(tmp_path / "graph.sqlite")
    run, _ = run_for(store, ScriptedLLM({"Heat (1995)": HEAT_ANSWER}), tmp_path / "extract")
    run.run([HEAT])  # Heat now shares Michael Mann with Collateral, through a fact read from its text
    found = store.kg_candidates({"3": 1.0}, exclude=set(), n=5)
    assert [c.item_id for c in found] == ["6"] and found[0].paths[0].extracted
    store.close()
    if backend == "memory":
        dataset_only: GraphStore = InMemoryGraphStore(fact_sources={"dataset"}, same_graph_as=memory)
    else:
        dataset_only = SQLiteGraphStore(tmp_path / "graph.sqlite", fact_sources={"dataset"})
    assert dataset_only.kg_candidates({"3": 1.0}, exclude=set(), n=5) == []
    assert all(f.source == "dataset" for fs in dataset_only.facts(["6", "3"]).values() for f in fs)
    dataset_only.close()


def test_reasons_that_rest_on_text_say_so():
    from knowrec.agent.explain import FROM_TEXT, ExplainInput, template_reasons
    from knowrec.types import KGPath

    path = KGPath(
        source_item="3",
        entity="dbr:Michael_Mann",
        entity_label="Michael Mann",
        source_fact="F1",
        target_fact="F2",
        source_relation="director",
        target_relation="director",
        weight=1.0,
    )
    titles = {"3": "Collateral (2004)"}
    plain = template_reasons(ExplainInput("6", "Heat (1995)", (path,), ()), titles)[0].text
    read = template_reasons(
        ExplainInput("6", "Heat (1995)", (path.model_copy(update={"extracted": True}),), ()), titles
    )
    assert FROM_TEXT not in plain and read[0].text == plain[:-1] + f" {FROM_TEXT}."
    own = Fact(head="6", relation="director", tail="kx:person/x", tail_label="X", source="llm")
    assert template_reasons(ExplainInput("6", "Heat (1995)", (), (own,)), titles)[0].text.endswith(f"{FROM_TEXT}.")


def test_the_item_itself_is_no_object_even_without_its_article(tmp_path: Path):
    item = Item(id="8", title="The Thin Blue Line (1988)", text="Thin Blue Line is by Errol Morris.")
    store = SQLiteGraphStore(":memory:")
    store.write(GraphBatch(items=[item]))
    llm = ScriptedLLM(
        {"The Thin Blue Line (1988)": {"facts": [["director", "Thin Blue Line", 1], ["director", "Errol Morris", 1]]}}
    )
    run, _ = run_for(store, llm, tmp_path)
    summary = run.run([item])
    assert summary.dropped == {"object_is_the_item": 1} and summary.kept == 1
    offered = llm.schemas[0]["properties"]["facts"]["items"]["prefixItems"][1]["enum"]
    assert offered == ["Errol Morris"]


def test_names_inside_the_title_and_genres_are_no_objects(tmp_path: Path):
    item = Item(
        id="2628",
        title="Star Wars: Episode I - The Phantom Menace (1999)",
        text="Star Wars: Episode I - The Phantom Menace (1999). Genres: Action, Sci-Fi. Tags: Liam Neeson, boring.",
    )
    store = SQLiteGraphStore(":memory:")
    genre = Fact(head="2628", relation="genre", tail="genre:Action", tail_label="Action")
    tag = Fact(head="2628", relation="tag", tail="tag:action", tail_label="action")  # a tag of the same words
    store.write(GraphBatch(items=[item], facts=[genre, tag]))
    answer = {"facts": [["director", "Star Wars", 1], ["starring", "Action", 2], ["starring", "Liam Neeson", 3]]}
    llm = ScriptedLLM({item.title: answer})
    run, _ = run_for(store, llm, tmp_path)
    summary = run.run([item])
    offered = llm.schemas[0]["properties"]["facts"]["items"]["prefixItems"][1]["enum"]
    assert "Star Wars" not in offered and "Liam Neeson" in offered
    assert summary.dropped == {"object_is_the_item": 1, "object_is_a_genre_or_year": 1}
    assert [f.tail for f in store.facts(["2628"])["2628"] if f.source == "llm"] == ["kx:person/liam_neeson"]
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert record["dropped"] == {"object_is_the_item": 1, "object_is_a_genre_or_year": 1}
