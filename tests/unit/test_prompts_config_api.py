import pytest

import knowrec
from knowrec.config import Settings
from knowrec.errors import ConfigError, InvalidInput
from knowrec.prompts import Prompt, available_prompts, load_prompt


def test_public_api_is_pinned():
    assert sorted(knowrec.__all__) == sorted(
        [
            "Candidate",
            "ChatProfile",
            "ChatProgress",
            "ChatTurn",
            "ConfigError",
            "Fact",
            "IngestSummary",
            "Interaction",
            "InvalidInput",
            "InvalidSetting",
            "Item",
            "KGPath",
            "KnowrecError",
            "LLMError",
            "NotFound",
            "Reason",
            "RecQuery",
            "Recommendation",
            "RecommendedItem",
            "Recommender",
            "Settings",
            "StoreUnavailable",
            "__version__",
        ]
    )
    for name in knowrec.__all__:
        assert hasattr(knowrec, name)


def test_every_bundled_prompt_loads_with_a_version():
    names = available_prompts()
    assert {"rank_verbalizer", "rank_listwise", "explain", "system"} <= set(names)
    for name in names:
        p = load_prompt(name)
        assert p.version and p.id == name


def test_render_checks_variables():
    p = load_prompt("rank_listwise")
    with pytest.raises(ConfigError, match="missing variables"):
        p.render(history=[], candidates=[])
    with pytest.raises(ConfigError, match="unexpected"):
        p.render(history=[], candidates=[], query=None, k=3, extra=1)


def test_header_must_match_template_variables():
    import jinja2
    from jinja2 import meta

    # mimic the load-time check on a drifted template: declared 'a', uses 'a' and 'b'
    env = jinja2.Environment()
    used = meta.find_undeclared_variables(env.parse("{{ a }} {{ b }}"))
    assert used == {"a", "b"}
    p = Prompt(id="x", version="1", variables=frozenset({"a"}), source="{{ a }}")
    assert p.render(a="hi") == "hi"


def test_unknown_prompt_names_the_alternatives():
    with pytest.raises(ConfigError, match="rank_verbalizer"):
        load_prompt("nope")


def test_settings_from_env_and_toml(tmp_path, monkeypatch):
    toml = tmp_path / "knowrec.toml"
    toml.write_text('data_dir = "/tmp/from-toml"\n[ranker]\nmode = "listwise"\nrerank_top = 12\n')
    monkeypatch.setenv("KNOWREC_CONFIG", str(toml))
    s = Settings()
    assert s.ranker.mode == "listwise" and s.ranker.rerank_top == 12 and str(s.data_dir) == "/tmp/from-toml"
    monkeypatch.setenv("KNOWREC_RANKER__MODE", "none")
    assert Settings().ranker.mode == "none"  # env beats the file
    assert Settings(ranker={"mode": "verbalizer"}).ranker.mode == "verbalizer"  # arguments beat env


def test_settings_reject_unknown_fields_with_a_knowrec_error_naming_the_field(monkeypatch: pytest.MonkeyPatch):
    from knowrec.config import with_overrides
    from knowrec.errors import ConfigError, InvalidSetting, KnowrecError

    with pytest.raises(InvalidSetting, match=r"^invalid setting ranker\.nope: Extra inputs are not permitted") as e:
        Settings(ranker={"mode": "listwise", "nope": 1})
    assert isinstance(e.value, ConfigError) and isinstance(e.value, KnowrecError) and e.value.field == "ranker.nope"
    with pytest.raises(InvalidSetting, match=r"ranker\.rerank_top: .*\(got 99\)") as e:
        Settings(ranker={"rerank_top": 99})
    assert e.value.errors and e.value.errors[0]["loc"] == ("ranker", "rerank_top")
    monkeypatch.setenv("KNOWREC_RANKER__MODE", "sideways")  # the environment too
    with pytest.raises(InvalidSetting, match=r"ranker\.mode: .*\(got 'sideways'\)"):
        Settings()
    monkeypatch.delenv("KNOWREC_RANKER__MODE")
    # one stage's overrides (Recommender.tune / extract_facts take them as keyword arguments)
    with pytest.raises(InvalidSetting, match=r"^invalid setting tune\.examples: .*\(got 0\)"):
        with_overrides(Settings().tune, {"examples": 0}, "tune")
    with pytest.raises(InvalidSetting, match=r"extract\.nope"):
        with_overrides(Settings().extract, {"nope": 1}, "extract")


def test_invalid_input_message_names_file_line_field():
    e = InvalidInput("bad", path="r.csv", line=7, field="rating")
    assert str(e) == "r.csv:7: field rating: bad"
