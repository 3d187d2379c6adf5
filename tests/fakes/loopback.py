"""A threaded HTTP/1.1 server on loopback for fakes of other people's APIs.

The fake decides what to answer (a `Reply`); this module deals with sockets: keep-alive, so that
clients reuse their pooled connections as they would with the real service, one write per answer,
and answers held back or never given, which is how a fake provider times out.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-able; None sends an empty body
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to hold the answer back
    after_delay: Reply | None = None  # what to answer once the delay has passed (default: this)
    reset: bool = False  # close the connection instead of answering


# (method, target as sent, headers, body) -> Reply
App = Callable[[str, str, Mapping[str, str], bytes], Reply]


class LoopbackServer:
    """Serves `app` on host:port (port 0: a free one) in a background thread until stop()."""

    def __init__(self, app: App, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.stopping = threading.Event()
        self._server = _Server((host, port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"LoopbackServer:{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far: far fewer than requests when clients keep alive."""
        return self._server.connections_opened

    def stop(self) -> None:
        self.stopping.set()  # releases answers held back by a delay
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "LoopbackServer/1.0"
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # thousands of requests a second would drown the test output

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client went away mid-request (a worker killed while sending): like a real
            # server, there is no request to answer, and nothing was received.
            self.close_connection = True
            return
        owner = self.server.owner
        reply = owner.app(self.command, self.path, dict(self.headers.items()), body)
        if reply.delay:
            if owner.stopping.wait(reply.delay):
                self.close_connection = True
                return
            reply = reply.after_delay or reply
        if reply.reset:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        lines = [
            f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}",
            f"Date: {self.date_time_string()}",
            f"Content-Length: {len(payload)}",
            *(f"{name}: {value}" for name, value in reply.headers.items()),
        ]
        if payload:
            lines.append("Content-Type: application/json; charset=utf-8")
        if self.close_connection:
            lines.append("Connection: close")
        # One write: headers and body in two packets would cost a round trip on keep-alive.
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        except OSError:  # the client gave up waiting and closed its end
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of new connections from several worker processes

    def __init__(self, address: tuple[str, int], owner: LoopbackServer) -> None:
        self.owner = owner
        self.connections_opened = 0
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
                self.connections_opened += 1
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections, so stop() is prompt."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
