"""The served app's listening socket: every waiting connection is taken at one wake-up.

uvloop (libuv) accepts one connection per turn of its event loop, and a busy server's turn
answers every request ready on its open connections, so connections opened together were
accepted one busy turn after another (the 64th of 64 after 390 ms, measured: see
`voxledger.adapters.http.server.Server`). Here the connections wait in the backlog before
the loop runs at all, so the count of turns is exact: no timing is involved."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

from voxledger.adapters.http.server import ACCEPT_AT_ONCE, _Acceptor, bound_socket
from voxledger.domain.errors import BadInput

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def turns_until(loop: asyncio.AbstractEventLoop, done: Callable[[], bool], most: int) -> int:
    """Turns of the loop (each a `sleep(0)` run through) until ``done``; ``most`` + 1 if
    it never is."""
    for turn in range(1, most + 1):
        loop.run_until_complete(asyncio.sleep(0))
        if done():
            return turn
    return most + 1


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_one_wake_up_takes_every_waiting_connection(loop_name: str) -> None:
    loop = LOOPS[loop_name]()
    made: list[asyncio.BaseTransport] = []

    class Counting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    count = 40
    assert count < ACCEPT_AT_ONCE
    clients: list[socket.socket] = []
    try:
        with bound_socket("127.0.0.1", 0) as sock:
            acceptor = _Acceptor(loop, sock, Counting, None, 100)
            address = sock.getsockname()
            # Each handshake completes in the kernel: all of them wait in the backlog.
            clients = [socket.create_connection(address) for _ in range(count)]
            # One turn takes them all (uvloop's own server, given the same socket: 11 turns
            # here, a few connections each; a busy server's turn is long).
            assert turns_until(loop, lambda: len(made) == count, 5) <= 2
            assert len(made) == count

            acceptor.close()  # stops accepting; what comes now waits in the backlog
            late = socket.create_connection(address)
            clients.append(late)
            assert turns_until(loop, lambda: len(made) > count, 5) == 6
            assert len(made) == count
    finally:
        for client in clients:
            client.close()
        for transport in made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_a_port_in_use_is_named() -> None:
    with bound_socket("127.0.0.1", 0) as first:
        first.listen(1)
        port = first.getsockname()[1]
        with (
            pytest.raises(BadInput, match=f"cannot serve on 127.0.0.1:{port}"),
            bound_socket("127.0.0.1", port),
        ):
            pass
