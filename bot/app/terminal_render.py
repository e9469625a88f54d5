"""Slack messages as a chat client shows them, for the terminal: mrkdwn rendered, not Slack's wire format.

`*bold*`, `_italic_`, `~strike~` and code become terminal styles (or plain text when the output is not a
terminal); `<@U1>`, `<#C1>`, `<!date^…|…>` and `<url|label>` become names, local times and links; `&lt;` `&gt;`
`&amp;` are unescaped; the emoji codes the bot uses become emoji. Code spans and blocks are kept verbatim.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# The codes the bot's own messages use; any other `:code:` stays as typed.
EMOJI = {
    "white_check_mark": "✅", "warning": "⚠️", "x": "❌", "grey_question": "❔", "fast_forward": "⏩",
    "mag": "🔍", "rotating_light": "🚨", "memo": "📝", "red_circle": "🔴", "large_orange_circle": "🟠",
    "large_yellow_circle": "🟡", "large_green_circle": "🟢", "large_blue_circle": "🔵", "raising_hand": "🙋",
    "page_facing_up": "📄", "crown": "👑", "clipboard": "📋", "bell": "🔔", "alarm_clock": "⏰",
    "hourglass_flowing_sand": "⏳", "fire": "🔥", "tada": "🎉", "eyes": "👀",
}
ANSI = {"bold": ("\x1b[1m", "\x1b[22m"), "italic": ("\x1b[3m", "\x1b[23m"), "strike": ("\x1b[9m", "\x1b[29m"),
        "code": ("\x1b[36m", "\x1b[39m"), "dim": ("\x1b[2m", "\x1b[22m")}

_CODE = re.compile(r"```(.*?)```|`([^`\n]+)`", re.DOTALL)
_ANGLE = re.compile(r"<([^<>\n]+)>")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
# Slack's emphasis: the marker hugs the text and is not inside a word (snake_case stays as it is).
_EMPHASIS = {
    "bold": re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"),
    "italic": re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])"),
    "strike": re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])"),
}
_SLOT = "\x00{}\x00"
_SLOTS = re.compile(r"\x00(\d+)\x00")
_TRAILING = re.compile(r"[ \t]+\n")


@dataclass(frozen=True)
class Style:
    """ANSI styles when `ansi`, else the text as it is."""

    ansi: bool = False

    def apply(self, kind: str, text: str) -> str:
        if not self.ansi or not text:
            return text
        start, end = ANSI[kind]
        return f"{start}{text}{end}"


@dataclass
class Names:
    """How ids read: a user id to a name, a channel id to a name (None when unknown)."""

    user: Callable[[str], str | None] = field(default=lambda _id: None)
    channel: Callable[[str], str | None] = field(default=lambda _id: None)


def mrkdwn(text: str, names: Names | None = None, style: Style | None = None) -> str:
    """One mrkdwn text as the terminal shows it."""
    names, style = names or Names(), style or Style()
    codes: list[str] = []  # rendered code, mentions and links, set aside from the steps below
    text = _CODE.sub(lambda m: _keep(codes, _code(m, style)), text)
    text = _ANGLE.sub(lambda m: _keep(codes, _angle(m.group(1), names)), text)
    text = _emoji(unescape(text))
    for kind, pattern in _EMPHASIS.items():
        text = pattern.sub(lambda m, k=kind: style.apply(k, m.group(1)), text)
    return _TRAILING.sub("\n", _SLOTS.sub(lambda m: codes[int(m.group(1))], text))


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("\u200b", "")


def _keep(slots: list[str], rendered: str) -> str:
    """Set a rendered piece aside so no later step (unescaping, emphasis) touches it again."""
    slots.append(rendered)
    return _SLOT.format(len(slots) - 1)


def _code(match: re.Match[str], style: Style) -> str:
    if match.group(2) is not None:
        return style.apply("code", unescape(match.group(2)))
    lines = unescape(match.group(1)).strip("\n").splitlines() or [""]
    return "\n" + "\n".join("  " + style.apply("dim", "│ ") + line for line in lines) + "\n"


def _angle(inner: str, names: Names) -> str:
    """`<…>`: a mention, a channel, a special (`!here`, `!date`) or a link."""
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return "@" + (label or names.user(target[1:]) or target[1:])
    if target.startswith("#"):
        return "#" + (label or names.channel(target[1:]) or target[1:])
    if target.startswith("!"):
        return _special(target[1:], label)
    return link(unescape(target), unescape(label))


def _special(target: str, label: str) -> str:
    kind, _, rest = target.partition("^")
    if kind == "date":
        return local_time(rest.split("^")[0], label)
    if kind == "subteam":
        return label or "@group"
    return label or f"@{kind}"


def local_time(epoch: str, fallback: str) -> str:
    try:
        return time.strftime("%a %d %b %H:%M", time.localtime(int(epoch)))
    except (ValueError, OverflowError, OSError):
        return fallback


def link(url: str, label: str) -> str:
    if url.startswith("mailto:"):
        return label or url[len("mailto:"):]
    return f"{label} ({url})" if label and label != url else url


def _emoji(text: str) -> str:
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


# --------------------------------------------------------------------------------------------- Block Kit


def blocks(message_blocks: list[dict] | None, fallback: str, names: Names | None = None,
           style: Style | None = None) -> str:
    """The text of a Block Kit message (buttons are the chat's business: it numbers them)."""
    if not message_blocks:
        return mrkdwn(fallback, names, style)
    parts = [_block(block, names or Names(), style or Style()) for block in message_blocks]
    return "\n".join(part for part in parts if part is not None)


def _block(block: dict, names: Names, style: Style) -> str | None:
    kind = block.get("type")
    if kind == "header":
        return style.apply("bold", _text(block.get("text"), names, style))
    if kind == "section":
        fields = _fields([_text(f, names, style) for f in block.get("fields") or []])
        return "\n".join(p for p in [_text(block.get("text"), names, style), *fields] if p)
    if kind == "context":
        texts = [_text(e, names, style) for e in block.get("elements", []) if e.get("type") != "image"]
        return style.apply("dim", "  ".join(t for t in texts if t))
    if kind == "divider":
        return style.apply("dim", "─" * 20)
    return None


def _fields(fields: list[str]) -> list[str]:
    """Section fields as Slack lays them out, a label over its value, here as aligned `label  value` rows."""
    pairs = [(f.split("\n", 1) + [""])[:2] for f in fields]
    width = max((len(label) for label, value in pairs if value), default=0)
    return [f"{label.ljust(width)}  {value.replace(chr(10), ' ')}" if value else label for label, value in pairs]


def _text(obj: dict | None, names: Names, style: Style) -> str:
    if not obj:
        return ""
    if obj.get("type") == "plain_text":
        return _emoji(obj.get("text", ""))
    return mrkdwn(obj.get("text", ""), names, style).strip("\n")
