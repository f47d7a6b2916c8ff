"""The chat page on a real local stack (``kubechat up examples/demo.yaml``): its API through
gradio_client, and the page itself in headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.support.processes import kubechat_argv
from tests.ui.browser import browser_page

pytestmark = pytest.mark.slow

SEED = "Which mountain is the second highest one in the world?"
SECOND = "Which mountain is the highest one in the world?"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def stack(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(demo_model_dir, tmp_path_factory.mktemp("ui-stack"))
    try:
        yield s
    finally:
        stop_stack(s.proc)


def test_up_prints_the_chat_page_url(stack: Stack) -> None:
    assert f"chat page:       {stack.ui_url}" in stack.log.read_text()


def test_ask_endpoint_streams_the_answer(stack: Stack) -> None:
    client = Client(stack.ui_url + "/", verbose=False)
    job = client.submit("kubechat-demo", SEED, 0.0, 1.0, 64, api_name="/ask")
    partials = list(job)
    assert "K2" in partials[-1]
    assert len(partials) > 1, "the answer arrives in pieces"
    assert all(partials[-1].startswith(p) for p in partials)


def test_chat_endpoint_answers_and_keeps_the_conversation(stack: Stack) -> None:
    client = Client(stack.ui_url + "/", verbose=False)
    _, window = client.predict(SEED, [], "kubechat-demo", 0.0, 1.0, 64, api_name="/chat")
    assert "K2" in _text(window[-1])
    # the plain reply: what the gateway answers to the same greedy request, nothing added
    answer = stack.client.chat.completions.create(
        model="kubechat-demo",
        messages=[{"role": "user", "content": SEED}],
        temperature=0.0,
        top_p=1.0,
        max_tokens=64,
    )
    assert _text(window[-1]) == answer.choices[0].message.content
    _, window = client.predict(SECOND, window, "kubechat-demo", 0.0, 1.0, 64, api_name="/chat")
    assert [m["role"] for m in window] == ["user", "assistant", "user", "assistant"]
    assert "Mount Everest" in _text(window[-1])


def test_sliders_start_at_generation_config(stack: Stack, demo_model_dir: Path) -> None:
    config = json.loads((demo_model_dir / "generation_config.json").read_text())
    client = Client(stack.ui_url + "/", verbose=False)
    updates = client.predict("kubechat-demo", api_name="/model_defaults")
    assert [u["value"] for u in updates] == [
        config["temperature"],
        config["top_p"],
        config["max_new_tokens"],
    ]


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def test_unknown_model_is_a_readable_error(stack: Stack) -> None:
    client = Client(stack.ui_url + "/", verbose=False)
    with pytest.raises(Exception, match="'no-such-model' does not exist or is not served here"):
        client.predict("no-such-model", "hi", 0.0, 1.0, 8, api_name="/ask")


def test_bad_auth_flag_exits_2() -> None:
    proc = subprocess.run(
        kubechat_argv("ui", "--lease-store", "local:/tmp/none", "--auth", "nopassword"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "USER:PASSWORD" in proc.stderr


def test_browser_chat(stack: Stack, demo_model_dir: Path, tmp_path: Path) -> None:
    """Open the page, ask the seed question, see K2, ask a second question, take a picture."""
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(stack.ui_url)
        box = page.get_by_placeholder("Ask something and press Enter")
        box.wait_for(timeout=30_000)
        picker = page.get_by_label("Model")
        expect(picker).to_have_value("kubechat-demo", timeout=30_000)
        picker.click()
        page.get_by_role("option", name="kubechat-demo").click()
        expect(picker).to_have_value("kubechat-demo")
        page.get_by_text("Parameters").click()  # starts at the model's generation_config
        config = json.loads((demo_model_dir / "generation_config.json").read_text())
        for label, key in [
            ("Temperature", "temperature"),
            ("Top p", "top_p"),
            ("Max output tokens", "max_new_tokens"),
        ]:
            field = page.get_by_label(f"number input for {label}")
            expect(field).to_have_value(str(config[key]), timeout=10_000)
        temperature = page.get_by_label("number input for Temperature")
        temperature.fill("0")  # greedy: the answers below are then certain
        temperature.press("Enter")
        expect(page.get_by_label("range slider for Temperature")).to_have_value("0")
        box.fill(SEED)
        box.press("Enter")
        page.get_by_text("K2, also known").first.wait_for(timeout=60_000)
        page.get_by_text("tokens/s").first.wait_for(timeout=10_000)
        box.fill(SECOND)
        page.get_by_role("button", name="Send").click()
        page.get_by_text("Mount Everest").first.wait_for(timeout=60_000)
        expect(page.get_by_text("tokens/s")).to_have_count(2, timeout=30_000)
        shot = tmp_path / "ui.png"
        page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "ui.png")
    assert shot.stat().st_size > 10_000
