"""How a worker takes connections from the socket the workers share
(``inference.worker._Acceptor``): one per wake-up, so a burst of connections is
shared among the workers instead of going to the first one awake."""

from __future__ import annotations

import asyncio
import socket

from inference.worker import _Acceptor


class _Recorder(asyncio.Protocol):
    opened: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.opened.append(transport)


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_one_wake_up_takes_one_connection_and_leaves_the_rest_queued() -> None:
    listening = _listening()
    clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
    _Recorder.opened = []

    async def take_one() -> int:
        acceptor = _Acceptor(asyncio.get_running_loop(), listening, _Recorder)
        acceptor._accept_one()  # what one readiness of the socket runs
        for _ in range(200):  # until the accepted connection's transport is made
            if _Recorder.opened:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # time enough for a second one, were it taken
        taken = len(_Recorder.opened)
        for transport in _Recorder.opened:
            transport.close()
        return taken

    try:
        assert asyncio.run(take_one()) == 1
        listening.settimeout(1)
        left = [listening.accept()[0] for _ in range(2)]  # still in the queue
        for connection in left:
            connection.close()
    finally:
        for client in clients:
            client.close()
        listening.close()


def test_a_connection_another_worker_took_is_not_an_error() -> None:
    listening = _listening()  # nothing waiting: accept would block

    async def wake_for_nothing() -> None:
        acceptor = _Acceptor(asyncio.get_running_loop(), listening, _Recorder)
        acceptor.start()
        acceptor._accept_one()
        acceptor.stop()
        acceptor.stop()  # twice is fine

    _Recorder.opened = []
    try:
        asyncio.run(wake_for_nothing())
        assert _Recorder.opened == []
    finally:
        listening.close()


def test_stopped_it_takes_no_connection() -> None:
    listening = _listening()
    client = socket.create_connection(listening.getsockname())
    _Recorder.opened = []

    async def start_then_stop() -> None:
        acceptor = _Acceptor(asyncio.get_running_loop(), listening, _Recorder)
        acceptor.start()
        acceptor.stop()
        await asyncio.sleep(0.05)

    try:
        asyncio.run(start_then_stop())
        assert _Recorder.opened == []
        listening.settimeout(1)
        listening.accept()[0].close()  # the connection is still there for others
    finally:
        client.close()
        listening.close()
