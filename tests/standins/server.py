"""Serve any ASGI app with uvicorn on 127.0.0.1, on a free port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

HOST = "127.0.0.1"


class ServedApp:
    """One ASGI app served over real HTTP on loopback until stop().

    Usable as a context manager::

        with ServedApp(app) as served:
            httpx.get(served.url + "/ping")
    """

    def __init__(
        self,
        app: Any,
        *,
        log_level: str = "warning",
        lifespan: str = "auto",
        graceful_timeout: int = 1,
    ) -> None:
        self.app = app
        self._log_level = log_level
        self._lifespan = lifespan
        self._graceful_timeout = graceful_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._port: int | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        # A literal IP, never "localhost": that may resolve to ::1 where nothing listens.
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def bind(self) -> int:
        """Takes a free port now, before the app is built (a webhook URL must name it)."""
        if self._sock is None:
            # Binding the socket ourselves gives the port before uvicorn starts, with no race
            # between picking a free port and someone else taking it.
            # IPPROTO_TCP said outright: asyncio only turns Nagle's algorithm off on sockets that
            # declare it, and with Nagle on every small answer waited ~40 ms for a delayed ACK.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, 0))
            self._sock = sock
            self._port = sock.getsockname()[1]
        return self._port

    def start(self, timeout: float = 10.0) -> "ServedApp":
        if self.running:
            return self
        self.bind()
        config = uvicorn.Config(
            self.app,
            host=HOST,
            port=self._port,
            loop="asyncio",
            lifespan=self._lifespan,
            log_level=self._log_level,
            log_config=None,  # leave the process's logging configuration alone
            access_log=False,
            # Bounds how long stop() waits for requests still in flight (e.g. long polls).
            timeout_graceful_shutdown=self._graceful_timeout,
        )
        self._server = uvicorn.Server(config)
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"uvicorn-{self._port}", daemon=True
        )
        self._thread.start()
        self._wait_accepting(timeout)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start() instead of dying silently
            self._error = exc

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._server is not None
        while time.monotonic() < deadline:
            if self._error is not None or not self.running:
                raise RuntimeError(f"server on port {self._port} failed to start") from self._error
            if self._server.started:
                try:
                    with socket.create_connection((HOST, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            time.sleep(0.005)
        self.stop()
        raise TimeoutError(f"server on port {self._port} did not start within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            # Second request makes uvicorn skip waiting for open connections.
            server.force_exit = True
            thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> "ServedApp":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
