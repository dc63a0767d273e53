"""A TCP proxy for tests that damage the network between real processes.

Runs its own asyncio loop in a daemon thread, so it works beside blocking test code and
beside a test's own event loop. Faults it can inject:

* :meth:`NetProxy.cut`: close the listener and abort every live connection (clients see
  resets, then "connection refused"), until :meth:`NetProxy.restore` listens again on the
  same port.
* ``tls=``: the listener speaks TLS (a TLS terminator in front of a plaintext server).
* :meth:`NetProxy.drop_replies`: keep forwarding requests but swallow the answers (from the
  first request containing ``after``, if given), so a request can take effect on the server
  while its client never learns it (a lost reply), until the next :meth:`cut`.

>>> import socket, threading
>>> echo = socket.create_server(("127.0.0.1", 0))
>>> def serve():
...     conn, _ = echo.accept()
...     conn.sendall(conn.recv(100))
...     conn.close()
>>> threading.Thread(target=serve, daemon=True).start()
>>> with NetProxy(echo.getsockname()[1]) as proxy:
...     with socket.create_connection(("127.0.0.1", proxy.port)) as c:
...         c.sendall(b"ping")
...         c.recv(100)
b'ping'
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from typing import Any

from streamlearn.tools.harness import free_port


class NetProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.target_port = target_port
        self.tls = tls  # terminate TLS on the listener (like stunnel or a cloud TLS endpoint)
        self.port = port or free_port()
        self.connections = 0  # accepted since start (a reconnecting client shows up here)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"netproxy:{self.port}", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._drop_replies = False
        self._drop_after: bytes | None = None

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> NetProxy:
        self._thread.start()
        self.restore()
        return self

    def cut(self) -> None:
        """Stop listening and abort every live connection in both directions."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen again on the same port; forward normally."""
        self._call(self._listen())

    def drop_replies(self, after: bytes | None = None) -> None:
        """Until the next cut, the server's bytes never reach the clients: from now on, or from
        the first request chunk that contains ``after`` (e.g. ``b"MULTI"``)."""
        self._drop_after = after
        self._drop_replies = after is None

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ the loop's side
    async def _listen(self) -> None:
        self._drop_replies, self._drop_after = False, None
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True,
                                                      ssl=self.tls)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._live):
            w.transport.abort()  # RST: no graceful FIN, like a dropped network path
        self._live.clear()
        self._drop_replies, self._drop_after = False, None

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            c_writer.transport.abort()
            return
        self._live.update((c_writer, s_writer))
        for sock in (c_writer.get_extra_info("socket"), s_writer.get_extra_info("socket")):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._pump(c_reader, s_writer, replies=False),
                             self._pump(s_reader, c_writer, replies=True))
        for w in (c_writer, s_writer):
            self._live.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool) -> None:
        try:
            while data := await reader.read(65536):
                if not replies and self._drop_after is not None and self._drop_after in data:
                    self._drop_replies = True  # before forwarding: its reply must not slip through
                if replies and self._drop_replies:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()  # one side gone: the other goes too
