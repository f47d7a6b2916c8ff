"""The server-sent events that end an OpenAI stream, for the worker that writes the stream and
the gateway's relay that may have to end one a worker broke off."""

from __future__ import annotations

import json
from typing import Any

DONE_EVENT = "data: [DONE]\n\n"  # the last event of every stream


def error_event(body: dict[str, Any]) -> str:
    """The event that ends a stream which failed midway (an OpenAI error object)."""
    return f"data: {json.dumps(body)}\n\n"
