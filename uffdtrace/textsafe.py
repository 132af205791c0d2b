"""Untrusted text (comm, paths, anything read from a trace file) made safe
to print on one terminal line."""
from __future__ import annotations


def printable(text: str) -> str:
    """`text` with control and other unprintable characters made visible."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def one_line(text: str, limit: int = 200) -> str:
    """printable(text), cut to `limit` characters."""
    text = printable(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."
