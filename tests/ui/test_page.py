"""The chat page's behaviour through its API (gradio_client), against a scripted worker found in a
local lease store: history kept and capped, regenerate, errors shown in the chat, generation
defaults, the model list read again, login required."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import pytest
from gradio_client import Client

from kubechat.discovery.local_store import LocalLeaseStore
from tests.support.processes import until
from tests.ui.conftest import ENV_PASSWORD, ENV_USER, HISTORY_TURNS, PASSWORD, USER, StubUI
from tests.ui.stub_worker import DEFAULTS, MODELS, SHORT_CONTEXT, stub_record


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


def test_api_reply_streams_as_the_plain_assistant_text(stub_ui: StubUI) -> None:
    """Through the API the reply is the model's text alone: the figures line (tokens/s,
    latency) is for the page (tests/ui/test_browser_controls.py, test_ui.py)."""
    client = stub_ui.client()
    job = client.submit("hello there", [], "stub-echo", 0.7, 1.0, 32, api_name="/chat")
    updates = list(job)
    window = job.result()[1]
    assert len(updates) > 2, "the reply is shown as it grows"
    assert [m["role"] for m in window] == ["user", "assistant"]
    assert text(window[-1]) == "You said: hello there (1 messages)"

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
    assert text(window[-1]) == "You said: second (3 messages)"


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
        ("no-such-model", "The model 'no-such-model' does not exist or is not served here"),
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


def test_a_known_model_without_a_live_worker_is_unavailable_not_unknown(stub_ui: StubUI) -> None:
    """As at the gateway: a model some worker served (its lease expired) may come back."""
    gone = stub_record("ghost-0", "http://127.0.0.1:9")
    gone = dataclasses.replace(
        gone, models=("ghost",), renew_time=time.time() - 60, lease_duration=6.0
    )
    LocalLeaseStore(stub_ui.leases).publish(gone)
    try:
        window = chat(stub_ui.client(), "anyone?", [], model="ghost")
        assert "No worker is available for this model right now" in text(window[-1])
    finally:
        LocalLeaseStore(stub_ui.leases).remove("ghost-0")


def test_unknown_model_through_the_ask_endpoint_is_not_found(stub_ui: StubUI) -> None:
    with pytest.raises(Exception, match="'nope' does not exist or is not served here"):
        stub_ui.client().predict("nope", "hi", api_name="/ask")


def picker_choices(client: Client) -> dict[str, list[str]]:
    """The model picker's choices per endpoint parameter, as the API info lists them."""
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    return {
        f"{endpoint}:{p['parameter_name']}": p["type"].get("enum")
        for endpoint, spec in info.items()
        for p in spec["parameters"]
        if p["component"] == "Dropdown"
    }


def test_api_info_lists_the_live_models_as_the_pickers_choices(stub_ui: StubUI) -> None:
    """The page started before its worker was published (conftest), and API clients never load
    the page: the API info still lists what is served now, and follows changes."""
    choices = picker_choices(stub_ui.client())
    assert set(choices) == {
        "/chat:name",
        "/regenerate:name",
        "/model_defaults:name",
        "/models:current",
    }
    assert all(listed == list(MODELS) for listed in choices.values()), choices

    store = LocalLeaseStore(stub_ui.leases)
    late = dataclasses.replace(stub_record("stub-2", "http://127.0.0.1:9"), models=("stub-late",))
    store.publish(late)
    try:
        # the page's live view reads the lease folder on its own schedule: wait for it
        with_late = sorted([*MODELS, "stub-late"])
        until(lambda: picker_choices(stub_ui.client())["/chat:name"] == with_late, timeout=15)
    finally:
        store.remove("stub-2")
    until(lambda: picker_choices(stub_ui.client())["/chat:name"] == list(MODELS), timeout=15)
