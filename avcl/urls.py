"""URLs fit to print and store: every message, ledger row, config and result that names a data location goes
through `redact`, in the builder and the engine alike, so credentials and signatures never leave the process."""
from __future__ import annotations

import re
import urllib.parse

PUBLIC_QUERY = ("v",)  # query parameters whose values are kept when a URL is stored: YouTube's video id
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact(url: str) -> str:
    """A URL fit to store and share: without user:password, fragment, or the values of query parameters other
    than PUBLIC_QUERY (signatures, tokens, keys of signed URLs)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, v if k in PUBLIC_QUERY else "REDACTED") for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(query, safe="="), ""))


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted."""
    return _URL.sub(lambda m: redact(m.group(0)), text)
