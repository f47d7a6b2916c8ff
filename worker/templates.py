"""Chat prompt templates: OpenAI chat messages -> the token ids a model expects.

Which template a worker uses, first match wins:

1. ``--conv-template NAME`` (``spec.model.convTemplate``): a built-in by its name or by the name
   FastChat's conversation.py registers for the same format (``FASTCHAT_ALIASES``);
2. the chat-input builder a remote-code checkpoint ships, the one its ``model.chat()`` calls
   (Baichuan-13B-Chat's ``generation_utils.build_chat_input``; see :mod:`.chat_builders`);
3. the tokenizer's own ``chat_template`` (tokenizer_config.json);
4. a guess from the model family: role token ids ``user_token_id`` and ``assistant_token_id`` in
   generation_config.json mean ``baichuan``; a tokenizer named like Vicuna or Llama-2-chat, or
   one whose vocabulary has ``<|im_start|>``/``<|im_end|>``, means ``vicuna``, ``llama-2`` or
   ``chatml``;
5. the fallback ``vicuna`` (``FALLBACK_TEMPLATE``): its "USER: ... ASSISTANT:" cues get a
   sensible reply even from a base model that was never tuned for chat.

Messages are OpenAI dicts: ``role`` system/developer/user/assistant and ``content`` a string or a
list of parts whose text parts are joined. ``developer`` counts as ``system``. Prompts are not
truncated here; the API rejects prompts longer than the context.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from .chat_builders import ChatInputBuilder, find_chat_input_builder

FALLBACK_TEMPLATE = "vicuna"

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

_ROLES = ("system", "user", "assistant")


def message_text(message: Mapping[str, Any]) -> str:
    """A message's content as text: a string as is, the text parts of a list joined, None as ""."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text":
            raise ValueError(f"content parts of type {kind!r} are not supported; send text")
        texts.append(part.get("text") or "")
    return "".join(texts)


def split_messages(
    messages: list[Mapping[str, Any]], template: str, *, merge: bool = True
) -> tuple[str, list[tuple[str, str]]]:
    """The system text (system messages joined by newlines) and the user/assistant turns.

    With ``merge``, consecutive messages of the same role are merged with a newline, so turns
    alternate. Raises ValueError for a role the built-in templates do not know.
    """
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in messages:
        role = message.get("role")
        role = "system" if role == "developer" else role
        if role not in _ROLES:
            raise ValueError(
                f"role {role!r} is not supported by the {template!r} chat template; "
                "use system, user or assistant"
            )
        text = message_text(message)
        if role == "system":
            system.append(text)
        elif merge and turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n" + text)
        else:
            turns.append((role, text))
    return "\n".join(system), turns


class ChatTemplate(ABC):
    """Turns chat messages into prompt token ids, and says when the reply ends.

    ``stop_token_ids``: ids that end the reply when generated. ``stop_strings``: texts that end
    it when the model prints them as plain text (e.g. ``"</s>"`` spelled out).
    """

    name: str
    stop_strings: list[str]
    stop_token_ids: set[int]
    #: whether ``encode`` takes ``tools`` (only a checkpoint's own template can render them)
    supports_tools: bool = False

    def __init__(self, tokenizer: Any, generation_config: Any = None) -> None:
        self.tokenizer = tokenizer
        self.stop_token_ids = _eos_ids(tokenizer, generation_config)
        self.stop_strings = []

    @abstractmethod
    def encode(self, messages: list[Mapping[str, Any]]) -> list[int]:
        """Token ids of the whole prompt, ending where the assistant's reply starts."""

    def _text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def __repr__(self) -> str:
        return f"<ChatTemplate {self.name}>"


