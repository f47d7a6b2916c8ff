"""A tiny Qwen2-layout checkpoint whose chat template renders tools, in the style of Qwen2.5's.

Built locally (random weights, seed 0): a byte-level BPE ``tokenizer.json`` trained on the
standard library's sources with ChatML's special tokens and ``<tool_call>``/``</tool_call>`` as
added tokens (Qwen2.5 adds them the same way), a Qwen2ForCausalLM small enough for tests, and a
ChatML ``chat_template`` written here that does what Qwen2.5's does with tools: lists them as JSON
inside ``<tools></tools>`` in the system turn with instructions to answer
``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, renders an assistant's ``tool_calls``
that way, and wraps ``role: tool`` results in ``<tool_response>`` inside a user turn.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.checkpoints import write_qwen2_layout

NAME = "qwen2.5-tools-tiny"
TOOL_TAGS = ["<tool_call>", "</tool_call>"]

TOOLS_TEMPLATE = r"""
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}
{{- 'You can call these functions, listed in <tools></tools>:\n<tools>' }}
{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}
{{- '\n</tools>\n\nTo call one, answer with its name and arguments as JSON inside '
    + '<tool_call></tool_call>:\n<tool_call>\n{"name": <name>, "arguments": <object>}\n'
    + '</tool_call><|im_end|>\n' }}
{%- elif messages[0].role != 'system' %}
{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- if not (loop.first and tools) %}
{{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' }}
{%- endif %}
{%- elif message.role == 'user' %}
{{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\n' + message.content }}{%- endif %}
{%- for call in message.tool_calls or [] %}
{%- set fn = call.function if call.function is defined else call %}
{%- set args = fn.arguments if fn.arguments is string else (fn.arguments | tojson) %}
{{- '\n<tool_call>\n{"name": "' + fn.name + '", "arguments": ' + args + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
{{- '<|im_start|>user' }}
{%- endif %}
{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
""".strip()


def build_tool_checkpoint(parent: Path) -> Path:
    """Write the checkpoint under ``parent`` and return its directory."""
    directory = parent / NAME
    directory.mkdir(parents=True)
    write_qwen2_layout(
        directory,
        vocab_size=1500,
        chat_template=TOOLS_TEMPLATE,
        max_length=4096,
        sampling={"do_sample": True, "temperature": 0.7, "top_p": 0.8},
        added_tokens=TOOL_TAGS,
    )
    return directory
