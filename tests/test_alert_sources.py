"""Alert sources end to end over the bot's HTTP surface: CloudWatch alarms through signed SNS messages (with a
test CA, a signing certificate served by a local HTTPS "SNS host"), Grafana, Datadog and the generic signed
webhook — each opens an incident with its diagnosis, resolves it, and refuses bad credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from tests.fixtures.sns import (
    sns_timestamp,
    ACCOUNT,
    CERT_PATH,
    AIA_PATH,
    FAILING_CERT_PATH,
    LEAF_ONLY_CERT_PATH,
    LB,
    REGION,
    SNS_HOST,
    T1,
    T2,
    T3,
    T4,
    UNTRUSTED_CERT_PATH,
    cloudwatch_alarm,
    fake_sns,
    sns_headers,
)
from tests.incident_harness import incident_bot

SERVICES = {"api": {"description": "Public API", "aws": {"region": REGION, "load_balancers": [LB]}},
            "checkout": {"description": "Checkout", "aws": {"region": REGION, "alarm_prefixes": ["checkout-"]}}}
ELB_IS_P1 = [{"source": "cloudwatch", "match": {"namespace": "AWS/ApplicationELB"}, "severity": "P1"}]
GENERIC_SECRET, DATADOG_SECRET, GRAFANA_PASSWORD = "generic-secret-0123", "dd-secret-0123", "grafana-pw-0123"


# ------------------------------------------------------------------------------------------------ CloudWatch


async def test_a_cloudwatch_alarm_through_sns_opens_and_resolves_an_incident(local_slack, redis_url, tmp_path, aws):
    with fake_sns(tmp_path, rules=ELB_IS_P1) as sns:
        async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, alerts=sns.settings) as bot:
            confirmation = sns.confirmation()
            answer = await bot.hook("/hooks/sns", confirmation, sns_headers(confirmation))
            assert (answer.status_code, answer.json()["action"]) == (200, "subscribed")
            assert sns.server.hits == [CERT_PATH, "/"]  # the certificate, then the SubscribeURL

            alarm = sns.alarm("ALARM", T1)
            opened = await bot.hook("/hooks/sns", alarm, sns_headers(alarm))
            assert opened.json() == {"incident": "INC-1", "action": "opened"}
            retried = await bot.hook("/hooks/sns", alarm, sns_headers(alarm))  # SNS retries with the same id
            assert retried.json()["action"] == "unchanged"
            incident = await bot.wait_incident("INC-1", lambda i: i.ready)
            assert (incident.severity, incident.service, incident.source) == ("P1", "api", "cloudwatch")
            assert incident.title == "api-5xx: API 5xx above 10 a minute"
            assert await bot.timeline("INC-1", "diagnosis_requested")
            assert sns.server.hits.count(CERT_PATH) == 1  # the certificate is cached

            ok = sns.alarm("OK", T2, old="ALARM")
            assert (await bot.hook("/hooks/sns", ok, sns_headers(ok))).json() == {"incident": "INC-1",
                                                                                  "action": "resolved"}
            assert (await bot.incident("INC-1")).resolved_by == "cloudwatch"

            again = sns.alarm("ALARM", T3)
            assert (await bot.hook("/hooks/sns", again, sns_headers(again))).json()["incident"] == "INC-2"
            replayed = await bot.hook("/hooks/sns", ok, sns_headers(ok))  # the old OK, hours late
            assert replayed.json()["action"] == "ignored"
            assert (await bot.incident("INC-2")).is_open
            no_data = sns.alarm("INSUFFICIENT_DATA", T4, old="ALARM")
            assert (await bot.hook("/hooks/sns", no_data, sns_headers(no_data))).json()["action"] == "annotated"
            assert (await bot.incident("INC-2")).is_open
            fixed = sns.alarm("OK", T4, old="INSUFFICIENT_DATA")  # follows the ALARM at T3 through no data
            assert (await bot.hook("/hooks/sns", fixed, sns_headers(fixed))).json()["action"] == "resolved"


async def test_an_ok_delivered_before_its_alarm_opens_and_resolves_the_incident(local_slack, redis_url, tmp_path,
                                                                                  aws):
    with fake_sns(tmp_path, rules=ELB_IS_P1) as sns:
        async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, alerts=sns.settings) as bot:
            ok = sns.alarm("OK", T2, old="ALARM")  # SNS delivered the OK first
            assert (await bot.hook("/hooks/sns", ok, sns_headers(ok))).json()["action"] == "ignored"
            alarm = sns.alarm("ALARM", T1)
            answer = await bot.hook("/hooks/sns", alarm, sns_headers(alarm))
            assert answer.json() == {"results": [{"incident": "INC-1", "action": "opened"},
                                                 {"incident": "INC-1", "action": "resolved"}]}
            incident = await bot.incident("INC-1")
            assert (incident.status, incident.resolved_by, incident.severity) == ("resolved", "cloudwatch", "P1")
            said = [e.text for e in await bot.timeline("INC-1", "alert")]
            assert any("OK again at 2026-12-03T10:20:00.000+00:00" in text for text in said), said
            retried = await bot.hook("/hooks/sns", alarm, sns_headers(alarm))  # SNS retries the ALARM
            assert [r["action"] for r in retried.json()["results"]] == ["ignored", "ignored"]

            newer = sns.alarm("ALARM", T3)  # the remembered OK is older than this ALARM: it changes nothing
            assert (await bot.hook("/hooks/sns", newer, sns_headers(newer))).json() == {"incident": "INC-2",
                                                                                        "action": "opened"}
            assert (await bot.hook("/hooks/sns", ok, sns_headers(ok))).json()["action"] == "ignored"  # replayed
            assert (await bot.incident("INC-2")).is_open
            fixed = sns.alarm("OK", T4, old="ALARM")
            assert (await bot.hook("/hooks/sns", fixed, sns_headers(fixed))).json()["action"] == "resolved"


async def test_with_annotate_an_alarm_that_cleared_before_it_arrived_stays_open_and_says_so(local_slack, redis_url,
                                                                                            tmp_path, aws):
    with fake_sns(tmp_path) as sns:
        async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, alerts=sns.settings,
                                incident={"alert_on_resolved": "annotate"}) as bot:
            ok = sns.alarm("OK", T2, old="ALARM")
            await bot.hook("/hooks/sns", ok, sns_headers(ok))
            alarm = sns.alarm("ALARM", T1)
            answer = (await bot.hook("/hooks/sns", alarm, sns_headers(alarm))).json()
            assert [r["action"] for r in answer["results"]] == ["opened", "annotated"]
            incident = await bot.wait_incident("INC-1", lambda i: i.ready)
            assert incident.is_open
            said = await bot.wait_for(lambda: _said(bot, incident.channel, "reports every alert of the incident "
                                                    "resolved"), 20, "the annotation")
            assert "stays open until someone resolves it" in said.text


async def _said(bot, channel: str, needle: str):
    return next((m for m in bot.local.messages(channel) if needle in (m.text or "")), None)


async def test_severity_from_the_alarm_description_unless_a_rule_sets_it(local_slack, redis_url, tmp_path, aws):
    rules = [{"source": "cloudwatch", "match": {"alarm_name": "checkout-.*"}, "severity": "P0"}]

    def described(name: str, description: str) -> dict:
        alarm = cloudwatch_alarm("ALARM", T1, name=name) | {"AlarmDescription": description}
        return sns.message("Notification", json.dumps(alarm))

    with fake_sns(tmp_path, rules=rules) as sns:
        async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, alerts=sns.settings) as bot:
            for name, description in [("api-5xx", "API 5xx above 10 a minute. severity=P1"),
                                      ("checkout-5xx", "Checkout 5xx, severity: P3")]:
                message = described(name, description)
                assert (await bot.hook("/hooks/sns", message, sns_headers(message))).json()["action"] == "opened"
            assert (await bot.incident("INC-1")).severity == "P1"  # from the description
            assert (await bot.incident("INC-2")).severity == "P0"  # the rule wins


async def test_a_leaf_only_signing_certificate_is_completed_from_amazon_trust_services(local_slack, redis_url,
                                                                                       tmp_path, aws):
    with fake_sns(tmp_path) as sns:
        async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, alerts=sns.settings) as bot:
            message = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                                  cert_url=f"https://{SNS_HOST}{LEAF_ONLY_CERT_PATH}")
            answer = await bot.hook("/hooks/sns", message, sns_headers(message))
            assert answer.json() == {"incident": "INC-1", "action": "opened"}, answer.text
            assert sns.aia.hits == [AIA_PATH]  # the intermediate, from the leaf's caIssuers URL


async def test_eventbridge_and_composite_alarms_through_sns(local_slack, redis_url, tmp_path, aws):
    def event(state: str, at: str, previous: str, previous_at: str) -> dict:
        return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "CloudWatch Alarm State Change",
                "source": "aws.cloudwatch", "account": ACCOUNT, "time": at[:19] + "Z", "region": REGION,
                "resources": [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:lambda-errors"],
                "detail": {"alarmName": "lambda-errors",
                           "state": {"value": state, "reason": "Threshold Crossed", "timestamp": at},
                           "previousState": {"value": previous, "reason": "", "timestamp": previous_at},
                           "configuration": {"description": "Checkout function errors", "metrics": [
                               {"id": "m1", "metricStat": {"metric": {"namespace": "AWS/Lambda", "name": "Errors",
                                "dimensions": {"FunctionName": "checkout-fn"}}, "period": 60, "stat": "Sum"},
                                "returnData": True}]},
                           "alarmTags": {"service": "checkout", "severity": "critical"}}}

    composite = {"AlarmName": "checkout-composite", "AlarmDescription": None, "AWSAccountId": ACCOUNT,
                 "NewStateValue": "ALARM", "OldStateValue": "OK", "StateChangeTime": T1,
                 "NewStateReason": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:a transitioned to ALARM",
                 "AlarmArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:checkout-composite",
                 "AlarmRule": "ALARM(a) OR ALARM(b)", "TriggeringChildren": [], "Region": "US East (N. Virginia)"}
    with fake_sns(tmp_path, rules=ELB_IS_P1) as sns:
        async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, alerts=sns.settings) as bot:
            fired = sns.message("Notification", json.dumps(event("ALARM", T1, "OK", T1)))
            assert (await bot.hook("/hooks/sns", fired, sns_headers(fired))).json()["action"] == "opened"
            incident = await bot.incident("INC-1")
            assert (incident.severity, incident.service) == ("P0", "checkout")  # from the alarm's tags
            cleared = sns.message("Notification", json.dumps(event("OK", T2, "ALARM", T1)), version="2")
            assert (await bot.hook("/hooks/sns", cleared, sns_headers(cleared))).json()["action"] == "resolved"

            alarm = sns.message("Notification", json.dumps(composite))
            assert (await bot.hook("/hooks/sns", alarm, sns_headers(alarm))).json()["incident"] == "INC-2"
            incident = await bot.incident("INC-2")
            assert (incident.service, incident.severity) == ("checkout", "P2")  # by its name's prefix; default

            other = sns.message("Notification", "a plain message someone published")
            assert (await bot.hook("/hooks/sns", other, sns_headers(other))).json()["action"] == "ignored"


async def test_sns_messages_that_cannot_be_trusted_change_nothing(local_slack, redis_url, tmp_path, aws):
    with fake_sns(tmp_path, rules=ELB_IS_P1) as sns:
        async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, alerts=sns.settings) as bot:
            tampered = sns.alarm("ALARM", T1)
            tampered["Message"] = tampered["Message"].replace("api-5xx", "api-5xx-forged")
            elsewhere = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                                    cert_url=sns.server.url(CERT_PATH))  # the same certificate, not an SNS host
            lookalike = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                                    cert_url=f"https://{SNS_HOST}.evil.test{CERT_PATH}")
            other_region = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                                       cert_url=f"https://sns.eu-west-1.amazonaws.com{CERT_PATH}")
            other_topic = sns.alarm("ALARM", T1)
            other_topic = sns.message("Notification", other_topic["Message"],
                                      topic=f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses")
            untrusted = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                                    cert_url=f"https://{SNS_HOST}{UNTRUSTED_CERT_PATH}")
            unknown_version = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)), version="3")
            tampered_v2 = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)), version="2")
            tampered_v2["Message"] = tampered_v2["Message"].replace("api-5xx", "api-5xx-forged")
            subject = sns.alarm("ALARM", T1)
            subject["Subject"] = "OK: all clear"
            downgraded = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)), version="2")
            downgraded["SignatureVersion"] = "1"  # not signed itself, but it picks the hash: still no match
            replayed = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                                   published=sns_timestamp(-2 * 86_400))  # genuine, signed, two days old
            from_the_future = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                                          published=sns_timestamp(3600))
            bad_urls = [f"https://{SNS_HOST}@evil.test{CERT_PATH}", f"https://evil.test@{SNS_HOST}{CERT_PATH}",
                        f"https://{SNS_HOST}:8443{CERT_PATH}", f"https://{SNS_HOST}:abc{CERT_PATH}",
                        f"https://{SNS_HOST}:99999{CERT_PATH}", f"http://{SNS_HOST}{CERT_PATH}",
                        f"https://{SNS_HOST}/SimpleNotificationService.pem/../x", f"https://{SNS_HOST}.{CERT_PATH}"]
            odd_urls = [sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)), cert_url=url)
                        for url in bad_urls]
            for message, status in [(tampered, 401), (elsewhere, 401), (lookalike, 401), (other_region, 401),
                                    (other_topic, 403), (unknown_version, 401), (untrusted, 401),
                                    (tampered_v2, 401), (subject, 401), (downgraded, 401),
                                    (replayed, 401), (from_the_future, 401),
                                    *((m, 401) for m in odd_urls)]:
                answer = await bot.hook("/hooks/sns", message, sns_headers(message))
                assert answer.status_code == status, (message["SigningCertURL"], answer.status_code, answer.text)
            evil_confirm = sns.confirmation(subscribe_url=sns.server.url("/?Action=ConfirmSubscription"))
            answer = await bot.hook("/hooks/sns", evil_confirm, sns_headers(evil_confirm))
            assert answer.status_code == 401
            assert sns.server.hits == [CERT_PATH, UNTRUSTED_CERT_PATH]  # from the SNS host only; no confirmation
            assert await bot.ctx.store.open_ids() == []

            oversized = await bot.hook("/hooks/sns", b"{" + b" " * (1024 * 1024), sns_headers(tampered))
            assert oversized.status_code == 413  # SNS caps a message at 256 KB: a megabyte is not from SNS

            blip = sns.message("Notification", json.dumps(cloudwatch_alarm("ALARM", T1)),
                               cert_url=f"https://{SNS_HOST}{FAILING_CERT_PATH}")
            answer = await bot.hook("/hooks/sns", blip, sns_headers(blip))
            assert answer.status_code == 503  # SNS retries a 5xx: a blip at the certificate host loses no alarm
            assert await bot.ctx.store.open_ids() == []


async def test_the_sources_are_off_until_configured(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path) as bot:
        for path in ("/hooks/sns", "/hooks/grafana", "/hooks/datadog", "/hooks/generic"):
            answer = await bot.hook(path, {"status": "firing"})
            assert answer.status_code == 404 and "webhook is off: set" in answer.json()["error"]


# ------------------------------------------------------------------------------------- Grafana, Datadog, generic


def grafana_payload(status: str, starts_at: str = "2026-12-03T10:00:00Z") -> dict:
    """Grafana Alerting's webhook contact point payload (version 1)."""
    labels = {"alertname": "CheckoutLatency", "severity": "critical", "service": "checkout",
              "grafana_folder": "prod"}
    alert = {"status": status, "labels": labels, "annotations": {"summary": "p99 latency above 2 s"},
             "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else
             "2026-12-03T10:30:00Z", "generatorURL": "https://grafana.test/alerting/grafana/abc/view",
             "fingerprint": "57c6d9296de2ad39", "silenceURL": "https://grafana.test/silence",
             "dashboardURL": "", "panelURL": "", "values": {"B": 2.7, "C": 1}, "valueString": "[ var='B' value=2.7 ]"}
    return {"receiver": "chatops", "status": status, "orgId": 1, "alerts": [alert], "groupLabels":
            {"alertname": "CheckoutLatency"}, "commonLabels": labels, "commonAnnotations": alert["annotations"],
            "externalURL": "https://grafana.test/", "version": "1", "groupKey": '{}/{}:{alertname="CheckoutLatency"}',
            "truncatedAlerts": 0, "title": f"[{status.upper()}:1] CheckoutLatency", "state": "alerting",
            "message": "..."}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_grafana_alerts_with_basic_auth_or_hmac(local_slack, redis_url, tmp_path):
    alerts = {"grafana_webhook_user": "grafana", "grafana_webhook_password": GRAFANA_PASSWORD,
              "grafana_webhook_hmac_secret": "grafana-hmac", "grafana_webhook_timestamp_header": "X-Grafana-Ts"}
    async with incident_bot(local_slack, redis_url, tmp_path, alerts=alerts) as bot:
        firing = grafana_payload("firing")
        for headers in ({}, basic("grafana", "wrong"), basic("someone", GRAFANA_PASSWORD)):
            assert (await bot.hook("/hooks/grafana", firing, headers)).status_code == 401
        opened = await bot.hook("/hooks/grafana", firing, basic("grafana", GRAFANA_PASSWORD))
        assert opened.json() == {"incident": "INC-1", "action": "opened"}
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        assert (incident.severity, incident.service, incident.source) == ("P0", "checkout", "grafana")
        assert incident.title == "p99 latency above 2 s"
        assert await bot.timeline("INC-1", "diagnosis_requested")

        body = json.dumps(grafana_payload("resolved")).encode()
        now = str(int(time.time()))
        signature = hmac.new(b"grafana-hmac", now.encode() + b":" + body, hashlib.sha256).hexdigest()
        stale = str(int(time.time()) - 600)
        old = hmac.new(b"grafana-hmac", stale.encode() + b":" + body, hashlib.sha256).hexdigest()
        assert (await bot.hook("/hooks/grafana", body, {"X-Grafana-Alert-Signature": old,
                                                        "X-Grafana-Ts": stale})).status_code == 401
        resolved = await bot.hook("/hooks/grafana", body, {"X-Grafana-Alert-Signature": signature,
                                                           "X-Grafana-Ts": now})
        assert resolved.json() == {"incident": "INC-1", "action": "resolved"}
        again = await bot.hook("/hooks/grafana", grafana_payload("firing", "2026-12-03T11:00:00Z"),
                               basic("grafana", GRAFANA_PASSWORD))
        assert again.json() == {"incident": "INC-2", "action": "opened"}  # the same alert, firing again
        replayed = await bot.hook("/hooks/grafana", grafana_payload("resolved"), basic("grafana", GRAFANA_PASSWORD))
        assert replayed.json()["action"] == "ignored" and (await bot.incident("INC-2")).is_open


