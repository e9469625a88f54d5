"""checks/schema.py, what every file, setting and record is read with: errors told as one `where: what` line that
never echoes the value written, URLs kept as pydantic's AnyHttpUrl wrote them, secrets never in a dump or a repr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest

from checks.schema import (
    HttpUrl,
    Meta,
    Secret,
    Strict,
    ValidationError,
    describe,
    dump,
    dump_json,
    locate,
    parse,
    parse_json,
)


class Probe(Strict):
    url: HttpUrl
    samples: Annotated[int, Meta(ge=1, le=50)] = 5
    mode: Literal["fast", "thorough"] | None = None


class File(Strict):
    probes: list[Probe] = []
    token: Secret | None = None
    home: Path | None = None


def told(data: object, prefix: str = "") -> str:
    with pytest.raises(ValidationError) as caught:
        parse(File, data)
    return describe(caught.value, prefix, File)


@pytest.mark.parametrize(("data", "said"), [
    ({"probes": [{"url": "api.example.com"}]}, "probes[0].url: invalid URL"),
    ({"probes": [{"url": "ftp://x"}]}, "probes[0].url: URL scheme should be 'http' or 'https'"),
    ({"probes": [{"url": "http://x", "samples": 0}]}, "probes[0].samples: Expected `int` >= 1"),
    ({"probes": [{}]}, "probes[0].url: required"),
    ({"probes": [{"url": "http://x", "sample": 3}]}, "probes[0].sample: unknown key; did you mean samples?"),
    ({"probez": []}, "probez: unknown key; did you mean probes?"),
    ({"zzz": 1}, "zzz: unknown key; expected probes, token or home"),
])
def test_an_error_is_one_line_naming_where_and_what_to_write(data: object, said: str) -> None:
    assert told(data) == said


def test_a_prefix_names_the_file_or_the_entry_the_data_came_from() -> None:
    assert told({"probes": [{}]}, "services.api") == "services.api.probes[0].url: required"


def test_a_word_a_literal_does_not_allow_is_answered_with_the_words_it_does_and_not_echoed() -> None:
    pasted = "xoxb-123-secret-token\n12:00 ERROR forged"
    said = told({"probes": [{"url": "http://x", "mode": pasted}]})
    assert said == "probes[0].mode: expected fast or thorough"
    assert "xoxb" not in said


def test_without_the_parsed_type_msgspec_s_own_words_are_kept() -> None:
    with pytest.raises(ValidationError) as caught:
        parse(File, {"probes": [{"url": "http://x", "mode": "slow"}]})
    assert locate(caught.value) == ("probes[0].mode", "Invalid enum value 'slow'")


def test_urls_are_normalised_as_before_and_say_their_parts() -> None:
    probe = parse(Probe, {"url": "HTTPS://Api.Example.com:8443"})
    assert probe.url == "https://api.example.com:8443/"
    assert (probe.url.scheme, probe.url.host, probe.url.port, probe.url.path) == ("https", "api.example.com", 8443, "/")
    assert parse(Probe, {"url": "http://x/health?deep=1"}).url.port == 80
    assert dump_json(probe) == '{"url":"https://api.example.com:8443/","samples":5,"mode":null}'
    assert parse_json(Probe, dump_json(probe)) == probe


def test_a_secret_reads_back_but_never_leaves_in_a_repr_or_a_dump() -> None:
    read = parse(File, {"token": "xoxb-123", "home": "/srv/chatops"})
    assert read.token is not None and read.token.get_secret_value() == "xoxb-123"
    assert "xoxb" not in repr(read) and "xoxb" not in str(dump(read)) and "xoxb" not in dump_json(read)
    assert dump(read)["home"] == "/srv/chatops" and isinstance(read.home, Path)
    assert not Secret("") and Secret("a") == Secret("a")


@pytest.mark.parametrize(("written", "read"), [
    ("https://api.example.com:443/health", "https://api.example.com/health"),  # the scheme's port, as before
    ("http://API.example.com:8080", "http://api.example.com:8080/"),
    ("https://Bücher.example/x", "https://xn--bcher-kva.example/x"),           # IDNA, as before
    ("http://[2001:DB8::1]:9/", "http://[2001:db8::1]:9/"),
])
def test_urls_read_as_pydantic_wrote_them_so_check_targets_keep_their_names(written: str, read: str) -> None:
    assert parse(Probe, {"url": written}).url == read


@pytest.mark.parametrize(("written", "said"), [
    ("https://user:pw@proxy.example/pd", "credentials in a URL are not supported"),
    ("https://exa mple.com/", "URL needs a valid host"),
    ("http://x:99999/", "invalid port number"),
])
def test_a_url_that_would_fail_later_or_show_a_password_is_refused_when_read(written: str, said: str) -> None:
    message = told({"probes": [{"url": written}]})
    assert message.startswith(f"probes[0].url: {said}") and "pw" not in message


def test_evidence_json_cannot_hold_is_dropped_and_said_so_the_run_still_ends() -> None:
    from collections import deque

    from bot.diagnosis.run import _written
    from checks.model import CheckResult, Status

    kept = _written(CheckResult(check="c", status=Status.fail, summary="s", evidence={"recent": deque([1, 2])}))
    assert '"recent":[1,2]' in kept
    dropped = _written(CheckResult(check="c", status=Status.fail, summary="s", evidence={(1, 2): "tuple key"}))
    assert '"status":"fail"' in dropped and "could not be stored" in dropped


def test_every_struct_on_the_bases_takes_its_fields_by_name_so_a_required_one_may_follow_defaults() -> None:
    from checks.schema import Record

    class Base(Record):
        note: str = ""

    class Sub(Base):
        severity: str  # required, after a defaulted field of the base and with no `kw_only` of its own

    assert parse(Sub, {"severity": "P1"}) == Sub(severity="P1")
    with pytest.raises(TypeError):
        Sub("a note", "P1")  # type: ignore[misc]
