"""Chat prompt assembly in Baichuan-13B-Chat's format (its ``_build_chat_input`` algorithm).

Walking the messages from the newest, a user message contributes ``[user_token_id] + its
tokens`` and an assistant message ``[assistant_token_id] + its tokens + [eos_token_id]``. A round
(a user message and the assistant replies after it) is kept while the kept rounds fit the input
budget; the newest round is always kept. The kept ids are then cut from the left to the budget and
``assistant_token_id`` is appended, whoever spoke last. Assistant messages older than the first
user message belong to no round and are dropped, as in Baichuan's code.

Baichuan-13B-Chat has no system role (it raises). Like Baichuan2-Chat, a system message here is
accepted: its plain tokens go first (several system messages are joined by newlines), and the
rounds get what the budget leaves after it.
"""

from collections.abc import Sequence
from typing import Any


def build_chat_input(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    user_token_id: int,
    assistant_token_id: int,
    eos_token_id: int,
    model_max_length: int,
    max_new_tokens: int = 0,
) -> list[int]:
    """Token ids of the prompt for ``messages`` (dicts with ``role`` and ``content``).

    The input budget is ``model_max_length - max_new_tokens`` but never less than half of
    ``model_max_length``; the result holds at most the budget plus the final assistant token.
    Raises ValueError for a role other than system, user and assistant.
    """
    budget = max(model_max_length - max_new_tokens, model_max_length // 2)
    system_text = "\n".join(m["content"] for m in messages if m["role"] == "system")
    system_ids = _encode(tokenizer, system_text) if system_text else []
    room = budget - len(system_ids)

    kept: list[int] = []
    current: list[int] = []  # the round being collected, newest message last
    for message in reversed(messages):
        role = message["role"]
        if role == "system":
            continue
        content = _encode(tokenizer, message["content"])
        if role == "assistant":
            current = [assistant_token_id, *content, eos_token_id, *current]
        elif role == "user":
            current = [user_token_id, *content, *current]
            if kept and len(kept) + len(current) > room:
                break
            kept = current + kept
            current = []
            if len(kept) >= room:
                break
        else:
            raise ValueError(f"unknown chat role {role!r} (expected system, user or assistant)")
    ids = system_ids + kept
    ids = ids[-budget:] if budget > 0 else []
    ids.append(assistant_token_id)
    return ids


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)
