"""The chat page's behaviour through its API (gradio_client), against a scripted worker found in a
local lease store: history kept and capped, regenerate, errors shown in the chat, generation
defaults, the model list read again, login required."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gradio_client import Client

from tests.ui.conftest import ENV_PASSWORD, ENV_USER, HISTORY_TURNS, PASSWORD, USER, StubUI
from tests.ui.stub_worker import DEFAULTS, MODELS, SHORT_CONTEXT


def chat(client: Client, message: str, history: list, model: str = "stub-echo") -> list:
    """Send ``message`` as the page's Send does; the chat window afterwards."""
    box, window = client.predict(message, history, model, 0.7, 1.0, 32, api_name="/chat")
    assert box == "", "the input box is emptied"
    return window


def text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def test_login_is_required(stub_ui: StubUI) -> None:
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a plain Exception
        Client(stub_ui.url + "/", auth=(USER, "wrong"), verbose=False)
    r = httpx.post(stub_ui.url + "/login", data={"username": USER, "password": "wrong"})
    assert r.status_code >= 400
    for user, password in [(USER, PASSWORD), (ENV_USER, ENV_PASSWORD)]:
        r = httpx.post(stub_ui.url + "/login", data={"username": user, "password": password})
        assert r.status_code == 200, user


def test_model_list_is_read_again(stub_ui: StubUI) -> None:
    update = stub_ui.client().predict(None, api_name="/models")
    assert [value for _, value in update["choices"]] == list(MODELS)
    assert update["value"] == MODELS[0]


def test_sliders_start_at_the_models_generation_defaults(stub_ui: StubUI) -> None:
    updates = stub_ui.client().predict("stub-echo", api_name="/model_defaults")
    assert tuple(u["value"] for u in updates) == (
        DEFAULTS["temperature"],
        DEFAULTS["top_p"],
        DEFAULTS["max_tokens"],
    )
    assert updates[2]["maximum"] == DEFAULTS["context_length"], "max tokens fit the window"


def test_reply_streams_with_a_figures_line_kept_out_of_the_prompt(stub_ui: StubUI) -> None:
    client = stub_ui.client()
    job = client.submit("hello there", [], "stub-echo", 0.7, 1.0, 32, api_name="/chat")
    updates = list(job)
    window = job.result()[1]
    assert len(updates) > 2, "the reply is shown as it grows"
    assert [m["role"] for m in window] == ["user", "assistant"]
    reply = text(window[-1])
    assert reply.startswith("You said: hello there (1 messages)")
    assert "tokens/s" in reply

    window = chat(client, "and again", window)
    sent = stub_ui.requests()[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == "You said: hello there (1 messages)"
    assert text(window[-1]).startswith("You said: and again (3 messages)")


def test_history_sent_to_the_model_is_capped(stub_ui: StubUI) -> None:
    client = stub_ui.client()
    window: list = []
    for i in range(5):
        window = chat(client, f"question {i}", window)
    assert len(window) == 10, "the window keeps the whole conversation"
    sent = stub_ui.requests()[-1]["messages"]
    assert len(sent) == 2 * HISTORY_TURNS + 1
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "question 2",
        "question 3",
        "question 4",
    ]


def test_regenerate_asks_the_last_question_again(stub_ui: StubUI) -> None:
    client = stub_ui.client()
    window = chat(client, "first", [])
    window = chat(client, "second", window)
    before = len(stub_ui.requests())
    window = client.predict(window, "stub-echo", 0.7, 1.0, 32, api_name="/regenerate")
    assert len(stub_ui.requests()) == before + 1
    sent = stub_ui.requests()[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["first", "second"]
    assert len(window) == 4, "the last reply is replaced, not added"
    assert text(window[-1]).startswith("You said: second (3 messages)")


def test_regenerate_after_a_failed_reply_keeps_the_earlier_exchange(stub_ui: StubUI) -> None:
    client = stub_ui.client()
    window = chat(client, "hi", [])
    window = chat(client, "hi", window, model="stub-busy")
    window = client.predict(window, "stub-echo", 0.7, 1.0, 32, api_name="/regenerate")
    assert text(window[-1]).startswith("You said: hi (3 messages)")


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ("stub-busy", "busy"),
        ("no-such-model", "No worker is available"),
        ("stub-broken", "the worker lost its GPU"),
    ],
)
def test_errors_are_shown_in_the_chat_and_the_page_goes_on(
    stub_ui: StubUI, model: str, shown: str
) -> None:
    client = stub_ui.client()
    window = chat(client, "hello", [], model=model)
    assert shown in text(window[-1])
    assert window[-1]["role"] == "assistant"
    window = chat(client, "still there?", window)
    assert text(window[-1]).startswith("You said: still there? (1 messages)"), (
        "a failed exchange is not sent as history"
    )


def test_too_long_conversation_drops_its_oldest_turns(stub_ui: StubUI) -> None:
    client = stub_ui.client()
    window: list = []
    for i in range(3):
        window = chat(client, f"question number {i}", window, model="stub-short")
    reply = text(window[-1])
    assert reply.startswith("You said: question number 2 ("), reply
    sent = stub_ui.requests()[-1]["messages"]
    assert sum(len(m["content"]) for m in sent) <= SHORT_CONTEXT
    assert len(sent) < 2 * HISTORY_TURNS + 1, "older turns were dropped to fit"

    window = chat(client, "x" * (SHORT_CONTEXT + 1), window, model="stub-short")
    assert "too long" in text(window[-1])


def test_clear_empties_the_chat(stub_ui: StubUI) -> None:
    client = stub_ui.client()
    chat(client, "remember me", [])
    assert client.predict(api_name="/clear") == []
    chat(client, "new start", [])
    assert len(stub_ui.requests()[-1]["messages"]) == 1, "history was cleared too"
