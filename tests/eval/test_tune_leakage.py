"""The tuned systems of ``knowrec eval`` never learn from a validation or test item (real model, tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowrec.eval.config import load_config
from knowrec.eval.harness import Harness
from tests.eval.test_harness import write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("system", ["knowrec-tuned", "knowrec-tuned-held-out"])
def test_the_harness_tunes_on_training_interactions_only(tmp_path: Path, system: str):
    """Both kinds of tuning lists: from the served models and (``held-out``) from the probe models."""
    cfg = load_config(write_config(tmp_path, pipeline=f'["{system}"]'))
    cfg = cfg.model_copy(
        update={
            "systems": cfg.systems.model_copy(
                update={"tune": {"examples": 6, "per_user": 2, "eval_every": 6, "knowledge_share": 0.0}}
            )
        }
    )
    harness = Harness(cfg)
    ctx = harness.load()
    out = harness.tuned_adapter(ctx, system)
    assert harness.tuned_adapter(ctx, system) == out  # tuned once, then reused
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    ranking = [r for r in rows if r["kind"] == "ranking"]
    n_train = len([r for r in ranking if r["split"] == "train"])
    assert 1 <= n_train <= 6  # three users, two liked items each at most
    for r in ranking:
        user = r["user"]
        target = r["choices"][r["target"]]
        held_out = {ctx.split.val[user], ctx.split.test[user]}
        # the label is a training item of that user, never the validation or test item …
        assert target not in held_out and target in ctx.split.history(user, "val")
    # … and the store it was tuned in holds no validation or test item at all
    rec = harness.recommender(ctx, "val", fitted=False)
    stored = {(x.user_id, x.item_id) for x in rec.store.interactions()}
    rec.close()
    assert not any((u, ctx.split.val[u]) in stored or (u, ctx.split.test[u]) in stored for u in ctx.split.users)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["examples"]["ranking_examples"] == n_train
    assert manifest["examples"]["candidates_from"] == ("held-out" if system.endswith("held-out") else "fitted")
