"""The Gradio chat page: model picker, streamed replies, sampling controls, regenerate/stop/clear.

The conversation sent to the model is kept apart from what the chat window shows: figures under
replies and error notes are for the reader, never part of the prompt. Only the last
``max_history_turns`` exchanges are kept and sent; when the worker still finds the conversation
longer than the model's context window, the oldest exchanges are dropped until it fits.

API clients (gradio_client) reach the same handlers through API-only events (``/chat``,
``/regenerate``): their replies are the plain assistant text, without the figures line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from .backend import ChatBackend, ChatError, Params
from .model_choices import ModelChoices

Message = dict[str, str]
TITLE = "kubechat"
MAX_TOKENS = 2048  # the max tokens slider's end when the model's window is unknown
CSS = ".kubechat-footer {font-size: 0.8em; opacity: 0.7}"


def message_text(content: Any) -> str:
    """A chat message's text: Gradio hands messages back as lists of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    return "".join(part.get("text") or "" for part in content or [] if isinstance(part, dict))


def build_page(
    backend: ChatBackend, *, reload_models: bool, max_history_turns: int
) -> tuple[gr.Blocks, ModelChoices | None]:
    """The Blocks app; ``reload_models`` refreshes the model list on every page load, and then
    the second item keeps the picker's choices in the API info current (None: read once)."""

    def choices() -> list[str]:
        return backend.models()

    with gr.Blocks(title=TITLE) as page:
        gr.Markdown("## kubechat\nChat with the models served by this cluster's workers.")
        with gr.Row():
            model = gr.Dropdown(
                choices=choices(),
                value=(choices() or [None])[0],
                label="Model",
                interactive=True,
                # each page load may bring a newer list than the one the server started with
                allow_custom_value=True,
                scale=3,
            )
            refresh = gr.Button("Refresh models", scale=1)
        chat = gr.Chatbot(
            label="Chat",
            height=460,
            buttons=["copy", "copy_all"],
            placeholder="Pick a model, then ask something below.",
        )
        history = gr.State([])  # what the model sees: [{"role", "content"}, ...]
        with gr.Row():
            box = gr.Textbox(
                placeholder="Ask something and press Enter",
                show_label=False,
                scale=5,
                autofocus=True,
            )
            send = gr.Button("Send", variant="primary", scale=1)
        with gr.Row():
            stop = gr.Button("Stop")
            regenerate = gr.Button("Regenerate")
            clear = gr.Button("Clear", elem_id="kubechat-clear")
        with gr.Accordion("Parameters", open=False):
            temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top p")
            max_tokens = gr.Slider(1, MAX_TOKENS, value=256, step=1, label="Max output tokens")

        async def answer(
            chat_view: list[Message],
            turns: list[Message],
            name: str | None,
            params: Params,
            figures: bool,
        ) -> AsyncIterator[tuple[list[Message], list[Message]]]:
            """Stream the reply to the last user message of ``chat_view``, with the figures line
            under it when ``figures``."""
            question = message_text(chat_view[-1]["content"])
            chat_view = [*chat_view, {"role": "assistant", "content": ""}]
            if not name:
                chat_view[-1]["content"] = "⚠️ No model is available: no live worker was found."
                yield chat_view, turns
                return
            past = turns[-2 * max_history_turns :] if max_history_turns else []
            while True:
                prompt = [*past, {"role": "user", "content": question}]
                text = ""
                try:
                    async for reply in backend.stream(name, prompt, params):
                        text = reply.text
                        chat_view[-1] = {"role": "assistant", "content": text}
                        yield chat_view, turns
                    break
                except ChatError as exc:
                    if exc.too_long and past:
                        past = past[2:]  # forget the oldest exchange and ask again
                        continue
                    chat_view[-1] = {"role": "assistant", "content": f"⚠️ {exc}"}
                    yield chat_view, turns
                    return
            if figures:
                footer = f"\n\n<span class='kubechat-footer'>{reply.stats.line()}</span>"
                chat_view[-1] = {"role": "assistant", "content": text + footer}
            exchange = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": text},
            ]
            turns = [*past, *exchange]
            yield chat_view, turns

        def submitter(figures: bool) -> Any:
            """The handler of a sent message: shown on the page (``figures``) or to the API."""

            async def submit(
                message: str,
                chat_view: list[Message],
                turns: list[Message],
                name: str | None,
                temp: float,
                p: float,
                limit: float,
            ) -> AsyncIterator[tuple[str, list[Message], list[Message]]]:
                if not message.strip():
                    yield "", chat_view, turns
                    return
                chat_view = [*(chat_view or []), {"role": "user", "content": message}]
                params = Params(float(temp), float(p), int(limit))
                async for view, new_turns in answer(chat_view, turns or [], name, params, figures):
                    yield "", view, new_turns

            return submit

        def regenerator(figures: bool) -> Any:
            """The handler of Regenerate: shown on the page (``figures``) or to the API."""

            async def redo(
                chat_view: list[Message],
                turns: list[Message],
                name: str | None,
                temp: float,
                p: float,
                limit: float,
            ) -> AsyncIterator[tuple[list[Message], list[Message]]]:
                chat_view = list(chat_view or [])
                last_user = max(
                    (i for i, m in enumerate(chat_view) if m["role"] == "user"), default=None
                )
                if last_user is None:
                    yield chat_view, turns
                    return
                question = message_text(chat_view[last_user]["content"])
                turns = list(turns or [])
                shown = chat_view[last_user + 1 :]
                reply = message_text(shown[0]["content"]) if shown else ""
                # the exchange being regenerated is in the history only if its reply was complete
                complete = len(turns) >= 2 and turns[-2]["content"] == question
                if complete and turns[-1]["content"] and reply.startswith(turns[-1]["content"]):
                    turns = turns[:-2]
                params = Params(float(temp), float(p), int(limit))
                asked = chat_view[: last_user + 1]
                async for view, new_turns in answer(asked, turns, name, params, figures):
                    yield view, new_turns

            return redo

        async def pick_model(name: str | None) -> tuple[Any, Any, Any]:
            params = await backend.defaults(name) if name else Params()
            return (
                gr.update(value=params.temperature),
                gr.update(value=params.top_p),
                # no longer than the model's context window (the prompt needs room too)
                gr.update(value=params.max_tokens, maximum=params.context_length or MAX_TOKENS),
            )

        def refresh_models(current: str | None) -> Any:
            names = choices()
            value = current if current in names else (names[0] if names else None)
            return gr.update(choices=names, value=value)

        def clear_chat() -> tuple[list[Message], list[Message]]:
            return [], []

        # Named endpoints (gradio_client, scripts): /chat, /regenerate, /clear, /models,
        # /model_defaults, /ask. /chat and /regenerate are API-only events (no trigger on the
        # page) whose replies carry no figures line; the page's own triggers stay unlisted.
        hidden: dict[str, Any] = {"api_visibility": "private"}
        controls = [model, temperature, top_p, max_tokens]
        sliders = [temperature, top_p, max_tokens]
        sending = ([box, chat, history, *controls], [box, chat, history])
        redoing = ([chat, history, *controls], [chat, history])
        events = [
            box.submit(submitter(True), *sending, **hidden),
            send.click(submitter(True), *sending, **hidden),
            regenerate.click(regenerator(True), *redoing, **hidden),
            gr.on([], submitter(False), *sending, api_name="chat"),
            gr.on([], regenerator(False), *redoing, api_name="regenerate"),
        ]
        stop.click(None, cancels=events, **hidden)
        clear.click(clear_chat, None, [chat, history], cancels=events, api_name="clear")
        # the chat window's own trash icon must forget the conversation too
        chat.clear(clear_chat, None, [chat, history], cancels=events, **hidden)
        model.change(pick_model, [model], sliders, api_name="model_defaults")
        refresh.click(refresh_models, [model], [model], api_name="models")
        if reload_models:
            page.load(refresh_models, [model], [model], **hidden).then(
                pick_model, [model], sliders, **hidden
            )
        else:
            page.load(pick_model, [model], sliders, **hidden)

        async def ask(
            model_name: str,
            message: str,
            temperature: float = 0.0,
            top_p: float = 1.0,
            max_tokens: int = 128,
        ) -> AsyncIterator[str]:
            """One question, one streamed answer (for gradio_client and scripts)."""
            params = Params(float(temperature), float(top_p), int(max_tokens))
            messages = [{"role": "user", "content": message}]
            try:
                async for reply in backend.stream(model_name, messages, params):
                    yield reply.text
            except ChatError as exc:
                # an expected outcome (busy, no worker), told to the caller: no traceback in the log
                raise gr.Error(str(exc), print_exception=False) from exc

        gr.api(ask, api_name="ask")
    return page, (ModelChoices(page, model, choices) if reload_models else None)
