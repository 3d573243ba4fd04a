"""graviti serve's request-read deadline, on a real uvicorn server on a loopback port: clients
that never finish a request are disconnected; complete requests, even with slow answers, are not."""

import asyncio
import contextlib
import socket
import time

import pytest
import requests
from fastapi import FastAPI

from graviti_dist.infer.serve import server_config
from tests.helpers import serving

READ_TIMEOUT = 0.5


@contextlib.contextmanager
def _server():
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict) -> dict:
        await asyncio.sleep(body.get("think", 0))
        return body

    with serving(app, READ_TIMEOUT) as port:
        yield port


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


HALF_SENT = [
    b"",  # connected, sent nothing
    b"POST /ec",  # half a request line
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",  # headers not finished
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":",  # body cut
]


def test_half_sent_requests_are_disconnected_and_others_still_served():
    with _server() as port:
        slow = []
        for prefix in HALF_SENT * 25:  # 100 connections, far below limit_concurrency
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(prefix)
            slow.append(sock)
        assert requests.post(f"http://127.0.0.1:{port}/echo", json={"x": 1}, timeout=5).json() == {"x": 1}
        time.sleep(READ_TIMEOUT * 2)
        closed = [_closed_by_server(sock, within=1.0) for sock in slow]
        for sock in slow:
            sock.close()
        assert all(closed), f"{closed.count(False)} of {len(closed)} half-sent connections still open"


def test_a_slow_answer_is_not_cut_off_and_keep_alive_requests_get_their_own_deadline():
    with _server() as port, requests.Session() as session:
        think = READ_TIMEOUT * 3
        assert session.post(f"http://127.0.0.1:{port}/echo", json={"think": think}, timeout=10).json() == {"think": think}
        sock = socket.create_connection(("127.0.0.1", port))
        body = b'{"a": 1}'
        request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        sock.sendall(request)
        sock.settimeout(5)
        assert b'{"a":1}' in sock.recv(4096)
        sock.sendall(request[:20])  # the next request on the same connection stalls
        assert _closed_by_server(sock, within=READ_TIMEOUT * 4)
        sock.close()


def test_the_deadline_must_be_positive():
    with pytest.raises(ValueError, match="read_timeout must be positive"):
        server_config(FastAPI(), 0)
