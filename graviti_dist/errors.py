"""User-facing errors.

Anything a user can cause with bad input (a config field, a crawl file, a CLI
argument) raises :class:`GravitiError` with a message that names the file,
column, id or field. The CLI prints the message and exits non-zero instead of
showing a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GravitiError(Exception):
    """An error caused by the user's input, with a message meant for them."""

    exit_code = 2


class FieldError(GravitiError):
    """A bad value of one named argument or config field.

    The message reads ``"<field> <text>"`` (``num_parts must be at least 1, got 0``), in the
    words of the Python API; the CLI shows the same text under its own flag
    (``--num-parts must be at least 1, got 0``): see ``cli._flag_words``.
    """

    def __init__(self, field: str, text: str):
        super().__init__(f"{field} {text}")
        self.field, self.text = field, text


def examples(values, limit: int = 5) -> str:
    """Format up to ``limit`` offending values for an error message."""
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"[{shown}]{more}"
