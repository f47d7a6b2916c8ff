"""Chat prompt assembly in Baichuan-13B-Chat's format.

A prompt is the optional system text, then for every message its role token (user or assistant)
followed by the message's tokens, and a final assistant token when the model is to answer. When
the conversation is too long, whole rounds are dropped from the left.
"""

from collections.abc import Sequence
from typing import Any


def build_chat_input(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    user_token_id: int,
    assistant_token_id: int,
    model_max_length: int,
    max_new_tokens: int = 0,
) -> list[int]:
    """Token ids of the prompt for ``messages`` (dicts with ``role`` and ``content``).

    Roles are ``system`` (its text goes first, once), ``user`` and ``assistant``. The prompt keeps
    at most ``model_max_length - max_new_tokens`` ids (never less than half the model length):
    the oldest rounds are dropped first, and if the newest round alone is too long its oldest
    tokens are cut. It ends with ``assistant_token_id`` unless the last message is the assistant's
    (then the model continues that reply).
    """
    budget = max(model_max_length - max_new_tokens, model_max_length // 2)
    system_text = "".join(m["content"] for m in messages if m["role"] == "system")
    system_ids = _encode(tokenizer, system_text) if system_text else []
    turns = [m for m in messages if m["role"] != "system"]
    wants_reply = not turns or turns[-1]["role"] != "assistant"
    room = budget - len(system_ids) - int(wants_reply)

    history: list[int] = []
    pending: list[int] = []  # a round being collected backwards: assistant reply(s) then its user
    for message in reversed(turns):
        role = message["role"]
        if role == "user":
            token_id = user_token_id
        elif role == "assistant":
            token_id = assistant_token_id
        else:
            raise ValueError(f"unknown chat role {role!r} (expected system, user or assistant)")
        pending = [token_id, *_encode(tokenizer, message["content"]), *pending]
        if role == "user":
            if history and len(history) + len(pending) > room:
                pending = []
                break
            history = pending + history
            pending = []
            if len(history) >= room:
                break
    if pending and (not history or len(history) + len(pending) <= room):
        # a conversation that starts with the assistant: keep that opening reply if it fits
        history = pending + history
    history = history[-room:] if room > 0 else []
    ids = system_ids + history
    if wants_reply:
        ids.append(assistant_token_id)
    return ids


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)