class BaichuanTemplate(ChatTemplate):
    """Baichuan-13B-Chat, as ``build_chat_input`` in its ``generation_utils.py`` builds a prompt.

    The plain tokens of a system message (allowed only as the first message), then per message
    its role token (``user_token_id`` for user messages, ``assistant_token_id`` for any other)
    and its tokens, with no eos after replies; ``assistant_token_id`` is appended unless the
    assistant spoke last (the reply then continues that message). Texts are encoded as that
    code encodes them (``tokenizer.encode(text)``; Baichuan's tokenizer adds no bos). Ids come
    from generation_config.json. Unlike Baichuan's ``chat()``, no round is dropped to fit the
    context: a prompt that is too long is the API's 400. A checkpoint that ships its own
    builder is served with that builder instead (:class:`CheckpointTemplate`); this template is
    for ``--conv-template baichuan`` and checkpoints that have only the role ids.
    """

    name = "baichuan"

    def __init__(self, tokenizer: Any, generation_config: Any = None) -> None:
        super().__init__(tokenizer, generation_config)
        user = _config_value(generation_config, "user_token_id")
        assistant = _config_value(generation_config, "assistant_token_id")
        if not isinstance(user, int) or not isinstance(assistant, int):
            raise ValueError(
                "the baichuan chat template needs user_token_id and assistant_token_id "
                "in generation_config.json"
            )
        self.user_token_id = user
        self.assistant_token_id = assistant
        # A reply that runs on into a new user turn is over.
        self.stop_token_ids = self.stop_token_ids | {user}

    def encode(self, messages: list[Mapping[str, Any]]) -> list[int]:
        """Token ids of the whole prompt, ending with the assistant role token unless the
        assistant spoke last. Raises ValueError for a system message that is not the first."""
        system = ""
        ids: list[int] = []
        for index, message in enumerate(messages):
            role = message.get("role")
            if role in ("system", "developer"):
                if index:
                    raise ValueError(
                        "the baichuan chat template takes a system message only as the first "
                        f"message (message {index} is one), as Baichuan's build_chat_input does"
                    )
                system = message_text(message)
                continue
            role_id = self.user_token_id if role == "user" else self.assistant_token_id
            ids += [role_id, *self.tokenizer.encode(message_text(message))]
        ids = list(self.tokenizer.encode(system)) + ids
        if not messages or messages[-1].get("role") != "assistant":
            ids.append(self.assistant_token_id)
        return ids


class CheckpointTemplate(ChatTemplate):
    """The prompt builder a remote-code checkpoint ships (see :mod:`.chat_builders`): its ids
    are ``model.chat()``'s. Stops like the built-in template of the same family."""

    name = "checkpoint"

    def __init__(self, tokenizer: Any, generation_config: Any, builder: ChatInputBuilder) -> None:
        super().__init__(tokenizer, generation_config)
        self.builder = builder
        user = _config_value(generation_config, "user_token_id")
        if isinstance(user, int):  # Baichuan's role ids: a new user turn ends the reply
            self.stop_token_ids = self.stop_token_ids | {user}

    def encode(self, messages: list[Mapping[str, Any]]) -> list[int]:
        """The builder's ids; ValueError with the builder's reason when it refuses them."""
        plain = [{**message, "content": message_text(message)} for message in messages]
        return self.builder.encode(plain)

    def __repr__(self) -> str:
        return f"<ChatTemplate {self.name}: {self.builder.origin}>"


class Llama2Template(ChatTemplate):
    """Llama-2-chat: ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {reply} </s>``.

    Each finished exchange is wrapped in bos ... eos; the last user message opens a new one.
    """

    name = "llama-2"

    def __init__(self, tokenizer: Any, generation_config: Any = None) -> None:
        super().__init__(tokenizer, generation_config)
        self.stop_strings = ["</s>"]

    def encode(self, messages: list[Mapping[str, Any]]) -> list[int]:
        """Token ids of the whole prompt, ending with ``[/INST]``."""
        system, turns = split_messages(messages, self.name)
        bos = _id_list(self.tokenizer.bos_token_id)
        eos = _id_list(self.tokenizer.eos_token_id)
        exchanges: list[list[str]] = []
        for role, text in turns:
            if role == "user" or not exchanges:
                exchanges.append([text.strip() if role == "user" else ""])
            if role == "assistant":
                exchanges[-1].append(text.strip())
        if system and exchanges:
            exchanges[0][0] = f"<<SYS>>\n{system.strip()}\n<</SYS>>\n\n{exchanges[0][0]}"
        elif system:
            exchanges.append([f"<<SYS>>\n{system.strip()}\n<</SYS>>\n\n"])
        ids: list[int] = []
        for exchange in exchanges:
            if len(exchange) == 2:
                text = f"[INST] {exchange[0]} [/INST] {exchange[1]} "
                ids += bos + self._text_ids(text) + eos
            else:
                ids += bos + self._text_ids(f"[INST] {exchange[0]} [/INST]")
        return ids


