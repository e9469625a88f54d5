"""One inbound alert request as the sources see it, and the ways a source answers without a notice."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Response = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Request:
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
            return model.model_validate_json(self.body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            raise Refused(400, f"{what}{where}: {err.get('msg')}") from None


class Refused(Exception):  # noqa: N818 (an answer, not a failure)
    """The request gets `status` and this sentence, and changes nothing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reply:
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
