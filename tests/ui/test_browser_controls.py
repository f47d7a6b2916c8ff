"""The page's controls in headless Chromium: login, model picker, Stop, Regenerate, Clear."""

from __future__ import annotations

import time

import pytest

from tests.support.processes import until
from tests.ui.browser import browser_page
from tests.ui.conftest import PASSWORD, USER, StubUI

pytestmark = pytest.mark.slow


def test_stop_regenerate_and_clear(stub_ui: StubUI) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(stub_ui.url)
        page.get_by_label("username").fill(USER)
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        box = page.get_by_placeholder("Ask something and press Enter")
        box.wait_for(timeout=30_000)

        def pick(model: str) -> None:
            picker = page.get_by_label("Model")
            picker.click()
            page.get_by_role("option", name=model).click()
            expect(picker).to_have_value(model)

        pick("stub-slow")
        page.get_by_text("Parameters").click()
        for label, value in [("Temperature", 0.3), ("Top p", 0.85), ("Max output tokens", 99)]:
            field = page.get_by_label(f"number input for {label}")
            expect(field).to_have_value(str(value), timeout=10_000)
        dropped = stub_ui.worker.state.dropped
        box.fill("tell me everything")
        box.press("Enter")
        page.get_by_text("word3").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Stop").click()
        until(
            lambda: stub_ui.worker.state.dropped != dropped,
            10,
            0.05,
            "Stop ending the worker's stream",
        )
        reply = page.locator(".bot").last
        time.sleep(0.5)  # an update already on its way to the browser may still land
        stopped_at = reply.inner_text()
        time.sleep(1.0)
        assert reply.inner_text() == stopped_at, "the reply keeps growing after Stop"
        expect(page.get_by_text("tokens/s")).to_have_count(0)

        pick("stub-echo")
        page.get_by_role("button", name="Regenerate").click()
        page.get_by_text("You said: tell me everything (1 messages)").wait_for(timeout=30_000)
        expect(page.get_by_text("word3")).to_have_count(0)
        expect(page.get_by_text("tell me everything", exact=True)).to_have_count(1)

        def ask(question: str, answer: str) -> None:
            box.fill(question)
            box.press("Enter")
            page.get_by_text(answer).wait_for(timeout=30_000)

        ask("one", "You said: one (3 messages)")
        page.locator("#kubechat-clear").click()
        expect(page.get_by_text("tell me everything")).to_have_count(0, timeout=10_000)
        ask("two", "You said: two (1 messages)")  # the conversation was forgotten too
        page.get_by_role("button", name="Clear").and_(page.get_by_title("Clear")).click()
        expect(page.get_by_text("You said: two")).to_have_count(0, timeout=10_000)
        ask("three", "You said: three (1 messages)")
