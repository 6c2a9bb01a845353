"""Connections that hold a web server's sockets without ever finishing a request."""

from __future__ import annotations

import select
import socket


class Slowloris:
    """`trickling` connections that send a request head a line at a time and never end it,
    and `silent` ones that send nothing. Each `tick()` sends the next line and notes which
    connections the server has closed."""

    def __init__(self, port: int, trickling: int, silent: int) -> None:
        address = ("127.0.0.1", port)
        self.trickling = [socket.create_connection(address) for _ in range(trickling)]
        self.silent = [socket.create_connection(address) for _ in range(silent)]
        self.closed: set[socket.socket] = set()
        for sock in self.trickling:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")

    @property
    def open(self) -> int:
        return len(self.trickling) + len(self.silent) - len(self.closed)

    def tick(self, wait: float = 0.0) -> None:
        """One more header line on each trickling connection; then, for up to `wait`
        seconds, which connections the server closed."""
        for sock in self.trickling:
            if sock not in self.closed:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    self.closed.add(sock)
        alive = [s for s in self.trickling + self.silent if s not in self.closed]
        readable, _, _ = select.select(alive, [], [], wait) if alive else ([], [], [])
        for sock in readable:
            try:
                if sock.recv(4096) == b"":
                    self.closed.add(sock)
            except OSError:
                self.closed.add(sock)

    def close(self) -> None:
        for sock in self.trickling + self.silent:
            sock.close()