def datadog_payload(transition: str, cycle: str = "cycle-1") -> dict:
    """The README's Datadog template, filled in as Datadog would."""
    return {"id": str(uuid.uuid4().int)[:19], "alert_id": "1234", "alert_cycle_key": cycle,
            "alert_transition": transition, "alert_title": "[Triggered] API error rate high",
            "title": "[Triggered on {env:prod}] API error rate high", "alert_priority": "P1",
            "alert_scope": "env:prod", "tags": "env:prod, service:api, team:web",
            "alert_status": "api.errors over env:prod was > 5 on average during the last 5m",
            "link": "https://app.datadoghq.com/event/event?id=1", "body": "%%% error rate high %%%"}


async def test_datadog_monitors_through_the_documented_template(local_slack, redis_url, tmp_path):
    async with incident_bot(local_slack, redis_url, tmp_path, alerts={"datadog_webhook_secret": DATADOG_SECRET}) as bot:
        token = {"X-Chatops-Token": DATADOG_SECRET}
        assert (await bot.hook("/hooks/datadog", datadog_payload("Triggered"), {"X-Chatops-Token": "no"})
                ).status_code == 401
        opened = await bot.hook("/hooks/datadog", datadog_payload("Triggered"), token)
        assert opened.json() == {"incident": "INC-1", "action": "opened"}
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        assert (incident.severity, incident.service, incident.source) == ("P1", "api", "datadog")
        assert await bot.timeline("INC-1", "diagnosis_requested")
        assert (await bot.hook("/hooks/datadog", datadog_payload("Re-Triggered"), token)).json()["action"] == \
            "unchanged"
        no_data = await bot.hook("/hooks/datadog", datadog_payload("No Data"), token)
        assert no_data.json() == {"incident": "INC-1", "action": "annotated"}
        await bot.wait_for(lambda: any("has no data" in t for t in bot.channel_texts(incident)), 5, "the note")
        assert (await bot.incident("INC-1")).is_open
        unkeyed = {k: v for k, v in datadog_payload("Recovered").items() if k != "alert_cycle_key"}
        assert (await bot.hook("/hooks/datadog", unkeyed, token)).status_code == 400  # the template's key is needed
        resolved = await bot.hook("/hooks/datadog", datadog_payload("Recovered"), token)
        assert resolved.json() == {"incident": "INC-1", "action": "resolved"}
        late = await bot.hook("/hooks/datadog", datadog_payload("Triggered"), token)  # an old trigger, retried
        assert late.json()["action"] == "ignored"
        again = await bot.hook("/hooks/datadog", datadog_payload("Triggered", "cycle-2"), token)
        assert again.json() == {"incident": "INC-2", "action": "opened"}
        old = await bot.hook("/hooks/datadog", datadog_payload("Recovered"), token)  # the first cycle's, replayed
        assert old.json()["action"] == "ignored" and (await bot.incident("INC-2")).is_open


