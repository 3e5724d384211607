"""Checks of values whose form the YAML types cannot express: URLs, listen addresses, ports and durations
(directories: configs.paths). Each failure names the key, so the loader blames the file that set it.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from . import redact
from .errors import ConfigError


class FieldError(ConfigError):
    """A value of ``key`` (under the dataclass being built; ``sub`` one level further) is out of range. The
    loader puts the file and the full key path in front of ``message``; raised anywhere else, it names the key."""

    def __init__(self, key: str, message: str, sub: str | None = None) -> None:
        self.path = (key,) if sub is None else (key, sub)
        self.message = message
        super().__init__(f"{'.'.join(self.path)}: {message}")


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*$")
# a rig's or site's name: a label value that is also safe in a file name and on a command line
LABEL_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


def host_label() -> str:
    """This host's name, cut to what LABEL_VALUE accepts (the default rig name)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:63].lstrip("._-")
    return name or "rig"


def tcp_port(port: int, key: str, sub: str | None = None) -> None:
    if not 0 < port < 65536:
        raise FieldError(key, f"must be a TCP port (1-65535), got {port}", sub)


def listen_address(value: str, key: str) -> None:
    """An IP address or a host name; not a URL, not words."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(value):
        raise FieldError(key, f"must be an IP address such as 127.0.0.1 or a host name, got {value!r}")


def http_url(value: str, key: str) -> None:
    """An http(s) URL with a host, a valid port if one is given, and no query or fragment. The message shows
    the value with its credentials masked."""
    shown = redact.url(value)
    try:
        parts = urlsplit(value)
    except ValueError:                         # an unclosed [ in the host
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError(key, f"must be an http(s) URL with a host, such as http://127.0.0.1:9000/v1, got {shown!r}")
    try:
        parts.port
    except ValueError:
        raise FieldError(key, f"has an invalid port (1-65535): {shown!r}") from None
    if parts.query or parts.fragment:
        raise FieldError(key, f"must not carry a query or fragment: {shown!r}")


def prometheus_duration(value: str, key: str) -> None:
    if not value or not _DURATION.fullmatch(value) or not re.search(r"[1-9]", value):
        raise FieldError(key, f"must be a Prometheus duration such as 15d, 12h or 1w2d, got {value!r}")
