"""Prompt building of the tiny Baichuan-13B-layout test checkpoint, with the semantics of the
``generation_utils.py`` that Baichuan-13B-Chat publishes (written here, not copied).

``build_chat_input(model, tokenizer, messages, max_new_tokens=0)``: a system message only as the
first message (an ``AssertionError`` otherwise, as there); messages are grouped into rounds, each
starting at a user message (an opening assistant message makes a round of its own); each message
is its role token (user, else assistant) and ``tokenizer.encode(content)``, no eos; rounds are
kept newest first while they fit ``model_max_length - max_new_tokens`` less the system tokens
(the newest always); the assistant token is appended unless the assistant spoke last; the ids
are cut from the left to the input budget. Returns a ``1 x length`` tensor on the model's device.
"""

import torch


def build_chat_input(model, tokenizer, messages, max_new_tokens=0):
    """Prompt ids for ``messages``, as Baichuan-13B-Chat's ``model.chat()`` builds them."""
    gen = model.generation_config
    max_input = model.config.model_max_length - (max_new_tokens or gen.max_new_tokens)
    system, rounds = "", []
    for position, message in enumerate(messages):
        if message["role"] == "system":
            assert position == 0
            system = message["content"]
        elif rounds and message["role"] != "user":
            rounds[-1].append(message)
        else:
            rounds.append([message])
    system_ids = tokenizer.encode(system)
    room = max_input - len(system_ids)

    history = []
    for conversation_round in rounds[::-1]:
        round_ids = []
        for message in conversation_round:
            role = gen.user_token_id if message["role"] == "user" else gen.assistant_token_id
            round_ids.append(role)
            round_ids.extend(tokenizer.encode(message["content"]))
        if not history or len(history) + len(round_ids) <= room:
            history = round_ids + history
            if len(history) < room:
                continue
        break

    ids = system_ids + history
    if messages[-1]["role"] != "assistant":
        ids.append(gen.assistant_token_id)
    return torch.LongTensor([ids[-max_input:]]).to(model.device)
