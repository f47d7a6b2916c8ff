"""OpenAI request and response types (chat completions, completions, embeddings, models).

The worker serves them and the gateway checks requests against them before routing, so both
answer a malformed request with the same 400. Field bounds follow OpenAI's documented ranges;
anything outside them is a 400 naming the field.
Sampling fields left unset fall back to the model's generation_config.json defaults.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _whole_unicode(value: str) -> str:
    # JSON may escape a lone UTF-16 surrogate ("\\ud800"); no tokenizer can encode one, so such
    # text is refused here (400) instead of failing inside the model (500).
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise refused(
            f"text contains an unpaired UTF-16 surrogate at position {exc.start}"
        ) from None
    return value


Text = Annotated[str, AfterValidator(_whole_unicode)]


def refused(message: str) -> PydanticCustomError:
    """A field's value this server does not take: a 400 naming the field, worded as ``message``
    alone (no validation library's prefix)."""
    return PydanticCustomError("value_error", message)


GREEDY_BELOW = 1e-5  # temperatures under this mean greedy decoding (as in vLLM)


class _Lenient(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do: clients send vendor extras.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    """One part of a list-of-parts message content; only text parts are understood."""

    type: str
    text: Text | None = None


class ToolCallFunction(_Lenient):
    """The function an assistant's tool call names, with its arguments as a JSON string."""

    name: str = Field(min_length=1)
    arguments: str = ""


class ToolCall(_Lenient):
    """One tool call of an assistant message."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Lenient):
    """One chat message: role and text content (an assistant's tool calls, a tool's result)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: Text | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message content as plain text (list-of-parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ValueError(f"content part of type '{part.type}' is not supported; send text")
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(_Lenient):
    """``stream_options``: ``include_usage`` adds a final chunk with token counts."""

    include_usage: bool = False


Stop = Text | Annotated[list[Text], Field(max_length=16)] | None


class SamplingFields(_Lenient):
    """Fields shared by chat completions and completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    # below 0.01 the penalty divides logits into infinities (no token can be sampled)
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=10.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: Stop = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    # vLLM's extension: keep generating past end-of-sequence until max_tokens (benchmarks)
    ignore_eos: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise refused("not supported by this server")
        return value

    @field_validator("temperature")
    @classmethod
    def _tiny_temperature_is_greedy(cls, value: float | None) -> float | None:
        # Dividing logits by a temperature this small overflows to infinity; the limit of
        # sampling as the temperature goes to 0 is greedy decoding, which 0 asks for.
        if value is not None and 0.0 < value < GREEDY_BELOW:
            return 0.0
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: Stop) -> list[str]:
        if value is None:
            return []
        items = [value] if isinstance(value, str) else list(value)
        if any(not s for s in items):
            raise refused("stop strings must not be empty")
        return items

    def stop_strings(self) -> list[str]:
        """The stop strings as a list (``stop`` may be a string or a list)."""
        return list(self.stop or [])


class JsonSchemaFormat(_Lenient):
    """``response_format.json_schema``: the schema the answer must match."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    """``response_format``: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(default=None, validate_default=True)

    @field_validator("json_schema")
    @classmethod
    def _schema_for_json_schema(
        cls, value: JsonSchemaFormat | None, info: ValidationInfo
    ) -> JsonSchemaFormat | None:
        if info.data.get("type") == "json_schema" and value is None:
            raise refused("required when type is json_schema")
        return value


class FunctionDefinition(_Lenient):
    """A function the model may call: name, description, JSON schema of its arguments."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Lenient):
    """One entry of ``tools``."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Lenient):
    """The function a named ``tool_choice`` forces."""

    name: str = Field(min_length=1)


class NamedToolChoice(_Lenient):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # OpenAI parameters this server does not implement: named in a 400 when sent
    functions: list[Any] | None = None
    function_call: Any = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    reasoning_effort: str | None = None
    web_search_options: Any = None
    store: bool | None = None

    @field_validator(
        "functions",
        "function_call",
        "audio",
        "prediction",
        "reasoning_effort",
        "web_search_options",
    )
    @classmethod
    def _not_implemented(cls, value: Any, info: ValidationInfo) -> Any:
        # an empty list of functions and function_call "none" ask for nothing; anything else
        # (web_search_options: {} too) asks for what this server does not do
        if value is not None and value != [] and value != "none":
            hint = "; use tools and tool_choice" if info.field_name.startswith("function") else ""
            raise refused(f"not supported by this server{hint}")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value and value != ["text"]:
            raise refused("this server answers text only")
        return value

    @field_validator("store")
    @classmethod
    def _nothing_stored(cls, value: bool | None) -> bool | None:
        if value:
            raise refused("this server does not store completions")
        return value

    @model_validator(mode="after")
    def _checks(self) -> ChatCompletionRequest:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(
        cls, value: ToolChoice | None, info: ValidationInfo
    ) -> ToolChoice | None:
        tools = info.data.get("tools") or []
        if value == "required" and not tools:
            raise refused("required needs tools")
        if isinstance(value, NamedToolChoice):
            names = [t.function.name for t in tools]
            if value.function.name not in names:
                raise refused(f"names {value.function.name!r}, which is not among tools")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise refused("needs logprobs set to true")
        return value


PromptInput = Text | list[Text] | list[int] | list[list[int]]


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: PromptInput
    # 0 with echo scores the prompt and generates nothing (lm-eval's loglikelihood requests)
    max_tokens: int | None = Field(default=None, ge=0)
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: int | None = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise refused("not supported by this server")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value not in (None, 1, info.data.get("n")):
            raise refused("this server supports best_of equal to n only")
        return value

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, value: PromptInput) -> PromptInput:
        if isinstance(value, list) and not value:
            raise refused("must not be empty")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts: each a string or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # one tokenized prompt
        return list(p)  # list of strings or list of token lists


TokenIds = Annotated[list[int], Field(min_length=1)]
EmbeddingInput = (
    Text
    | Annotated[list[Text], Field(min_length=1, max_length=2048)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1, max_length=2048)]
)


class EmbeddingRequest(_Lenient):
    """POST /v1/embeddings."""

    model: str = Field(min_length=1)
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: Text | None = None

    @field_validator("input")
    @classmethod
    def _no_empty_text(cls, value: EmbeddingInput) -> EmbeddingInput:
        texts = [value] if isinstance(value, str) else value
        if any(isinstance(t, str) and not t for t in texts):
            raise refused("must not contain empty strings")
        return value

    def inputs(self) -> list[str | list[int]]:
        """The input as a list of inputs: each a string or a list of token ids."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if all(isinstance(x, int) for x in value):
            return [list(value)]  # one tokenized input
        return list(value)


class Usage(BaseModel):
    """Token counts of a request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    """A response id such as ``chatcmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """Seconds since the epoch, as OpenAI's ``created``."""
    return int(time.time())


def model_list(
    names: list[str], owned_by: str = "kubechat", extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The body of GET /v1/models; ``extra`` fields are added to every entry."""
    created = now()
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": owned_by,
                **(extra or {}),
            }
            for name in names
        ],
    }
