"""docker-compose.yml and Dockerfile: the deployment is wired the way knowrec reads its settings.

The file is checked through ``docker compose config`` (what Compose itself makes of it: interpolation, defaults,
schema). A missing ``docker`` CLI or Compose v2 is a failure, not a skip: install the Compose plugin (see
docs/servers.md). The tests that run Compose (or a Chroma server) are marked ``integration``; ``test_dockerfile``
reads files only and stays a unit test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"neo4j", "chroma", "vllm", "knowrec"}
# runs `docker compose config` (and builds the Compose plugin when it is missing)
needs_compose = pytest.mark.integration


INSTALL_SCRIPT = ROOT / "scripts" / "install-docker-compose.sh"
_installed: list[bool] = []


def _install_plugin_once() -> str | None:
    """Run ``scripts/install-docker-compose.sh`` once per session (it builds Compose v2 from its Go module);
    ``None`` on success, else what went wrong."""
    if _installed:
        return None if _installed[0] else "scripts/install-docker-compose.sh failed earlier in this session"
    res = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False)
    _installed.append(res.returncode == 0)
    return (
        None
        if res.returncode == 0
        else f"scripts/install-docker-compose.sh exited {res.returncode}: {res.stderr[-800:]}"
    )


def _compose_command() -> list[str]:
    """``docker compose`` (the v2 plugin), or a standalone v2 ``docker-compose``; when neither works, the plugin is
    built once with ``scripts/install-docker-compose.sh``; fails the test when that fails too."""
    tried: list[str] = []
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode != 0:
        why = _install_plugin_once()
        if why:
            tried.append(why)
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
        said = " ".join((probe.stderr or probe.stdout).split())
        tried.append(f"`docker compose version` exited {probe.returncode}: {said}")
    else:
        tried.append("no `docker` CLI on PATH")
    standalone = shutil.which("docker-compose")
    if standalone:
        probe = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True, check=False)
        version = probe.stdout.strip().lstrip("v")
        if probe.returncode == 0 and version[:1].isdigit() and int(version.split(".")[0]) >= 2:
            return [standalone]
        tried.append(f"`docker-compose` is {version or 'unknown'} (Compose v2 or later is needed)")
    pytest.fail(
        "Docker Compose v2 is needed to validate docker-compose.yml: "
        + "; ".join(tried)
        + ". Install the compose plugin as ~/.docker/cli-plugins/docker-compose (see docs/servers.md).",
        pytrace=False,
    )


def compose_config(**env: str) -> dict[str, Any]:
    """``docker compose config --format json`` with only ``env`` (plus PATH/HOME) in the environment."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_CONFIG") if k in os.environ}
    cmd = [*_compose_command(), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config", "--format", "json"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**base, **env}, timeout=60, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
    return dict(json.loads(res.stdout))


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config(NEO4J_PASSWORD="s3cret-pass")


def _healthcheck(service: dict[str, Any]) -> str:
    hc = service.get("healthcheck") or {}
    test = hc.get("test")
    assert test and not hc.get("disable"), "no healthcheck"
    return " ".join(test) if isinstance(test, list) else str(test)


@needs_compose
def test_services_and_volumes(config: dict[str, Any]):
    services = config["services"]
    assert set(services) == SERVICES
    for name in ("neo4j", "chroma", "vllm"):
        assert _healthcheck(services[name])
    assert {"neo4j-data", "chroma-data", "hf-cache"} <= set(config.get("volumes", {}))


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service.get("volumes", [])}


@needs_compose
def test_neo4j(config: dict[str, Any]):
    neo4j = config["services"]["neo4j"]
    assert neo4j["image"] == "neo4j:5.26-community"
    assert neo4j["environment"]["NEO4J_AUTH"] == "neo4j/s3cret-pass"
    assert "cypher-shell" in _healthcheck(neo4j) or "7474" in _healthcheck(neo4j)
    assert _mounts(neo4j)["/data"]["type"] == "volume"
    assert {p["target"] for p in neo4j["ports"]} == {7474, 7687}


