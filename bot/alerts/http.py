"""One inbound alert request as the sources see it, and the ways a source answers without a notice."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import msgspec

from checks.schema import Struct, ValidationError, describe, parse_json

Model = TypeVar("Model", bound=Struct)
Response = tuple[int, dict[str, str], bytes]


class Request(msgspec.Struct, frozen=True):
    scope: dict
    body: bytes

    def header(self, name: str) -> str:
        wanted = name.lower().encode()
        for key, value in self.scope.get("headers") or []:
            if key.lower() == wanted:
                return value.decode("latin-1").strip()
        return ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "the body is not JSON") from None

    def model(self, model: type[Model], what: str) -> Model:
        """The body parsed straight into the source's model; a 400 naming the first field that does not fit."""
        try:
            return parse_json(model, self.body)
        except ValidationError as exc:
            raise Refused(400, f"{what}{_misfit(model, exc)}") from None
        except msgspec.DecodeError as exc:  # not JSON; msgspec says where without quoting the body
            raise Refused(400, f"{what}body: invalid JSON: {str(exc).removeprefix('JSON is malformed: ')}") from None
        except RecursionError:  # msgspec skips an unknown key's value by recursing: a deep enough one ends here
            raise Refused(400, f"{what}body: invalid JSON: nested too deeply") from None


_MISSING = re.compile(r"Object missing required field `(\w+)`")
_STEP = re.compile(r"\.(\w+)|\[[^]]*\]")  # in msgspec's path: a field, or a list index / a dict key (`[...]`)


def _misfit(model: type[Struct], exc: ValidationError) -> str:
    """`where: what` for the first part of the body that does not fit, in one line: `body` for the body as a whole,
    a missing field at its own path, an enum with the values it takes — never what was sent, which can be anything
    (a newline, megabytes)."""
    text = str(exc)
    at = text.rpartition(" - at `$")[2].rstrip("`").lstrip(".") if " - at `$" in text else ""  # "": the body
    if missing := _MISSING.match(text):
        return f"{at}.{missing[1]}".lstrip(".") + ": field required"
    choices = _choices(model, at) if at else ""
    if choices or text.startswith("Invalid enum value"):
        return f"{at}: should be {choices or 'one of the allowed values'}"
    return describe(exc) if at else f"body: {text}"


def _choices(model: type[Struct], path: str) -> str:
    """The values of the Literal at `path` (`alerts[0].status`) in a sentence, `'a', 'b' or 'c'`; "" when the
    field there is not a Literal."""
    import msgspec.inspect as mi  # with the first misfit: the HTTP process does not need it to start

    kind: Any = mi.type_info(model)
    try:
        for name in _STEP.findall(f".{path}"):
            kind = next(f.type for f in kind.fields if f.encode_name == name) if name else (
                kind.item_type if isinstance(kind, mi.ListType) else kind.value_type)
            if isinstance(kind, mi.UnionType):  # an optional field: the type that is not None
                kind = next(t for t in kind.types if not isinstance(t, mi.NoneType))
    except (AttributeError, StopIteration):  # a path this walk does not know: msgspec's own words then
        return ""
    values = [repr(v) for v in getattr(kind, "values", ())]
    return " or ".join(filter(None, [", ".join(values[:-1]), values[-1]])) if values else ""


class Refused(Exception):  # noqa: N818 (an answer, not a failure)
    """The request gets `status` and this sentence, and changes nothing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Reply(msgspec.Struct, frozen=True):
    """A source's own answer that opens no incident (an SNS subscription confirmed, a test ping)."""

    status: int
    data: dict[str, Any]


def json_response(status: int, data: dict[str, Any]) -> Response:
    return status, {"content-type": "application/json"}, json.dumps(data).encode()


def field(data: Any, name: str, kind: type = str) -> Any:
    """`data[name]` of the given type, or a 400 naming the field."""
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind):
        raise Refused(400, f"{name}: missing or not a {kind.__name__}")
    return value
