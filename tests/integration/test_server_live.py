"""A real ``knowrec serve`` (uvicorn on a free loopback port, the bundled model, an API key) driven by the official
``openai`` client and by the web page in headless Chromium (Selenium).

The browser test FAILS when Chromium or chromedriver is missing (CI installs them:
``apt-get install -y chromium chromium-driver``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from knowrec.types import display_title

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "live-test-key"
TURN_TIMEOUT_S = 240  # one chat turn with the bundled model on a busy 2-core CPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path, *, api_key: str | None, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """``python -m knowrec.cli serve`` on a free port; returns (base URL, process) once ``/healthz`` answers."""
    port = free_port()
    full_env = {**os.environ, "KNOWREC_PROGRESS": "false", **(env or {})}
    full_env.pop("KNOWREC_SERVER__API_KEY", None)
    if api_key:
        full_env["KNOWREC_SERVER__API_KEY"] = api_key
    log = open(data_dir.parent / f"server-{port}.log", "wb")  # noqa: SIM115  (kept open for the process)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "knowrec.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"knowrec serve exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise AssertionError("knowrec serve did not answer /healthz within 120 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def live(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("live") / "data"
    shutil.copytree(demo_dir, data_dir)  # chat feedback writes interactions and sessions
    base, proc = start_server(data_dir, api_key=KEY)
    yield base
    stop_server(proc)


# -- the official OpenAI client --------------------------------------------------------------------------------
def test_openai_client_plain_and_streaming(live: str):
    import openai

    client = openai.OpenAI(base_url=live + "/v1", api_key=KEY, timeout=TURN_TIMEOUT_S, max_retries=0)
    assert [m.id for m in client.models.list()] == ["knowrec"]

    resp = client.chat.completions.create(
        model="knowrec",
        messages=[
            {"role": "system", "content": "You recommend films."},
            {"role": "user", "content": "recommend me some animated movies"},
        ],
        user="openai-test-user",
    )
    assert resp.object == "chat.completion" and resp.model == "knowrec"
    answer = resp.choices[0].message
    assert answer.role == "assistant" and answer.content
    extra = resp.model_extra["knowrec"]
    assert extra["action"] == "recommend" and len(extra["items"]) == 5
    assert resp.choices[0].finish_reason == "stop" and resp.usage.total_tokens > 0

    stream = client.chat.completions.create(
        model="knowrec",
        messages=[{"role": "user", "content": "more"}],
        user="openai-test-user",  # the same user continues the same session
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text.strip()
    # the answer's first line comes as soon as retrieval has run, with the picks, before the LLM ranks them
    first = next(c for c in chunks if c.choices and c.choices[0].delta.content)
    assert first.model_extra["knowrec"]["stage"] == "ranking" and len(first.model_extra["knowrec"]["items"]) == 5
    # "more" pages: new picks under the same constraints
    assert first.choices[0].delta.content.startswith("Here are more picks") and text.startswith(
        first.choices[0].delta.content
    )
    assert chunks[0].object == "chat.completion.chunk" and chunks[-1].choices[0].finish_reason == "stop"
    last = chunks[-1].model_extra["knowrec"]
    assert last["session_id"] == extra["session_id"]
    assert len(last["items"]) == 5

    bad = openai.OpenAI(base_url=live + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


# -- the web page in headless Chromium ----------------------------------------------------------------------------
def _chrome():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail(
            "headless Chromium and chromedriver are needed for the web-page test: "
            "apt-get install -y chromium chromium-driver"
        )
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.binary_location = browser
    return webdriver.Chrome(options=opts, service=Service(driver))


def test_web_chat_page_in_chromium(live: str, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    d = _chrome()
    try:
        wait = WebDriverWait(d, TURN_TIMEOUT_S)
        d.get(live + "/")
        assert d.title == "knowrec chat"

        def assistant_turns() -> list:  # type: ignore[type-arg]
            return d.find_elements(By.CSS_SELECTOR, "[data-testid=assistant-message]:not(.msg-error)")

        def idle(_: object) -> bool:
            return d.find_element(By.ID, "status").get_attribute("data-state") != "busy"

        # without the key the server says 401 and the page asks for it
        d.find_element(By.ID, "message").send_keys("recommend me some animated movies", Keys.ENTER)
        wait.until(lambda _: d.find_element(By.ID, "status").get_attribute("data-state") == "error")
        assert "API key" in d.find_element(By.ID, "status").text

        key = d.find_element(By.ID, "api-key")
        key.send_keys(KEY, Keys.TAB)  # stored in localStorage on change
        assert d.execute_script("return localStorage.getItem('knowrec.apiKey')") == KEY
        # count the moments the picks in retrieval order are on the page (before the LLM's ranking replaces them)
        d.execute_script(
            "window.__preliminary = 0; new MutationObserver(() => {"
            " if (document.querySelector('[data-testid=preliminary-card]')) window.__preliminary += 1; })"
            ".observe(document.getElementById('conversation'), {childList: true, subtree: true});"
        )
        d.find_element(By.ID, "message").send_keys("recommend me some animated movies", Keys.ENTER)
        wait.until(lambda _: assistant_turns() and idle(_))
        assert d.execute_script("return window.__preliminary") > 0
        assert not d.find_elements(By.CSS_SELECTOR, "[data-testid=preliminary-card]")  # replaced by the ranking
        first = assistant_turns()[-1]
        cards = first.find_elements(By.CSS_SELECTOR, "[data-testid=rec-card]")
        assert len(cards) == 5, first.text
        before = [c.get_attribute("data-item-id") for c in cards]
        top = cards[0]
        assert top.find_element(By.CSS_SELECTOR, ".rec-title").text
        assert top.find_elements(By.CSS_SELECTOR, ".rec-reason")
        assert top.find_elements(By.CSS_SELECTOR, ".rec-fact[data-fact-id^=F]")  # the cited facts are shown
        # each pick once: the answer's text keeps its first line, the cards carry the titles; no raw fact ids in prose
        prose = first.find_element(By.CSS_SELECTOR, ".msg-text").text
        titles = [c.find_element(By.CSS_SELECTOR, ".rec-title").text for c in cards]
        assert not any(t in prose for t in titles), prose
        assert not re.search(r"\[F[0-9a-f]{6,}\]", first.text), first.text
        # fact lines write titles and names as people do, as the Python side does (knowrec.types.display_title)
        for label in ("Lion King, The (1994)", "Seven (a.k.a. Se7en) (1995)", "David Brenner (editor)", "Heat"):
            assert d.execute_script("return window.knowrecChat.displayLabel(arguments[0])", label) == display_title(
                label
            )
        for fact in first.find_elements(By.CSS_SELECTOR, ".rec-fact"):
            assert not re.search(r", (The|A|An) \(\d{4}\)", fact.text), fact.text
        for reason in top.find_elements(By.CSS_SELECTOR, ".rec-reason .fn"):
            assert re.fullmatch(r"(\[\d+\])+", reason.text)  # footnote numbers into the card's fact list
        # the buttons need no emoji font (headless Chromium has none and drew empty boxes)
        labels = [b.text for b in top.find_elements(By.CSS_SELECTOR, "button")]
        assert labels == ["Like", "Not for me"] and all(ch.isascii() for label in labels for ch in label)
        shots = Path(os.environ.get("KNOWREC_SCREENSHOTS") or tmp_path)  # set it to look at them
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "chat-answer.png"
        assert d.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        card_shot = top.screenshot_as_png
        assert card_shot[:8] == b"\x89PNG\r\n\x1a\n"

        n = len(assistant_turns())
        top.find_element(By.CSS_SELECTOR, "[data-testid=like]").click()
        wait.until(lambda _: len(assistant_turns()) > n and idle(_))
        assert "liked" in top.get_attribute("class").split()
        latest = assistant_turns()[-1]
        after = [
            c.get_attribute("data-item-id") for c in latest.find_elements(By.CSS_SELECTOR, "[data-testid=rec-card]")
        ]
        assert after and after != before and before[0] not in after  # the answer changed after the like
        assert d.find_elements(By.CSS_SELECTOR, "[data-testid=user-message]")[-1].text == "more"
        logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE" and "401" not in e.get("message", "")]
        assert not logs, logs
    finally:
        d.quit()