class VicunaTemplate(ChatTemplate):
    """Vicuna v1.1: ``{system} USER: {user} ASSISTANT: {reply}</s>USER: {user} ASSISTANT:``.

    The system line defaults to Vicuna's own; the text is encoded whole, with the tokenizer's
    bos.
    """

    name = "vicuna"

    def __init__(self, tokenizer: Any, generation_config: Any = None) -> None:
        super().__init__(tokenizer, generation_config)
        # A base model without chat tuning tends to write the next user turn itself.
        self.stop_strings = ["</s>", "USER:"]

    def encode(self, messages: list[Mapping[str, Any]]) -> list[int]:
        """Token ids of the whole prompt, ending with ``ASSISTANT:``."""
        system, turns = split_messages(messages, self.name)
        if not any(m.get("role") in ("system", "developer") for m in messages):
            system = VICUNA_SYSTEM
        text = f"{system} " if system else ""
        for role, content in turns:
            if role == "user":
                text += f"USER: {content} "
            else:
                text += f"ASSISTANT: {content}</s>"
        text += "ASSISTANT:"
        return list(self.tokenizer.encode(text))


class ChatMLTemplate(ChatTemplate):
    """ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then the assistant's."""

    name = "chatml"

    def __init__(self, tokenizer: Any, generation_config: Any = None) -> None:
        super().__init__(tokenizer, generation_config)
        self.stop_strings = ["<|im_end|>"]
        end = _single_token_id(tokenizer, "<|im_end|>")
        if end is not None:
            self.stop_token_ids = self.stop_token_ids | {end}

    def encode(self, messages: list[Mapping[str, Any]]) -> list[int]:
        """Token ids of the whole prompt, ending with ``<|im_start|>assistant\\n``."""
        system, turns = split_messages(messages, self.name)
        parts = [("system", system)] if system else []
        text = "".join(
            f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in parts + turns
        )
        return self._text_ids(text + "<|im_start|>assistant\n")


class RawTemplate(ChatTemplate):
    """No chat format: the messages' texts joined by newlines, with the tokenizer's bos."""

    name = "raw"

    def encode(self, messages: list[Mapping[str, Any]]) -> list[int]:
        """Token ids of the messages' texts, one per line."""
        return list(self.tokenizer.encode("\n".join(message_text(m) for m in messages)))


class TokenizerTemplate(ChatTemplate):
    """The tokenizer's own ``chat_template`` (Jinja), rendered with the generation prompt."""

    name = "tokenizer"

    def __init__(self, tokenizer: Any, generation_config: Any = None) -> None:
        super().__init__(tokenizer, generation_config)
        eos = getattr(tokenizer, "eos_token", None)
        self.stop_strings = [eos] if isinstance(eos, str) and eos else []
        self.supports_tools = _renders_tools(tokenizer.chat_template)

    def encode(
        self, messages: list[Mapping[str, Any]], tools: list[dict] | None = None
    ) -> list[int]:
        """Token ids of the rendered template (its text carries any bos itself); ``tools``
        (OpenAI's function definitions) are rendered by the template itself.

        A template that rejects the conversation (e.g. roles that do not alternate) raises
        ValueError with the template's own message.
        """
        from jinja2 import TemplateError

        plain = [{**message, "content": message_text(message)} for message in messages]
        try:
            text = self.tokenizer.apply_chat_template(
                plain, tools=tools, add_generation_prompt=True, tokenize=False
            )
        except TemplateError as err:
            raise ValueError(f"the model's chat template refused the messages: {err}") from err
        return self._text_ids(text)


def _renders_tools(chat_template: Any) -> bool:
    """Whether a Jinja chat template reads the ``tools`` variable (a dict of named templates
    counts when any of them does)."""
    from jinja2 import Environment, TemplateSyntaxError, meta

    sources = chat_template.values() if isinstance(chat_template, dict) else [chat_template]
    for source in sources:
        if not isinstance(source, str):
            continue
        try:
            if "tools" in meta.find_undeclared_variables(Environment().parse(source)):
                return True
        except TemplateSyntaxError:
            continue
    return False


