"""Helpers that config models of every layer share: relative paths, secrets in files, service URLs.

None of them imports a driver: a config model built on them loads without paho, asyncua or pymodbus.
Errors are ``ValueError`` (pydantic reports them with their config path) and never carry a password:
a URL is echoed with its ``user:password@`` part masked (:func:`redact_url`).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationInfo

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*:)?//")  # what a URL has before its user part


def resolve_path(path: Path | None, info: ValidationInfo) -> Path | None:
    """A relative path in a config file is relative to that file (``base_dir`` in the context)."""
    base = (info.context or {}).get("base_dir")
    return path if path is None or path.is_absolute() or base is None else Path(base) / path


def read_secret(path: Path) -> SecretStr:
    """The first line of a password file (a ValueError naming the file when unreadable or empty)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"password_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"password_file: {path} is not UTF-8 text") from None
    first = text.splitlines()[0] if text else ""
    if not first:
        raise ValueError(f"password_file: {path} is empty")
    return SecretStr(first)


def redact_url(url: str) -> str:
    """``url`` fit for a message: whatever follows the user name in a ``user:password@`` part is masked
    (``mqtt://gumi:***@host:1883``). Where the URL is malformed it masks more rather than less: all
    between the first ``:`` after ``scheme://`` and the last ``@``."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    prefix = _SCHEME.match(head)
    start = prefix.end() if prefix else 0
    user, colon, _ = head[start:].partition(":")
    return f"{head[:start]}{user}{':***' if colon else ''}@{tail}"


def split_service_url(
    url: str, schemes: tuple[str, ...], expected: str, what: str = "url"
) -> tuple[str, str, int | None]:
    """``scheme://host[:port][/path]`` → ``(scheme, host, port or None)``; ValueError with the reason
    otherwise (a scheme not in ``schemes``, a bad port, credentials in the url, no host). The message
    names the url with its password masked."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [ of an IPv6 address, say; its text may quote the password
        raise ValueError(f"invalid {what} {shown!r}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"expected {expected}, got {shown!r}")
    try:
        port = parts.port
    except ValueError:  # urllib's text quotes the port as it parsed it: part of a password, maybe
        raise ValueError(f"invalid port in {shown!r}") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"put credentials in username / password (or password_file), not in the {what}")
    if not parts.hostname:
        raise ValueError(f"no host in {shown!r}")
    return parts.scheme, parts.hostname, port
