"""API keys: from a flag, the environment or a file; compared in constant time; none = open."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubechat.openai_errors import OpenAIError, error_response

ENV_VAR = "KUBECHAT_API_KEYS"


def load_keys(
    flag_keys: list[str] | None = None,
    key_file: str | None = None,
    environ: dict[str, str] | None = None,
) -> list[str]:
    """Collect keys: repeated ``--api-key`` flags, ``$KUBECHAT_API_KEYS`` (comma-separated) and a
    file with one key per line (``#`` comments allowed). An empty result leaves the gateway open."""
    environ = os.environ if environ is None else environ
    keys: list[str] = []
    for k in flag_keys or []:
        keys.extend(part.strip() for part in k.split(","))
    keys.extend(part.strip() for part in environ.get(ENV_VAR, "").split(","))
    if key_file:
        for line in Path(key_file).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(line)
    return [k for k in dict.fromkeys(keys) if k]


class KeyChecker:
    """Checks ``Authorization: Bearer <key>`` (or ``api-key``/``x-api-key``) against known keys."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def open(self) -> bool:
        """True when no key is configured: every request is let in."""
        return not self._keys

    def allows(self, headers: dict[str, str]) -> bool:
        """Whether the request's headers carry a valid key. Every key is compared, in constant
        time, so timing does not reveal how much of a key matched or which key it was."""
        if self.open:
            return True
        presented = _presented_key(headers)
        if presented is None:
            return False
        candidate = presented.encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(candidate, key)
        return ok


def _presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return headers.get("api-key") or headers.get("x-api-key")


def missing_key() -> OpenAIError:
    """The 401 for a request without a valid key."""
    return OpenAIError(
        401,
        "missing or invalid API key: send 'Authorization: Bearer KEY'",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


class KeyGuard:
    """ASGI middleware: a request under ``prefix`` without a valid key gets the 401 before its
    body is read or validated (CORS preflights pass); ``on_reject(path)`` counts it.

    A plain ASGI check instead of a FastAPI dependency: dependency resolution cost the gateway
    ~20% of its CPU per request (a sync dependency runs in a thread pool).
    """

    def __init__(
        self,
        app: Any,
        checker: KeyChecker,
        on_reject: Callable[[str], None] = lambda path: None,
        prefix: str = "/v1/",
    ) -> None:
        self.app = app
        self.checker = checker
        self.on_reject = on_reject
        self.prefix = prefix

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on, or answer 401."""
        if (
            scope["type"] != "http"
            or self.checker.open
            or scope["method"] == "OPTIONS"
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.checker.allows(headers):
            await self.app(scope, receive, send)
            return
        self.on_reject(scope["path"])
        await error_response(missing_key())(scope, receive, send)