_BUILT_INS: dict[str, Callable[[Any, Any], ChatTemplate]] = {
    cls.name: cls
    for cls in (BaichuanTemplate, Llama2Template, VicunaTemplate, ChatMLTemplate, RawTemplate)
}


# FastChat's conversation.py names for formats built in here, so FastChat's --conv-template values
# work unchanged. ``llama-2`` and ``raw`` are spelled the same in both. FastChat registers no plain
# ChatML template: its ChatML-style ones (qwen-7b-chat, mpt-7b-chat, ...) each carry a default
# system prompt of their own, so none of them is an alias of ``chatml``.
FASTCHAT_ALIASES = {
    "vicuna_v1.1": "vicuna",
    "baichuan-chat": "baichuan",
}


def available_templates() -> list[str]:
    """Names of the built-in templates (kubechat's own names)."""
    return sorted(_BUILT_INS)


def accepted_template_names() -> list[str]:
    """Every name ``--conv-template`` accepts: the built-ins and FastChat's aliases of them."""
    return sorted({*_BUILT_INS, *FASTCHAT_ALIASES})


def canonical_template_name(name: str) -> str:
    """The built-in template ``name`` stands for; ValueError listing the accepted names if none."""
    canonical = FASTCHAT_ALIASES.get(name, name)
    if canonical not in _BUILT_INS:
        raise ValueError(
            f"unknown chat template {name!r}; choose one of {', '.join(accepted_template_names())}"
        )
    return canonical


def resolve_template(
    name: str | None, tokenizer: Any, generation_config: Any = None, model: Any = None
) -> ChatTemplate:
    """The chat template to use: ``name`` if given, else the builder the checkpoint's own code
    ships (``model`` from remote code), else the tokenizer's, else a guess.

    ``generation_config`` is a transformers GenerationConfig, a dict, or None. Raises
    ValueError for an unknown name (listing the accepted ones) or a template the model cannot
    use.
    """
    if name:
        return _BUILT_INS[canonical_template_name(name)](tokenizer, generation_config)
    builder = find_chat_input_builder(model, tokenizer) if model is not None else None
    if builder is not None:
        return CheckpointTemplate(tokenizer, generation_config, builder)
    if getattr(tokenizer, "chat_template", None):
        return TokenizerTemplate(tokenizer, generation_config)
    return _BUILT_INS[guess_family(tokenizer, generation_config)](tokenizer, generation_config)


def guess_family(tokenizer: Any, generation_config: Any = None) -> str:
    """The built-in template a model without a chat_template most likely wants."""
    if isinstance(_config_value(generation_config, "user_token_id"), int) and isinstance(
        _config_value(generation_config, "assistant_token_id"), int
    ):
        return "baichuan"
    model_name = str(getattr(tokenizer, "name_or_path", "")).lower()
    if "vicuna" in model_name:
        return "vicuna"
    if ("llama-2" in model_name or "llama2" in model_name) and "chat" in model_name:
        return "llama-2"
    if all(_single_token_id(tokenizer, t) is not None for t in ("<|im_start|>", "<|im_end|>")):
        return "chatml"
    return FALLBACK_TEMPLATE


def _config_value(generation_config: Any, key: str) -> Any:
    if generation_config is None:
        return None
    if isinstance(generation_config, Mapping):
        return generation_config.get(key)
    return getattr(generation_config, key, None)


def _id_list(value: Any) -> list[int]:
    return [value] if isinstance(value, int) else []


def _eos_ids(tokenizer: Any, generation_config: Any) -> set[int]:
    ids = set(_id_list(getattr(tokenizer, "eos_token_id", None)))
    eos = _config_value(generation_config, "eos_token_id")
    ids.update(eos if isinstance(eos, list | tuple) else _id_list(eos))
    return ids


def _single_token_id(tokenizer: Any, token: str) -> int | None:
    """The id of ``token`` when the tokenizer has it as one token, else None."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    token_id = vocab.get(token)
    return token_id if isinstance(token_id, int) else None
