"""Chat prompt assembly with the rule of Baichuan-13B-Chat's ``generation_utils.build_chat_input``.

The prompt is the tokens of the system message (accepted only as the first message; any other
place fails an assertion), then, per message, its role token (``user_token_id`` for a user
message, ``assistant_token_id`` for any other role) followed by its tokens. Replies are not
closed with eos. ``assistant_token_id`` is appended unless the last message is the assistant's,
in which case the model continues that reply. An assistant message before the first user message
is kept, as a round of its own.

A round is a user message with the messages after it up to the next user message. Walking from
the newest, rounds are kept while they fit the history budget (``model_max_length`` less
``max_new_tokens`` less the system tokens); the newest round is always kept, and the whole prompt
is finally cut from the left to ``model_max_length - max_new_tokens``.
"""

from collections.abc import Sequence
from typing import Any

import torch


def build_chat_input(
    model: Any, tokenizer: Any, messages: Sequence[dict[str, str]], max_new_tokens: int = 0
) -> torch.LongTensor:
    """Prompt ids (a ``1 x length`` tensor on the model's device) for ``messages``.

    ``max_new_tokens`` defaults to the model's generation config; role ids come from it too.
    """
    gen = model.generation_config
    max_new_tokens = max_new_tokens or gen.max_new_tokens
    input_budget = model.config.model_max_length - max_new_tokens
    system, rounds = _split_rounds(messages)
    system_ids = tokenizer.encode(system)
    history_budget = input_budget - len(system_ids)

    history: list[int] = []
    for round_messages in reversed(rounds):
        round_ids: list[int] = []
        for message in round_messages:
            role_id = gen.user_token_id if message["role"] == "user" else gen.assistant_token_id
            round_ids += [role_id, *tokenizer.encode(message["content"])]
        if history and len(history) + len(round_ids) > history_budget:
            break
        history = round_ids + history
        if len(history) >= history_budget:
            break

    ids = system_ids + history
    if messages[-1]["role"] != "assistant":
        ids.append(gen.assistant_token_id)
    ids = ids[-input_budget:]
    return torch.tensor([ids], dtype=torch.long, device=model.device)


def _split_rounds(messages: Sequence[dict[str, str]]) -> tuple[str, list[list[dict[str, str]]]]:
    """The system text and the rounds: each starts at a user message (or at the first message)."""
    system = ""
    rounds: list[list[dict[str, str]]] = []
    for index, message in enumerate(messages):
        if message["role"] == "system":
            assert index == 0, "a system message is accepted only as the first message"
            system = message["content"]
        elif message["role"] == "user" or not rounds:
            rounds.append([message])
        else:
            rounds[-1].append(message)
    return system, rounds
