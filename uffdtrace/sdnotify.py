"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one
datagram of NAME=VALUE lines to the unix socket in $NOTIFY_SOCKET (a path,
or an abstract name written with a leading @).  Without NOTIFY_SOCKET
(not started by systemd with Type=notify) nothing is sent."""
from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send `fields` ("READY=1", "STATUS=..."); True if they were sent.  A
    daemon must not die of its supervisor's socket: errors are False."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True
