"""`{...}` placeholders in text: the one splitter of the rules' payload templates
(`engine.rules.expr.compile_template`) and the webhook's bodies and URLs
(`connectors.webhook_body`), so that both read `{`, `}`, `{{` and `}}` alike. A leaf: it
imports nothing of the engine but its errors, so a connector may use it."""

from __future__ import annotations

from collections.abc import Iterator

from engine.errors import EngineError

__all__ = ["PlaceholderError", "skip_string", "split_template"]


class PlaceholderError(EngineError):
    """A brace that opens or closes nothing; `col` is its 0-based offset in the text."""

    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col


def skip_string(text: str, i: int) -> int:
    """Index just past the string literal starting at `i` (or len(text) when unterminated)."""
    quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else text[i]
    j = i + len(quote)
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text.startswith(quote, j):
            return j + len(quote)
        else:
            j += 1
    return len(text)


def split_template(text: str) -> Iterator[str | tuple[int, str]]:
    """The pieces of a template, in order: literal text (a str) and placeholders (the offset of
    their inner text, the inner text). `{{` and `}}` are literal braces; inside `{...}` braces
    nest and quoted strings are skipped, so `{lower("}")}` is one placeholder.

    The one splitter of `{...}` templates (the rules' payload values, webhook bodies and URLs in
    `connectors.webhook_body`). A mistake is a PlaceholderError at the offset of the brace, raised
    where the scan meets it: a caller checking each placeholder as it comes reports the first
    mistake of the text."""
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            if text.startswith("{{", i):
                buf.append("{")
                i += 2
                continue
            j, depth = i + 1, 0
            while j < n:
                cj = text[j]
                if cj in "'\"":
                    j = skip_string(text, j)
                    continue
                if cj == "{":
                    depth += 1
                elif cj == "}":
                    if depth == 0:
                        break
                    depth -= 1
                j += 1
            if j >= n:
                raise PlaceholderError("'{' is never closed; write '{{' for a literal brace", i)
            if buf:
                yield "".join(buf)
                buf = []
            if not text[i + 1 : j].strip():
                raise PlaceholderError("empty '{}' in template; put an expression inside, e.g. {event.sku}", i)
            yield (i + 1, text[i + 1 : j])
            i = j + 1
            continue
        if c == "}":
            if text.startswith("}}", i):
                buf.append("}")
                i += 2
                continue
            raise PlaceholderError("single '}' in template; write '}}' for a literal brace", i)
        buf.append(c)
        i += 1
    if buf:
        yield "".join(buf)
