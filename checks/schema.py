"""Validated files, settings and records, on msgspec: the two Struct bases, the value types msgspec does not have
(HTTP URLs, secrets, paths, networks), reading and writing them, and a validation error told as one line.

Why msgspec and not pydantic: an HTTP process paid ~53 ms and ~8.6 MiB to import pydantic before its first model,
and ~40 ms more to build the ~55 models it loads — together more than the whole gap between the bot's start-up
and a bare Bolt app's (issue #20). msgspec validates the same files in a C extension that imports in a few ms.

    class Probe(Strict):
        url: HttpUrl
        samples: Annotated[int, Meta(ge=1, le=50)] = 5

    probe = parse(Probe, {"url": "https://api.example.com/health"})   # ValidationError: describe(exc, "probe")

Structs are not validated when built in code (`Probe(url=...)`), only by `parse` and `parse_json`:
what the bot builds itself it already holds in the right types.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct, ValidationError, field
from msgspec.structs import replace

__all__ = ["HttpUrl", "Meta", "Record", "Secret", "Strict", "Struct", "ValidationError", "describe", "dump",
           "dump_json", "field", "literal_words", "locate", "one_of", "parse", "parse_json", "replace", "type_at"]

T = TypeVar("T")


class _ByName(msgspec.StructMeta):
    """Every struct built on Strict or Record takes its fields by name, as the pydantic models did, so a required
    field may follow defaulted ones: msgspec's `kw_only` covers only the fields of the class that says it, and
    would otherwise be repeated on each subclass."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **config: Any) -> Any:
        return super().__new__(mcls, name, bases, namespace, **{"kw_only": True, **config})


class Strict(Struct, metaclass=_ByName, forbid_unknown_fields=True, frozen=True):
    """A section of a file people write (services, paging policy, schedules): an unknown key is a typo, refused with
    its path, and what was read is not changed afterwards."""


class Record(Struct, metaclass=_ByName):
    """Something the bot writes and reads back (Redis, the queue) or receives (an alert's payload): keys it does not
    know — a newer version's, a sender's extras — are ignored."""


class HttpUrl(str):
    """An http(s) URL with a host, as text, normalised as pydantic's AnyHttpUrl did (scheme and host in lower case,
    an international host in its IDNA form, no default port, `/` for an empty path), so stored and printed URLs —
    and the check targets named after them — read as before."""

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> HttpUrl:
        if not isinstance(value, str) or "://" not in value:
            raise ValueError("invalid URL")
        parts = urlsplit(value.strip())
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError("URL scheme should be 'http' or 'https'")
        if "@" in parts.netloc:  # they would be shown wherever the URL is (evidence, errors, Slack)
            raise ValueError("credentials in a URL are not supported: give them as a header or a secret setting")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("invalid port number") from None
        host = _host(parts.hostname or "")
        default = {"http": 80, "https": 443}[parts.scheme.lower()]
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port not in (None, default) else "")
        text = f"{parts.scheme.lower()}://{netloc}{parts.path or '/'}"
        return cls(text + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else ""))

    @property
    def scheme(self) -> str:
        return urlsplit(self).scheme

    @property
    def host(self) -> str:
        return urlsplit(self).hostname or ""

    @property
    def port(self) -> int:
        """The URL's port, else its scheme's (as AnyHttpUrl.port)."""
        parts = urlsplit(self)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def path(self) -> str:
        return urlsplit(self).path


_HOST = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")  # a name or an address (an IPv6 one was in brackets)


def _host(host: str) -> str:
    """The host in lower case, an international name in its IDNA (punycode) form; refused when it has no name or
    holds characters no host has."""
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise ValueError("invalid international host name") from None
    if not _HOST.fullmatch(host):
        raise ValueError("URL needs a valid host")
    return host


class Secret:
    """A token or password: its text only through `get_secret_value()`, never in a repr, a log line or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def parse(cls, value: object) -> Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ValueError("expected text")
        return cls(value)

    def get_secret_value(self) -> str:
        return self._value

    def __len__(self) -> int:  # an empty secret is falsy, as unset
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


def _path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected a path")
    return Path(value)


def _network(value: object) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ValueError(f"expected an IPv4 network such as 203.0.113.0/24, got {str(value)[:40]!r}") from None


_DECODERS: dict[type, Any] = {HttpUrl: HttpUrl.parse, Secret: Secret.parse, Path: _path,
                              ipaddress.IPv4Network: _network}


def _decode(kind: type, value: Any) -> Any:
    """msgspec's hook for types it does not know: ours above, or any class with a `from_data` classmethod (a value
    written either in short, `db:5432`, or in full, `{host: db, port: 5432}`)."""
    decoder = _DECODERS.get(kind) or getattr(kind, "from_data", None)
    if decoder is None:
        raise NotImplementedError(f"no decoder for {kind!r}")
    return decoder(value)


def _encode(value: Any) -> Any:
    # HttpUrl is a str msgspec does not take as one; addresses and networks are written as pydantic wrote them
    if isinstance(value, str | Path | ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network
                  | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, Secret):  # as pydantic's SecretStr was written: the text never leaves in a dump
        return "**********" if value else ""
    to_data = getattr(value, "to_data", None)
    if to_data is not None:
        return to_data()
    if isinstance(value, deque | range):  # in a check's evidence: a list, as pydantic wrote it
        return list(value)
    raise NotImplementedError(f"cannot write {type(value).__name__}")


def parse(kind: type[T] | Any, data: Any) -> T:
    """`data` (from YAML, JSON or the environment) as `kind`, validated; text is accepted for numbers and booleans,
    as pydantic's lax mode did. Raises ValidationError (see `describe`)."""
    return msgspec.convert(data, kind, strict=False, dec_hook=_decode)


