"""Admission control: at most ``limit`` sequences in the worker; the next one gets 429.

Like FastChat's ``--limit-worker-concurrency``, but a full worker answers at once with 429 and
``Retry-After`` instead of letting requests pile up unseen: nothing is silently dropped, and a
gateway can send the request to another worker.
"""

from __future__ import annotations

from kubechat.openai_errors import bad_request, overloaded


class Slot:
    """Admitted sequences; ``release()`` gives them back (safe to call twice)."""

    def __init__(self, admission: Admission, sequences: int) -> None:
        self._admission = admission
        self._sequences = sequences

    def release(self) -> None:
        """Free the slots."""
        if self._sequences:
            self._admission.in_flight -= self._sequences
            self._sequences = 0


class Admission:
    """Counts admitted sequences against a limit."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.in_flight = 0

    def acquire(self, sequences: int = 1) -> Slot:
        """Take ``sequences`` slots, or raise a 429 OpenAIError when they are not free."""
        if sequences > self.limit:
            # Never admissible, so not a 429: a retry (by the gateway or the client) cannot help.
            raise bad_request(
                f"this request needs {sequences} sequences (n) but the worker's limit is "
                f"{self.limit}; lower n",
                param="n",
                code="too_many_sequences",
            )
        if self.in_flight + sequences > self.limit:
            raise overloaded(
                f"worker is at its concurrency limit ({self.limit} sequences); retry shortly"
            )
        self.in_flight += sequences
        return Slot(self, sequences)
