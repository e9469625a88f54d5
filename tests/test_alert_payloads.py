"""The alert sources' payloads, parsed from the body's bytes: what senders add later is ignored, numbers a Datadog
template left unquoted read as text, and a body that does not fit gets one line naming where — the values an
enum takes, never what was sent."""

from __future__ import annotations

import json

import pytest

from bot.alerts.alertmanager import AlertmanagerWebhook
from bot.alerts.datadog import DatadogEvent
from bot.alerts.generic import GenericAlert
from bot.alerts.grafana import GrafanaWebhook
from bot.alerts.http import Refused, Request

GROUP = {"version": "4", "groupKey": "g", "status": "firing"}


def parsed(model: type, body: dict | bytes) -> object:
    return Request({}, body if isinstance(body, bytes) else json.dumps(body).encode()).model(model, "")


def refusal(model: type, body: dict | bytes) -> str:
    with pytest.raises(Refused) as refused:
        parsed(model, body)
    assert refused.value.status == 400
    return str(refused.value)


def test_keys_a_sender_adds_later_are_ignored():
    hook = parsed(GrafanaWebhook, {**GROUP, "version": "1", "orgId": 1, "truncatedAlerts": 0, "alerts": [
        {"status": "resolved", "fingerprint": "f1", "labels": {"alertname": "A"}, "values": {"B": 1.5},
         "silenceURL": "https://grafana/s"}]})
    assert (hook.groupKey, hook.alerts[0].fingerprint, hook.alerts[0].labels) == ("g", "f1", {"alertname": "A"})
    assert hook.alerts[0].startsAt == "" and hook.commonLabels == {}


def test_a_datadog_template_without_quotes_still_reads_as_text():
    event = parsed(DatadogEvent, {"id": 7, "alert_id": 1234, "alert_cycle_key": 1000.0, "alert_transition": "T"})
    assert (event.id, event.alert_id, event.alert_cycle_key) == ("7", "1234", "1000")
    assert all(type(getattr(event, name)) is str for name in event.__struct_fields__)  # msgspec writes them
    assert refusal(DatadogEvent, {"alert_id": True, "alert_cycle_key": "c", "alert_transition": "T"}) == \
        "alert_id: Expected `str` or a number"
    assert refusal(DatadogEvent, {"alert_id": "", "alert_cycle_key": "c", "alert_transition": "T"}) == \
        "alert_id: Expected `str` of length >= 1"


@pytest.mark.parametrize(("model", "body", "said"), [
    (AlertmanagerWebhook, b"", "body: invalid JSON: Input data was truncated"),
    (AlertmanagerWebhook, b"null", "body: Expected `object`, got `null`"),
    (AlertmanagerWebhook, b'{"version": "4", "x": ' + b"[" * 5000, "body: invalid JSON: nested too deeply"),
    (AlertmanagerWebhook, {"version": "4", "status": "firing"}, "groupKey: required"),
    (AlertmanagerWebhook, {**GROUP, "version": 4}, "version: expected 4"),
    (AlertmanagerWebhook, {**GROUP, "status": "firing\n12:00 ERROR forged"},
     "status: expected firing or resolved"),
    (AlertmanagerWebhook, {**GROUP, "alerts": [{"status": "pending"}]},
     "alerts[0].status: expected firing or resolved"),
    (AlertmanagerWebhook, {**GROUP, "alerts": [{}]}, "alerts[0].status: required"),
    (AlertmanagerWebhook, {**GROUP, "alerts": [{"status": "firing", "labels": {"a": 1}}]},
     "alerts[0].labels[...]: Expected `str`, got `int`"),
    (GrafanaWebhook, {**GROUP, "version": "1", "alerts": [{"status": "firing", "fingerprint": ""}]},
     "alerts[0].fingerprint: Expected `str` of length >= 1"),
    (GenericAlert, {"title": "t", "severity": "urgent" * 10_000, "dedup_key": "k", "status": "firing"},
     "severity: expected P0, P1, P2 or P3"),
    (GenericAlert, {"title": "t" * 501, "severity": "P1", "dedup_key": "k", "status": "firing"},
     "title: Expected `str` of length <= 500"),
])
def test_a_body_that_does_not_fit_gets_one_line_naming_where(model, body, said):
    assert refusal(model, body) == said