def generic_signed(body: dict, secret: str = GENERIC_SECRET, at: int | None = None) -> tuple[bytes, dict]:
    raw = json.dumps(body).encode()
    timestamp = str(at if at is not None else int(time.time()))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return raw, {"X-Chatops-Timestamp": timestamp, "X-Chatops-Signature": f"v1={digest}"}


async def test_the_generic_signed_webhook(local_slack, redis_url, tmp_path):
    alert = {"title": "Checkout queue backing up", "severity": "P2", "service": "checkout",
             "dedup_key": "checkout-queue", "status": "firing", "description": "12,000 messages waiting"}
    async with incident_bot(local_slack, redis_url, tmp_path, alerts={"generic_webhook_secret": GENERIC_SECRET}) as bot:
        too_long = generic_signed(alert)[0], {"X-Chatops-Timestamp": "1" * 5000, "X-Chatops-Signature": "v1=0"}
        for body, headers in (generic_signed(alert, "wrong-secret"), generic_signed(alert, at=int(time.time()) - 301),
                              generic_signed(alert, at=int(time.time()) + 301),  # a clock ahead: as suspicious
                              (json.dumps(alert).encode(), {}), too_long):
            assert (await bot.hook("/hooks/generic", body, headers)).status_code == 401
        assert await bot.ctx.store.open_ids() == []
        opened = await bot.hook("/hooks/generic", *generic_signed(alert))
        assert opened.json() == {"incident": "INC-1", "action": "opened"}
        incident = await bot.wait_incident("INC-1", lambda i: i.ready)
        assert (incident.severity, incident.service, incident.title) == ("P2", "checkout",
                                                                         "Checkout queue backing up")
        assert await bot.timeline("INC-1", "diagnosis_requested")
        assert (await bot.hook("/hooks/generic", *generic_signed(alert))).json()["action"] == "unchanged"
        bad = await bot.hook("/hooks/generic", *generic_signed({**alert, "severity": "urgent"}))
        assert bad.status_code == 400 and "severity" in bad.json()["error"]
        resolved = await bot.hook("/hooks/generic", *generic_signed({**alert, "status": "resolved"}))
        assert resolved.json() == {"incident": "INC-1", "action": "resolved"}
        again = await bot.hook("/hooks/generic", *generic_signed(alert, at=int(time.time()) + 2))
        assert again.json() == {"incident": "INC-2", "action": "opened"}  # fired again after resolving
