"""The HTTP API in process (FastAPI TestClient) over the real stores and the bundled model, on the demo slice."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from knowrec import Recommender, Settings
from knowrec.server import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "integration-key"


@pytest.fixture(scope="module")
def data_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the demo slice (feedback writes interactions)."""
    dst = tmp_path_factory.mktemp("server") / "data"
    shutil.copytree(demo_dir, dst)
    return dst


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=data_dir, progress=False, server={"api_key": KEY, "max_body_bytes": 4096})
    rec = Recommender(settings)
    with TestClient(create_app(rec), headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c
    rec.close()


def test_recommendations_with_the_bundled_model(client: TestClient):
    r = client.post("/v1/recommendations", json={"user_id": "1", "k": 3, "diversity": 0.2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ranking_mode"] == "verbalizer" and "SmolLM2" in body["model"]
    assert len(body["items"]) == 3
    for it in body["items"]:
        cited = {fid for reason in it["reasons"] for fid in reason["fact_ids"]}
        assert it["reasons"] and cited <= {f["id"] for f in it["facts"]}
    first = body["items"][0]["item_id"]
    again = client.post("/v1/recommendations", json={"user_id": "1", "k": 3, "exclude": [first], "mode": "none"})
    assert again.status_code == 200 and again.json()["ranking_mode"] == "none"
    assert first not in [it["item_id"] for it in again.json()["items"]]
    cold = client.post("/v1/recommendations", json={"k": 2, "query": "animated toys", "mode": "none"}).json()
    assert cold["cold_start"] and len(cold["items"]) == 2


def test_item_with_its_facts(client: TestClient):
    rec = client.post("/v1/recommendations", json={"user_id": "2", "k": 1, "mode": "none"}).json()
    item_id = rec["items"][0]["item_id"]
    r = client.get(f"/v1/items/{item_id}", params={"facts": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["item"]["id"] == item_id and body["item"]["title"] == rec["items"][0]["title"]
    assert 0 < len(body["facts"]) <= 5
    assert all(item_id in (f["head"], f["tail"]) for f in body["facts"])
    err = client.get("/v1/items/no-such-item").json()["error"]
    assert err["type"] == "not_found" and "no-such-item" in err["message"]


def test_errors_are_json_and_name_the_field(client: TestClient):
    r = client.post("/v1/recommendations", json={"user_id": "1", "k": 1000})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.k"
    r = client.post("/v1/recommendations", json={"user_id": "1", "diversity": -1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.diversity"
    r = client.post("/v1/recommendations", json={"user_id": "1", "query": "x" * 5000})
    assert r.status_code == 413 and r.json()["error"] == {
        "type": "payload_too_large",
        "message": "request body larger than 4096 bytes",
        "field": "body",
    }
    r = client.post("/v1/feedback", json={"item_id": "no-such-item", "liked": True, "user_id": "1"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


def test_auth(client: TestClient):
    no_key = {"Authorization": ""}
    r = client.post("/v1/recommendations", json={"user_id": "1", "k": 1}, headers=no_key)
    assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
    r = client.get("/v1/items/1", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = client.get("/v1/models", headers={"Authorization": "", "X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "knowrec"
    assert client.get("/healthz", headers=no_key).status_code == 200
    assert client.get("/", headers=no_key).status_code == 200


def test_readiness_real(client: TestClient, tmp_path: Path):
    r = client.get("/readyz", headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready" and {"graph", "index", "embedder", "llm"} <= set(r.json()["components"])
    # a graph server that is not there: 503 naming it
    down = Recommender(Settings(data_dir=tmp_path, progress=False, graph_uri="bolt://127.0.0.1:9"))
    with TestClient(create_app(down)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "store_unavailable" and "bolt://127.0.0.1:9" in r.json()["error"]["message"]
        assert c.get("/healthz").status_code == 200
    llm_down = Recommender(
        Settings(
            data_dir=tmp_path,
            progress=False,
            llm={"backend": "http", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0, "timeout_s": 2},
        )
    )
    with TestClient(create_app(llm_down)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["type"] == "llm_unavailable"