@needs_compose
def test_neo4j_healthcheck_logs_in_with_the_configured_password(config: dict[str, Any], tmp_path: Path):
    """Run the healthcheck's shell line with a stand-in ``cypher-shell`` that records its arguments."""
    neo4j = config["services"]["neo4j"]
    test = neo4j["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    record = tmp_path / "args.json"
    fake = tmp_path / "cypher-shell"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "NEO4J_AUTH": neo4j["environment"]["NEO4J_AUTH"]}
    res = subprocess.run(["sh", "-c", test[1].replace("$$", "$")], env=env, capture_output=True, check=False)
    assert res.returncode == 0
    args = json.loads(record.read_text())
    assert args[args.index("-u") + 1] == "neo4j" and args[args.index("-p") + 1] == "s3cret-pass"
    assert "RETURN 1" in args


@needs_compose
def test_neo4j_password_has_a_default():
    services = compose_config()["services"]
    auth = services["neo4j"]["environment"]["NEO4J_AUTH"]
    user, password = auth.split("/", 1)
    assert user == "neo4j" and len(password) >= 8  # Neo4j 5 refuses shorter passwords
    assert services["knowrec"]["environment"]["KNOWREC_GRAPH_PASSWORD"] == password


@needs_compose
def test_chroma(config: dict[str, Any]):
    chroma = config["services"]["chroma"]
    assert chroma["image"].startswith("chromadb/chroma:")
    assert "/api/v2/heartbeat" in _healthcheck(chroma)
    assert _mounts(chroma)["/data"]["type"] == "volume"


@needs_compose
def test_chroma_healthcheck_script_works_against_a_real_server(config: dict[str, Any], chroma_server: str):
    """The image has only bash: the raw-HTTP probe must really pass on a live server and fail on a dead port."""
    test = config["services"]["chroma"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "/bin/bash", "-c"]
    script = test[3]
    port = chroma_server.rsplit(":", 1)[1]
    ok = subprocess.run(["bash", "-c", script.replace("/8000", f"/{port}")], capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    dead = subprocess.run(["bash", "-c", script.replace("/8000", "/1")], capture_output=True, timeout=10)
    assert dead.returncode != 0


@needs_compose
def test_vllm(config: dict[str, Any]):
    vllm = config["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai")
    assert vllm["ipc"] == "host"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    command = " ".join(vllm["command"])
    for flag in ("--enable-lora", "--max-lora-rank", "--max-logprobs 20", "--enable-prefix-caching", "/adapters"):
        assert flag in command
    assert vllm["environment"]["VLLM_MODEL"] == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert "/health" in _healthcheck(vllm)
    mounts = _mounts(vllm)
    assert mounts["/adapters"]["type"] == "bind" and mounts["/adapters"].get("read_only")
    assert mounts["/root/.cache/huggingface"]["type"] == "volume"


def _vllm_argv(service: dict[str, Any], tmp_path: Path) -> list[str]:
    """The arguments the vllm service's shell command hands to ``vllm`` (a stand-in that prints them)."""
    fake = tmp_path / "vllm"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    assert service["entrypoint"] == ["/bin/bash", "-c"] and len(service["command"]) == 1
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", **{k: v or "" for k, v in service["environment"].items()}}
    script = service["command"][0].replace("$$", "$")  # `config` keeps Compose's escape; the container gets one $
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=True)
    return list(json.loads(res.stdout))


