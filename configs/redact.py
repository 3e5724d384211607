"""Credentials never reach results or logs: user:password@ in URLs, token-like query parameters and
secret-named settings are replaced by ``***`` wherever a URL or configuration is recorded or printed."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# A setting or query parameter that holds a secret: named so at its end (grafana_token, api_key, password),
# never a count that merely mentions one (context_tokens, max_tokens).
SECRET_NAME = re.compile(r"(^|[_-])(token|auth|bearer)$|passw(or)?d$|secret$|api[_-]?key$|credentials?$|"
                         r"authorization$|signature$", re.I)


def url(value: str) -> str:
    """``value`` with its user:password@ and its secret-named query parameters masked, however its scheme is
    spelled (urlsplit reads ``HTTP://`` as ``http``) and whatever its port is (an invalid one stays as written)."""
    try:
        parts = urlsplit(value)
    except ValueError:                    # e.g. an unclosed [ in the host: masked whole if it may hold a user
        return value if "@" not in value else MASK
    _user, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{MASK}@{hostport}" if at else parts.netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_url(value: str) -> bool:
    """``scheme://host...`` in any spelling of any scheme: what ``url`` is for."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "://" in value
    return bool(parts.scheme and parts.netloc)


def plain(obj: Any) -> Any:
    """A JSON-friendly tree with every secret masked (keys named like secrets, URLs with credentials)."""
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_NAME.search(k) and v else plain(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, str) and _is_url(obj):
        return url(obj)
    return obj
