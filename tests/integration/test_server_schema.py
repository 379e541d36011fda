"""Schemathesis: generated requests (valid and invalid) against every operation of the OpenAPI schema, on the real
stores (demo slice). No response may be a 5xx, and responses must match the schema. Kept quick: no LLM (ranker mode
``none``, rule-based chat extraction) and a few examples per operation.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from knowrec import Recommender, Settings
from knowrec.server import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "schema-key"


@pytest.fixture(scope="module")
def api_schema(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    data_dir = tmp_path_factory.mktemp("schema") / "data"
    shutil.copytree(demo_dir, data_dir)
    rec = Recommender(
        Settings(
            data_dir=data_dir,
            progress=False,
            llm={"backend": "none"},
            ranker={"mode": "none"},
            chat={"extract_with_llm": False},
            server={"api_key": KEY, "max_k": 20},
        )
    )
    app = create_app(rec)
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {KEY}"})
    rec.close()


# schemathesis.pytest.from_fixture does not work with pytest 9 (it sets Function._nodeid), so each operation is a
# plain parametrised test that runs the operation's Hypothesis strategy itself.
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/recommendations"),
    ("GET", "/v1/items/{item_id}"),
    ("POST", "/v1/sessions"),
    ("POST", "/v1/sessions/{session_id}/messages"),
    ("GET", "/v1/sessions/{session_id}"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
]
NO_INPUT = {"/healthz", "/readyz", "/v1/models"}
CHAT = {"/v1/sessions/{session_id}/messages", "/v1/chat/completions"}  # a chat turn is slower: fewer examples


def test_every_operation_is_covered(api_schema: Any) -> None:
    ops = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert ops == set(OPERATIONS)


# (operation, mode) pairs; operations without parameters or body have nothing invalid to generate
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode == GenerationMode.NEGATIVE and path in NO_INPUT)
]


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    CASES,
    ids=[f"{m} {p} {'valid' if g == GenerationMode.POSITIVE else 'invalid'}" for m, p, g in CASES],
)
def test_no_server_errors_and_responses_match_the_schema(api_schema: Any, method: str, path: str, mode: Any) -> None:
    operation = api_schema[path][method]
    auth = {"Authorization": f"Bearer {KEY}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=6 if path in CHAT else 15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        # every default check except "schema-valid data is accepted": some rules are beyond the schema (k at most
        # server.max_k, LLM ranking modes need an LLM, feedback needs a session or a user, a user message with text)
        case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

    run()
