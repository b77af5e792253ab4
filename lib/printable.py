"""Text taken from a file, made safe to print: no terminal escape codes, no control characters."""
from __future__ import annotations


def printable(text: object, limit: int | None = None) -> str:
    """`str(text)` with every non-printable character (ESC, CR, bidi overrides, ...) written as an escape.

    A terminal then shows the characters literally instead of obeying them. With `limit`, a longer
    result keeps its first `limit` characters and says how many were left out, so a shortened
    text never passes for the whole one.
    """
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
    if limit is not None and len(safe) > limit:
        return f"{safe[:limit]}... ({len(safe) - limit} more characters)"
    return safe
