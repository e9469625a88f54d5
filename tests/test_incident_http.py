"""HTTP mode webhooks through the real ASGI app: PagerDuty v3 acknowledgements (signed) and Alertmanager v4
alerts that open, annotate and resolve incidents (bearer token or shared-secret header)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import uuid

from tests.incident_harness import (
    ALERTMANAGER_TOKEN,
    PD_WEBHOOK_SECRET,
    default_policy,
    incident_bot,
)


def pagerduty_event(event_type: str, incident_key: str | None, *, event_id: str | None = None,
                    who: str = "Jane Doe") -> bytes:
    return json.dumps({"event": {
        "id": event_id or uuid.uuid4().hex, "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-11-21T10:00:00Z",
        "agent": {"id": "PUSER01", "type": "user_reference", "summary": who},
        "data": {"id": "Q0PDINCIDENT", "type": "incident", "status": event_type.split(".")[-1],
                 "incident_key": incident_key, "title": "whatever PagerDuty shows"},
    }}).encode()


def signed(body: bytes, secret: str = PD_WEBHOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-PagerDuty-Signature": f"v1=deadbeef, v1={digest}"}  # rotation: any one matching signature counts


T1, T2 = "2026-11-21T10:00:00Z", "2026-11-21T14:00:00Z"  # two firings of one alert group, hours apart


def alert_webhook(status: str, group_key: str = '{}:{alertname="ApiDown"}', *, fingerprints: tuple = ("f1",),
                  severity: str = "critical", service: str = "api", starts_at: str = T1,
                  resolved: tuple = ()) -> dict:
    """A v4 delivery of the group; `resolved` lists the alerts already resolved in a firing group."""
    labels = {"alertname": "ApiDown", "severity": severity, "service": service}

    def alert(fp: str) -> dict:
        state = "resolved" if status == "resolved" or fp in resolved else "firing"
        return {"status": state, "labels": {**labels, "instance": f"api-{fp}"},
                "annotations": {"summary": f"api-{fp} down"}, "startsAt": starts_at,
                "endsAt": "2026-11-21T18:00:00Z" if state == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": "http://prom.local/graph", "fingerprint": fp}

    return {
        "version": "4", "groupKey": group_key, "status": status, "receiver": "chatops", "groupLabels": labels,
        "commonLabels": labels, "commonAnnotations": {"summary": "API returns 503 <!channel>"},
        "externalURL": "http://alertmanager.local", "truncatedAlerts": 0,
        "alerts": [alert(fp) for fp in fingerprints],
    }


BEARER = {"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"}


async def test_a_signed_pagerduty_acknowledgement_stops_the_escalation(local_slack, redis_url, tmp_path, pd):
    policy = default_policy(pd.events_url, ack_timeout_s=1.5)
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd, policy=policy) as bot:
        answer = await bot.command("/incident", "Checkout failing P1")
        inc = re.search(r"INC-\d+", answer).group(0)
        await bot.wait_for(lambda: bot.pd_triggers(), 5, "the page")

        forged = pagerduty_event("incident.acknowledged", "INC-1:P1:L1")
        response = await bot.hook("/hooks/pagerduty", forged, signed(forged, "not-the-secret"))
        assert response.status_code == 401
        assert not (await bot.incident(inc)).paging.acknowledged

        body = pagerduty_event("incident.acknowledged", "INC-1:P1:L1", event_id="EV1")
        response = await bot.hook("/hooks/pagerduty", body, signed(body))
        assert response.status_code == 200 and response.json()["action"] == "acknowledged"
        again = await bot.hook("/hooks/pagerduty", body, signed(body))  # PagerDuty retries the delivery
        assert again.json()["action"] == "duplicate"

        # the page goes out before the channel exists: the ack line is posted once the channel is there
        incident = await bot.wait_incident(inc, lambda i: i.paging.acknowledged and i.channel is not None)
        assert (incident.paging.acked_by, incident.paging.ack_via) == ("Jane Doe", "pagerduty")
        await bot.wait_for(lambda: any("acknowledged by Jane Doe in PagerDuty after" in t
                                       for t in bot.channel_texts(incident)), 5, "the ack line")
        await asyncio.sleep(2.0)
        assert not bot.dms_to("UMGR1")  # the escalation to the managers was cancelled
        assert len(await bot.timeline(inc, "page_acked")) == 1


async def test_pagerduty_webhooks_that_are_not_ours_or_not_acks_change_nothing(local_slack, redis_url, tmp_path, pd):
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd) as bot:
        cases = [
            (pagerduty_event("incident.acknowledged", "someone-elses-key"), "ignored"),
            (pagerduty_event("incident.acknowledged", "INC-404:P1:L1"), "ignored"),
            (pagerduty_event("pagey.ping", None), "ignored"),
        ]
        for body, action in cases:
            response = await bot.hook("/hooks/pagerduty", body, signed(body))
            assert (response.status_code, response.json()["action"]) == (200, action)
        bad = b"not json"
        assert (await bot.hook("/hooks/pagerduty", bad, signed(bad))).status_code == 400
        unsigned = pagerduty_event("incident.acknowledged", "INC-1:P1:L1")
        assert (await bot.hook("/hooks/pagerduty", unsigned)).status_code == 401


async def test_the_pagerduty_webhook_is_off_without_a_secret(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path, incident={"pagerduty_webhook_secret": None,
                                                                         "alertmanager_token": None}) as bot:
        body = pagerduty_event("incident.acknowledged", "INC-1:P1:L1")
        assert (await bot.hook("/hooks/pagerduty", body, signed(body))).status_code == 404
        assert (await bot.hook("/hooks/alertmanager", alert_webhook("firing"), BEARER)).status_code == 404


async def test_alertmanager_needs_the_token(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Alertmanager-Secret": "wrong"},
                        {"Authorization": ALERTMANAGER_TOKEN}):
            assert (await bot.hook("/hooks/alertmanager", alert_webhook("firing"), headers)).status_code == 401
        assert await bot.ctx.store.open_ids() == []
        response = await bot.hook("/hooks/alertmanager", {"version": "3", "status": "firing"}, BEARER)
        assert response.status_code == 400 and "Alertmanager v4" in response.json()["error"]


async def test_an_alert_group_opens_one_incident_is_annotated_and_resolves_it(local_slack, redis_url, tmp_path, pd):
    announcements = local_slack.add_channel("incidents", members=["U1"])
    async with incident_bot(local_slack, redis_url, tmp_path, pagerduty=pd,
                            incident={"incidents_channel": announcements}) as bot:
        first = await bot.hook("/hooks/alertmanager", alert_webhook("firing"), BEARER)
        assert first.json() == {"incident": "INC-1", "action": "opened"}
        repeat = await bot.hook("/hooks/alertmanager", alert_webhook("firing"), {"X-Alertmanager-Secret":
                                                                                  ALERTMANAGER_TOKEN})
        assert repeat.json()["action"] == "unchanged"  # Alertmanager re-sends the group: no second incident
        grown = await bot.hook("/hooks/alertmanager", alert_webhook("firing", fingerprints=("f1", "f2")), BEARER)
        assert grown.json() == {"incident": "INC-1", "action": "annotated", "new_alerts": 1, "resolved_alerts": 0}

        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        assert (incident.severity, incident.service, incident.source) == ("P0", "api", "alertmanager")
        assert incident.title == "API returns 503 <!channel>" and incident.commander is None
        await bot.wait_for(lambda: bot.pd_triggers(), 5, "the page")
        assert [e["dedup_key"] for e in bot.pd_triggers()] == ["INC-1:P0:L1"]
        assert await bot.timeline("INC-1", "diagnosis_requested")
        await bot.wait_for(lambda: any("api-f2 down" in t for t in bot.channel_texts(incident)), 5, "the annotation")
        assert "&lt;!channel&gt;" in json.dumps([m.blocks for m in local_slack.messages(announcements)])

        resolved = await bot.hook("/hooks/alertmanager", alert_webhook("resolved", fingerprints=("f1", "f2")),
                                  BEARER)
        assert resolved.json() == {"incident": "INC-1", "action": "resolved"}
        incident = await bot.incident("INC-1")
        assert (incident.status, incident.resolved_by) == ("resolved", "alertmanager")
        assert [e.data["fingerprint"] for e in await bot.timeline("INC-1", "alert")] == ["f1", "f2", "f1", "f2"]

        reopened = await bot.hook("/hooks/alertmanager", alert_webhook("firing", starts_at=T2), BEARER)
        assert reopened.json() == {"incident": "INC-2", "action": "opened"}  # fired again after resolving: new one


async def test_replayed_payloads_of_a_closed_incident_change_nothing(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        await bot.hook("/hooks/alertmanager", alert_webhook("firing", fingerprints=("f1", "f2")), BEARER)
        old_resolved = alert_webhook("resolved", fingerprints=("f1", "f2"))
        assert (await bot.hook("/hooks/alertmanager", old_resolved, BEARER)).json()["action"] == "resolved"
        newer = await bot.hook("/hooks/alertmanager", alert_webhook("firing", starts_at=T2), BEARER)
        assert newer.json() == {"incident": "INC-2", "action": "opened"}
        incident = await bot.wait_incident("INC-2", lambda i: i.ready)
        await bot.settle()
        entries, said = len(await bot.timeline("INC-2")), bot.channel_texts(incident)

        replay = await bot.hook("/hooks/alertmanager", old_resolved, BEARER)  # the same bytes, hours late
        assert replay.status_code == 200 and replay.json()["action"] == "ignored", replay.text
        assert "replayed or late" in replay.json()["reason"]
        old_firing = await bot.hook("/hooks/alertmanager", alert_webhook("firing", fingerprints=("f1", "f2")),
                                    BEARER)
        assert (old_firing.json()["incident"], old_firing.json()["action"]) == ("INC-2", "ignored")
        await bot.settle()
        assert (await bot.incident("INC-2")).is_open
        assert len(await bot.timeline("INC-2")) == entries and bot.channel_texts(incident) == said
        assert await bot.ctx.store.all_ids() == ["INC-1", "INC-2"]

        fixed = await bot.hook("/hooks/alertmanager", alert_webhook("resolved", starts_at=T2), BEARER)
        assert fixed.json() == {"incident": "INC-2", "action": "resolved"}
        again = await bot.hook("/hooks/alertmanager", alert_webhook("firing", fingerprints=("f1", "f2")), BEARER)
        assert again.json() == {"incident": None, "action": "ignored",  # INC-1's alerts do not open INC-3
                                "reason": "no open incident for this group, and no alert in the delivery is new"}
        assert await bot.ctx.store.all_ids() == ["INC-1", "INC-2"]


async def test_an_incident_resolves_when_every_alert_it_saw_firing_has_resolved(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        await bot.hook("/hooks/alertmanager", alert_webhook("firing", fingerprints=("f1", "f2")), BEARER)
        early = await bot.hook("/hooks/alertmanager", alert_webhook("resolved", fingerprints=("f9",)), BEARER)
        assert early.json()["action"] == "ignored"  # resolved before it was ever seen firing
        half = alert_webhook("firing", fingerprints=("f1", "f2"), resolved=("f1",))
        answer = await bot.hook("/hooks/alertmanager", half, BEARER)
        assert answer.json() == {"incident": "INC-1", "action": "annotated", "new_alerts": 0, "resolved_alerts": 1}
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        await bot.wait_for(lambda: any("resolved: api-f1 down" in t for t in bot.channel_texts(incident)), 5,
                           "the partial resolve")
        assert (await bot.incident("INC-1")).is_open

        late = await bot.hook("/hooks/alertmanager", alert_webhook("firing", fingerprints=("f1", "f2")), BEARER)
        assert late.json()["action"] == "ignored"  # f1 firing again with its old startsAt: an older delivery
        await bot.settle()
        said = bot.channel_texts(incident)
        assert not [t for t in said if "firing: api-f1 down" in t]
        assert [(e.data["fingerprint"], e.data["status"]) for e in await bot.timeline("INC-1", "alert")] == [
            ("f1", "firing"), ("f2", "firing"), ("f1", "resolved")]

        only_f1 = await bot.hook("/hooks/alertmanager", alert_webhook("resolved", fingerprints=("f1",)), BEARER)
        assert only_f1.json()["action"] == "unchanged" and (await bot.incident("INC-1")).is_open
        rest = await bot.hook("/hooks/alertmanager", alert_webhook("resolved", fingerprints=("f1", "f2")), BEARER)
        assert rest.json() == {"incident": "INC-1", "action": "resolved"}
        assert (await bot.incident("INC-1")).resolved_by == "alertmanager"


async def test_concurrent_deliveries_of_one_group_open_one_incident(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        responses = await asyncio.gather(*(bot.hook("/hooks/alertmanager",
                                                    alert_webhook("firing", severity="warning"), BEARER)
                                           for _ in range(5)))
        assert sorted(r.json()["action"] for r in responses) == ["opened"] + ["unchanged"] * 4
        assert await bot.ctx.store.open_ids() == ["INC-1"]
        assert (await bot.incident("INC-1")).severity == "P2"
        resolved = alert_webhook("resolved", severity="warning")
        responses = await asyncio.gather(*(bot.hook("/hooks/alertmanager", resolved, BEARER) for _ in range(5)))
        assert sorted(r.json()["action"] for r in responses) == ["ignored"] * 4 + ["resolved"]
        assert [e.data["status"] for e in await bot.timeline("INC-1", "alert")] == ["firing", "resolved"]


async def test_alerts_resolved_can_annotate_instead_of_resolving(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path, incident={"alert_on_resolved": "annotate"}) as bot:
        await bot.hook("/hooks/alertmanager", alert_webhook("firing", severity="nonsense", service="unknown"), BEARER)
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        assert (incident.severity, incident.service) == ("P2", None)  # unmapped label → default; unknown service
        response = await bot.hook("/hooks/alertmanager", alert_webhook("resolved"), BEARER)
        assert response.json()["action"] == "annotated"
        assert (await bot.incident("INC-1")).is_open
        await bot.wait_for(lambda: any("stays open until someone resolves it" in t
                                       for t in bot.channel_texts(incident)), 5, "the note")
        retry = await bot.hook("/hooks/alertmanager", alert_webhook("resolved"), BEARER)
        assert retry.json()["action"] == "unchanged"
        await bot.settle()
        assert sum("stays open until" in t for t in bot.channel_texts(incident)) == 1


async def test_a_bot_is_reachable_only_through_signed_slack_requests(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        body = "command=%2Fincident&text=Forged+P0&user_id=U1&channel_id=C1&trigger_id=x&team_id=T0LOCAL"
        response = await bot.http.post("/slack/events", content=body.encode(),
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 401
        assert await bot.ctx.store.open_ids() == []
