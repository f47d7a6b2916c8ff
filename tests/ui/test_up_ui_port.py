"""Which port ``kubechat up`` gives the chat page."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from kubechat.cli import UsageError
from kubechat.up import DEFAULT_UI_PORT, choose_ui_port
from tests.support.processes import free_port

HOST = "127.0.0.1"


@contextlib.contextmanager
def taken(port: int) -> Iterator[None]:
    """Hold ``port`` (if something else already holds it, it is taken all the same)."""
    with socket.socket() as s:
        with contextlib.suppress(OSError):
            s.bind((HOST, port))
            s.listen()
        yield


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def test_a_requested_free_port_is_used() -> None:
    port = free_port()
    assert choose_ui_port(HOST, port, gateway_port=free_port()) == port


def test_a_requested_port_that_is_taken_is_refused() -> None:
    port = free_port()
    with taken(port), pytest.raises(UsageError, match="--ui-port"):
        choose_ui_port(HOST, port, gateway_port=free_port())


def test_the_gateways_port_is_refused() -> None:
    port = free_port()
    with pytest.raises(UsageError, match="must differ from --port"):
        choose_ui_port(HOST, port, gateway_port=port)


def test_a_taken_default_gives_another_free_port() -> None:
    with taken(DEFAULT_UI_PORT):
        port = choose_ui_port(HOST, None, gateway_port=free_port())
        assert port != DEFAULT_UI_PORT
        assert bindable(port)


def test_the_default_is_never_the_gateways_port() -> None:
    port = choose_ui_port(HOST, None, gateway_port=DEFAULT_UI_PORT)
    assert port != DEFAULT_UI_PORT
