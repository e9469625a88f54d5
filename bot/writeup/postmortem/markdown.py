"""Making user text inert in Markdown (canvases, uploaded files, S3, the terminal).

Jinja2's autoescape knows HTML only, so the postmortem environment escapes for Markdown instead: every `{{ }}`
value that is not already `Md` (trusted Markdown made by a filter below) goes through `inline`, which

- folds all whitespace (newlines included) into single spaces, so user text cannot start a heading, a list,
  a quote, a table row or a code fence of its own, and drops control characters;
- backslash-escapes the characters that open inline markup or HTML: \\ ` * _ [ ] < > | ~ & (so `<!channel>`,
  `<script>`, `[x](javascript:…)`, `![](@U123)` mentions and `|` in tables stay literal text);
- escapes a leading `#`, `>`, `-`, `+`, `=` or `1.` in case a template puts the value at the start of a line;
- cuts it to a length (before escaping, so no escape is ever cut in half).
"""

from __future__ import annotations

import re
from urllib.parse import quote

_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_LEADING_BLOCK = re.compile(r"^([#>+=-]|\d+[.)])")
_SAFE_URL = re.compile(r"^https?://[^\s<>\"'`\\]+$", re.IGNORECASE)
DEFAULT_LIMIT = 1000


class Md(str):
    """Markdown that is already safe (made by the filters here or by the template itself)."""

    __slots__ = ()


def fold(text: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """One line of plain text: whitespace folded, control characters dropped, cut to `limit` with an ellipsis."""
    plain = " ".join(_CONTROL.sub("", str(text)).split())
    if limit is not None and len(plain) > limit:
        plain = plain[: max(limit - 1, 0)].rstrip() + "…"
    return plain


def inline(text: object, limit: int | None = DEFAULT_LIMIT) -> Md:
    """Plain text → Markdown that renders as exactly that text, on one line."""
    if isinstance(text, Md):
        return text
    escaped = _INLINE_SPECIAL.sub(r"\\\1", fold(text, limit))
    return Md(_LEADING_BLOCK.sub(lambda m: "\\" + m.group(0), escaped, count=1))


def code(text: object, limit: int | None = 300) -> Md:
    """An inline code span that holds any text: the fence is longer than any run of backticks inside it."""
    plain = fold(text, limit)
    if not plain:
        return Md("")
    longest = max((len(run) for run in re.findall(r"`+", plain)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if plain.startswith("`") or plain.endswith("`") else ""
    return Md(f"{fence}{pad}{plain}{pad}{fence}")


def link(label: object, url: str | None) -> Md:
    """`[label](url)` for an http(s) URL; anything else (javascript:, data:, spaces, brackets) is plain text."""
    text = inline(label, 200)
    if not url or not _SAFE_URL.match(url):
        return text
    return Md(f"[{text}]({quote(url, safe=':/?#@!$&*+,;=%~-._')})")


def block(text: object, limit: int | None = 4000) -> Md:
    """A quoted paragraph: several lines of user text, each its own `> ` line, every line escaped."""
    lines = [line for line in str(text).splitlines() if line.strip()] or [""]
    out, left = [], limit
    for line in lines:
        if left is not None and left <= 0:
            out.append("> …")
            break
        piece = fold(line, left)
        out.append("> " + inline(piece, None))
        if left is not None:
            left -= len(piece)
    return Md("\n".join(out))
