"""systemd's notify protocol (sd_notify): READY=1, WATCHDOG=1, STOPPING=1, STATUS=...

A datagram to the socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). Without the variable every call is a no-op, so the daemon runs the same outside
systemd.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        target = "\0" + addr[1:] if addr.startswith("@") else addr
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block the event loop on a peer that does not read (a full buffer)
            self._sock.setblocking(False)
        try:
            self._sock.sendto("\n".join(fields).encode(), target)
        except OSError:  # BlockingIOError included: a dropped ping, not a stalled daemon
            return False
        return True

    def watchdog_interval(self) -> float | None:
        """Half of ``$WATCHDOG_USEC`` in seconds (when this process is the one watched)."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
