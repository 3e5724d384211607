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
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return value if "@" not in value else MASK
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{MASK}@{'[' + host + ']' if ':' in host else host}{f':{port}' if port else ''}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def plain(obj: Any) -> Any:
    """A JSON-friendly tree with every secret masked (keys named like secrets, URLs with credentials)."""
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_NAME.search(k) and v else plain(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(("http://", "https://")):
        return url(obj)
    return obj
