"""Opening a listening socket, with an error that says what actually failed: a busy port, an address that
is not this machine's, a name that does not resolve, a privileged port. Every listener of the harness
(simulators, exporters' pre-flight, the rig) goes through it."""
from __future__ import annotations

import errno
import socket

REASONS = {errno.EADDRINUSE: "already in use", errno.EADDRNOTAVAIL: "not an address of this machine",
           errno.EACCES: "not permitted (ports below 1024 need privileges)"}


class ListenError(Exception):
    pass


def listen(host: str, port: int, what: str) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise ListenError(f"{what}: cannot resolve the listen address {host!r} ({exc.strerror})") from None
    except (OverflowError, UnicodeError) as exc:
        raise ListenError(f"{what}: invalid listen address {host!r}:{port} ({exc})") from None
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise ListenError(f"{what}: cannot listen on {host}:{port}: "
                          f"{REASONS.get(exc.errno, exc.strerror or str(exc))}") from None
