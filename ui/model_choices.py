"""The model picker's choices as Gradio tells them to API clients, kept equal to the live models.

Gradio renders a component's choices into the app's config, and from there into the API info
(``/gradio_api/info``, gradio_client's ``view_api()``), once: at launch, and the API info again
only on its first request. The page updates its picker on every load, but an API client never
loads the page, so it would see the choices of the moment the page started (none, when the UI
started before its workers). :class:`ModelChoices` re-renders the picker's entry of the config
with the live models when they changed and drops Gradio's cached API info;
:class:`RefreshModelChoices` does that before Gradio answers ``/config`` or ``/info``.

This reaches into Gradio's config and its app's caches (tests/ui/test_page.py checks the result
through gradio_client): the price of a picker whose choices change while the page runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
from gradio.blocks import BlocksConfig

# what Gradio answers from its rendered config: the page's config and the API info, with the
# OpenAPI document made from that info
CONFIG_PATHS = ("/config", "/info", "/openapi.json")


class ModelChoices:
    """Publishes ``names()`` as ``picker``'s choices in ``page``'s config and API info."""

    def __init__(
        self, page: gr.Blocks, picker: gr.Dropdown, names: Callable[[], list[str]]
    ) -> None:
        self.page = page
        self.picker = picker
        self.names = names
        self._published = [value for _, value in picker.choices]

    def sync(self) -> bool:
        """Publish the live names if they changed since last time; True when they did."""
        names = self.names()
        if names == self._published:
            return False
        self.picker.choices = [(name, name) for name in names]
        components = self.page.config["components"]
        for i, entry in enumerate(components):
            if entry["id"] == self.picker._id:
                components[i] = BlocksConfig.config_for_block(self.picker._id, [], self.picker)
        app = getattr(self.page, "server_app", None)
        if app is not None:  # launched: forget the API info rendered from the old choices
            app.api_info = None
            app.all_app_info = None
            app.page_api_info.clear()
        self._published = names
        return True


class RefreshModelChoices:
    """ASGI middleware for the page's app: brings the picker's choices up to date before Gradio
    answers a request for its config or API info (a few file reads or a cache lookup)."""

    def __init__(self, app: Any, choices: ModelChoices) -> None:
        self.app = app
        self.choices = choices

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Sync on config and info requests, then pass every request on."""
        if scope["type"] == "http" and scope["path"].rstrip("/").endswith(CONFIG_PATHS):
            self.choices.sync()
        await self.app(scope, receive, send)
