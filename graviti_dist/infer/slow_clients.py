"""A request-read deadline for ``graviti serve``: a client gets ``read_timeout`` seconds from
connecting (or from starting its next request on a kept-alive connection) to deliver a whole
request, headers and body; past that its connection is closed.

uvicorn times out only idle kept-alive connections (``timeout_keep_alive``); a connection that
sends half a request line and stops is held forever, so 512 of them (``limit_concurrency``)
lock every other client out. The deadline is armed per request and disarmed once the request is
read, so a slow *answer* (a 1024-id batch) is never cut off.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _DeadlineProtocol(HttpToolsProtocol):
    read_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the first request's deadline runs from the connection
            self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def deadline_protocol(read_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a request-read deadline of ``read_timeout`` seconds."""
    if not read_timeout > 0:
        raise ValueError(f"read_timeout must be positive, got {read_timeout}")
    return type("DeadlineProtocol", (_DeadlineProtocol,), {"read_timeout": float(read_timeout)})
