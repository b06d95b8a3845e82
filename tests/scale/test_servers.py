"""The suite's own server starter: a port taken between ``free_port()`` and the server's bind (a
client's outgoing connection can get it from the same ephemeral range) is retried on another
port instead of failing the test that needed the server."""

from __future__ import annotations

import socket
import tempfile

import pytest
import redis

from greenq.embedded import free_port
from tests.scale.servers import data_node, on_a_free_port


def test_a_port_taken_before_the_server_binds_it_is_retried_on_another() -> None:
    folder = tempfile.mkdtemp(prefix="greenq-port-clash-")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        clashing = taken.getsockname()[1]
        port, server = on_a_free_port(lambda p: data_node(p, folder), clashing)
        try:
            assert port != clashing
            assert redis.Redis(port=port).ping()
        finally:
            server.stop()


def test_other_start_failures_are_not_retried() -> None:
    folder = tempfile.mkdtemp(prefix="greenq-port-clash-")
    tries = []

    def start(port: int):  # a server that cannot start for another reason: a bad option
        tries.append(port)
        return data_node(port, folder, "--no-such-option", "1")

    with pytest.raises(RuntimeError, match="exited"):
        on_a_free_port(start, free_port())
    assert len(tries) == 1
