"""The chat-input builder a remote-code checkpoint ships, found and called as its prompt rule.

Some checkpoints that run their own code (``trust_remote_code``) build chat prompts in Python
rather than with a tokenizer ``chat_template``. Baichuan-13B-Chat's ``model.chat()`` calls
``build_chat_input(model, tokenizer, messages, max_new_tokens)`` from the checkpoint's
``generation_utils.py``; its first release called the model's own
``_build_chat_input(tokenizer, messages, max_new_tokens)``, and later revisions still carry that
method beside the function. Both return a ``1 x length`` tensor of ids. The builder used is the
one the model's ``chat()`` calls, so the worker's prompt is ``model.chat()``'s prompt.

Context-length policy: both Baichuan builders drop the oldest rounds (and then cut from the left)
to leave ``max_new_tokens`` of room. The worker calls the builder with no context limit instead,
so it never drops a message: a conversation that does not fit is the API's 400
(``context_length_exceeded``), as for every other model, and any conversation that fits gets
exactly the ids ``model.chat()`` would build for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .remote_code import is_remote_code, where_raised

# What a builder sees as the model's context length: large enough that it keeps every message.
UNBOUNDED_CONTEXT = 2**62

_FUNCTION = "build_chat_input"
_METHOD = "_build_chat_input"
# Errors a builder raises for a conversation it does not take (an ``assert`` on the roles, a
# ValueError for an unknown role, a missing key ...): the client's fault, so a 400.
_REFUSALS = (AssertionError, ValueError, KeyError, TypeError, IndexError)


@dataclass(frozen=True)
class ChatInputBuilder:
    """A checkpoint's own prompt builder, bound to its model and tokenizer."""

    origin: str  # "generation_utils.build_chat_input", "BaichuanForCausalLM._build_chat_input"
    call: Callable[[list[dict[str, Any]]], Any]

    def encode(self, messages: list[dict[str, Any]]) -> list[int]:
        """The builder's prompt ids for ``messages`` (dicts with ``role`` and string ``content``).

        Raises ValueError naming the builder's file, line and failing statement when it refuses
        the conversation (Baichuan's asserts that a system message comes first).
        """
        try:
            result = self.call([dict(m) for m in messages])
        except _REFUSALS as err:
            raise ValueError(
                f"the checkpoint's {self.origin} refused them: {where_raised(err)}"
            ) from err
        return _as_ids(result, self.origin)


def find_chat_input_builder(model: Any, tokenizer: Any) -> ChatInputBuilder | None:
    """The builder ``model.chat()`` uses, when the model's class is remote code that has one.

    Looks at the names ``chat()`` refers to: ``build_chat_input`` (resolved in the globals of
    the module that defines ``chat``, i.e. imported from ``generation_utils``) or
    ``_build_chat_input`` (a method). A class without ``chat`` is taken at its module's
    ``build_chat_input`` or its ``_build_chat_input`` method, in that order.
    """
    cls = type(model)
    if not is_remote_code(cls):
        return None
    chat = inspect.getattr_static(cls, "chat", None)
    chat = inspect.unwrap(chat) if inspect.isfunction(chat) else None  # under @torch.no_grad()
    names: tuple[str, ...] = ()
    scope: Mapping[str, Any] = vars(inspect.getmodule(cls) or object)
    if inspect.isfunction(chat):
        names, scope = chat.__code__.co_names, chat.__globals__
    function = scope.get(_FUNCTION) if callable(scope.get(_FUNCTION)) else None
    method = inspect.getattr_static(cls, _METHOD, None)
    method = method if inspect.isfunction(method) else None
    if _METHOD in names and _FUNCTION not in names and method is not None:
        function = None  # chat() calls the method: that is the prompt it builds
    view = _WithoutContextLimit(model)
    if function is not None:
        module = Path(inspect.getsourcefile(function) or "").stem or function.__module__
        return ChatInputBuilder(
            origin=f"{module}.{_FUNCTION}",
            call=lambda messages: function(view, tokenizer, messages, 1),
        )
    if method is not None:
        return ChatInputBuilder(
            origin=f"{cls.__name__}.{_METHOD}",
            call=lambda messages: method(view, tokenizer, messages, 1),
        )
    return None


class _WithoutContextLimit:
    """The model as a builder sees it: the same in every respect but an unbounded context
    length, so that the builder keeps every message (see the module's docstring)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.config = _ConfigWithoutLimit(model.config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _ConfigWithoutLimit:
    def __init__(self, config: Any) -> None:
        self._config = config
        self.model_max_length = UNBOUNDED_CONTEXT
        self.max_position_embeddings = UNBOUNDED_CONTEXT

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


def _as_ids(result: Any, origin: str) -> list[int]:
    """A builder's result (a ``1 x n`` tensor, or a list) as a flat list of ints."""
    ids = result.tolist() if hasattr(result, "tolist") else result
    if isinstance(ids, list | tuple) and len(ids) == 1 and isinstance(ids[0], list | tuple):
        ids = ids[0]
    if not isinstance(ids, list | tuple) or not all(isinstance(i, int) for i in ids):
        raise RuntimeError(f"the checkpoint's {origin} returned {type(result).__name__}, not ids")
    return list(ids)