@needs_compose
def test_vllm_command_model_and_lora_from_env(tmp_path: Path):
    plain = _vllm_argv(compose_config()["services"]["vllm"], tmp_path)
    assert plain[:2] == ["serve", "HuggingFaceTB/SmolLM2-1.7B-Instruct"]
    assert "--lora-modules" not in plain and "--enable-lora" in plain
    assert plain[plain.index("--max-logprobs") + 1] == "20"
    assert plain[plain.index("--max-lora-rank") + 1] == "32"

    tuned = compose_config(VLLM_MODEL="Qwen/Qwen2.5-7B-Instruct", LORA_NAME="movies-r16", VLLM_MAX_LORA_RANK="16")
    argv = _vllm_argv(tuned["services"]["vllm"], tmp_path)
    assert argv[:2] == ["serve", "Qwen/Qwen2.5-7B-Instruct"]
    assert argv[argv.index("--lora-modules") + 1] == "movies-r16=/adapters/movies-r16"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"


@needs_compose
def test_knowrec_service_wiring(config: dict[str, Any]):
    app = config["services"]["knowrec"]
    assert Path(app["build"]["context"]) == ROOT
    assert app["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert app["command"] == ["knowrec", "serve", "--host", "0.0.0.0", "--port", "8080"]
    env = app["environment"]
    assert env["KNOWREC_GRAPH_URI"] == "bolt://neo4j:7687"
    assert env["KNOWREC_GRAPH_USER"] == "neo4j"
    assert env["KNOWREC_GRAPH_PASSWORD"] == "s3cret-pass"
    assert env["KNOWREC_CHROMA_URL"] == "http://chroma:8000"
    assert env["KNOWREC_LLM__BACKEND"] == "http"
    assert env["KNOWREC_LLM__BASE_URL"] == "http://vllm:8000/v1"
    assert env["KNOWREC_LLM__DIALECT"] == "vllm"
    assert env["KNOWREC_LLM__MODEL"] == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    deps = app["depends_on"]
    assert set(deps) == {"neo4j", "chroma", "vllm"}
    assert all(dep["condition"] == "service_healthy" for dep in deps.values())
    assert {p["target"] for p in app["ports"]} == {8080}


@needs_compose
def test_knowrec_env_is_read_by_settings(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    """Every KNOWREC_* variable of the knowrec service is one that Settings reads, with the meaning intended."""
    from knowrec.config import Settings

    env = config["services"]["knowrec"]["environment"]
    for key in [k for k in os.environ if k.startswith("KNOWREC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("KNOWREC_CONFIG", "/nonexistent/knowrec.toml")
    for key, value in env.items():
        if key.startswith("KNOWREC_"):
            monkeypatch.setenv(key, value)
    s = Settings()
    assert s.graph_backend == "neo4j" and s.graph_uri == "bolt://neo4j:7687"
    assert s.graph_password is not None and s.graph_password.get_secret_value() == "s3cret-pass"
    assert s.chroma_url == "http://chroma:8000"
    assert s.data_dir == Path("/data")
    assert s.llm.backend == "http" and s.llm.base_url == "http://vllm:8000/v1" and s.llm.dialect == "vllm"
    assert s.llm.model == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    assert s.llm.adapter is None  # LORA_NAME unset: the base model answers
    assert s.server.api_key is None  # KNOWREC_API_KEY unset: no auth


@needs_compose
def test_lora_adapter_reaches_knowrec(monkeypatch: pytest.MonkeyPatch):
    """With LORA_NAME set, vLLM serves the adapter and knowrec's requests name it."""
    from knowrec.config import Settings

    env = compose_config(LORA_NAME="movies-r16", KNOWREC_API_KEY="k3y")["services"]["knowrec"]["environment"]
    for key in [k for k in os.environ if k.startswith("KNOWREC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("KNOWREC_CONFIG", "/nonexistent/knowrec.toml")
    for key, value in env.items():
        if key.startswith("KNOWREC_"):
            monkeypatch.setenv(key, value)
    s = Settings()
    assert s.llm.adapter == "movies-r16"
    assert s.server.api_key is not None and s.server.api_key.get_secret_value() == "k3y"


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert 'CMD ["knowrec", "serve", "--host", "0.0.0.0", "--port", "8080"]' in lines
    assert "pip install ." in text and "EXPOSE 8080" in lines
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "docs/benchmarks/**/stores"} <= set(ignored)