def parse_json(kind: type[T] | Any, text: str | bytes) -> T:
    return msgspec.json.decode(text, type=kind, strict=False, dec_hook=_decode)


def dump(value: Any) -> Any:
    """Plain dicts, lists, strings and numbers (datetimes as RFC 3339 text, enums as their values): what JSON or a
    Redis hash can hold."""
    return msgspec.to_builtins(value, enc_hook=_encode)


def dump_json(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=_encode).decode()


def describe(exc: ValidationError, prefix: str = "", kind: Any = None) -> str:
    """The error as `where: what`, `where` being `prefix` and the path in the data (`services.api.http[0].url`);
    see `locate` for what `kind` adds."""
    where, message = locate(exc, kind)
    where = f"{prefix}.{where}".rstrip(".").replace(".[", "[") if prefix else where
    return f"{where}: {message}" if where else message


def locate(exc: ValidationError, kind: Any = None) -> tuple[str, str]:
    """(the path in the data, "" for the whole of it; what is wrong there).

    Given `kind`, the type that was parsed, a missing or unknown key is named in the path, an unknown key is
    answered with the keys allowed there and a word a Literal does not allow with the words it does — without
    echoing what was written, which can be a pasted secret or megabytes of a webhook's body."""
    message, found, at = str(exc).rpartition(" - at `")
    if not found:
        message, at = str(exc), "$`"
    where = at.rstrip("`")
    if where.startswith("key` in `"):
        where, message = where.removeprefix("key` in `"), f"key {message[0].lower()}{message[1:]}"
    where = where.removeprefix("$").lstrip(".")
    return _explained(kind, where, message) if kind is not None else (where, message)


_MISSING = re.compile(r"Object missing required field `(\w+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")
_STEP = re.compile(r"\.(\w+)|\[[^]]*]")  # in a path: a field's name, or "" for a list index or a mapping key


def _explained(kind: Any, where: str, message: str) -> tuple[str, str]:
    if missing := _MISSING.fullmatch(message):
        return _joined(where, missing[1]), "required"
    if unknown := _UNKNOWN.fullmatch(message):
        allowed = [f.name for f in msgspec.structs.fields(at)] if _is_struct(at := type_at(kind, where)) else []
        return _joined(where, unknown[1]), "unknown key" + _instead(unknown[1], allowed)
    if message.startswith(("Invalid enum value", "Expected `")) and (words := literal_words(type_at(kind, where))):
        return where, f"expected {one_of(words)}"
    return where, message


def _instead(key: str, allowed: list[str]) -> str:
    """What to write instead: the one allowed key a typo is close to, else all of them."""
    import difflib  # on the error path only

    if close := difflib.get_close_matches(key, allowed, n=1):
        return f"; did you mean {close[0]}?"
    return f"; expected {one_of(allowed)}" if allowed else ""


def type_at(kind: Any, where: str) -> Any:
    """The type read at a path in the data (`severities.P0.urgency`, `alerts[0].status`) under `kind`; None where
    it cannot tell (a custom type's insides)."""
    for name in _STEP.findall(f".{where}" if where and where[0] != "[" else where):
        kind = _unwrapped(kind)
        if name:
            fields = msgspec.structs.fields(kind) if _is_struct(kind) else ()
            kind = next((f.type for f in fields if f.name == name), None)
        else:
            kind = (get_args(kind) or (None,))[-1]  # a list's items, a mapping's values
    return _unwrapped(kind)


def literal_words(kind: Any) -> list[str]:
    """The values a Literal allows, also inside `Literal[...] | None`."""
    members = (kind,) if get_origin(kind) is Literal else get_args(kind)
    return [str(word) for member in members if get_origin(member) is Literal for word in get_args(member)]


def one_of(words: list[str]) -> str:
    """`a, b or c`."""
    return f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else "".join(words)


def _unwrapped(kind: Any) -> Any:
    """`kind` without `Annotated[...]` and without `| None` (an optional field: the type that is not None)."""
    while get_origin(kind) in (Annotated, Union, UnionType) and not literal_words(kind):
        kind = next((arm for arm in get_args(kind) if arm is not type(None)), None)
    return kind


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Struct)


def _joined(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
