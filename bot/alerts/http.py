"""One inbound alert request as the sources see it, and the ways a source answers without a notice."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgspec

from checks.schema import Struct, ValidationError, locate, parse_json

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


def _misfit(model: type[Struct], exc: ValidationError) -> str:
    """`where: what` for the first part of the body that does not fit, in one line (`body` for the body as a
    whole), never quoting what was sent, which can be anything (a newline, megabytes)."""
    where, message = locate(exc, model)
    return f"{where or 'body'}: {message}"


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
