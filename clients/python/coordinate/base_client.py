"""The blocking CBOR-RPC connection (coordinate 0.1.5's :class:`CborRpcClient`).

Configuration keys (the ``coordinate:`` block): ``address``/``addresses``, ``retries`` (default 5) and
``base_retry_seconds`` (default 0.5; the wait doubles after each failed try), ``timeout`` (seconds a call may
wait for its answer, default 60), and the string options of :class:`coordinate._wire.WireOptions`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Mapping, Optional, Sequence

from . import _wire
from .config import optional_float, server_address
from .exceptions import ProtocolError

logger = logging.getLogger(__name__)


class CborRpcClient:
    """One connection to ``coordinated``, opened on first use and reopened after a failure.

    Calls may come from several threads (a worker renews leases from one while its task runs in another); they
    take turns on the connection.
    """

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        config = dict(config or {})
        self._address = server_address(config)
        self._retries = int(config.get("retries", 5))
        self._base_retry_seconds = float(config.get("base_retry_seconds", 0.5))
        self._timeout = optional_float(config, "timeout", 60.0)
        self._options = _wire.WireOptions.from_config(config)
        self._socket: Optional[socket.socket] = None
        self._frames = _wire.FrameBuffer()
        self._message_count = 0
        self._lock = threading.RLock()

    def __enter__(self) -> "CborRpcClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the next call opens a new one."""
        with self._lock:
            if self._socket is not None:
                try:
                    self._socket.close()
                except OSError:
                    logger.warning("error closing the coordinate connection", exc_info=True)
                self._socket = None
            self._frames.clear()

    def _connection(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.create_connection(self._address, timeout=self._timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._socket

    def _read_item(self, conn: socket.socket) -> bytes:
        while (item := self._frames.take()) is None:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("coordinated closed the connection")
            self._frames.feed(chunk)
        return item

    def _rpc(self, method_name: str, params: Sequence[Any]) -> Any:
        """Calls ``method_name(*params)`` on the daemon and returns its result.

        A broken connection is retried ``retries`` times with a doubling wait; an error answer raises
        :class:`coordinate.exceptions.RpcError` with the daemon's message.
        """
        with self._lock:
            self._message_count += 1
            request_id = self._message_count
            request = _wire.encode_request(request_id, method_name, list(params), self._options)
            delay = self._base_retry_seconds
            attempt = 0
            while True:
                try:
                    conn = self._connection()
                    conn.sendall(request)
                    item = self._read_item(conn)
                except (OSError, ProtocolError) as error:
                    self.close()
                    if attempt >= self._retries:
                        logger.error("call %s failed: %s", method_name, error)
                        raise
                    attempt += 1
                    logger.debug("call %s failed (%s); retry %d in %.1f s", method_name, error, attempt, delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                return _wire.decode_response(item, request_id, self._options)
