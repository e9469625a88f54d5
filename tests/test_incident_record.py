"""The incident record in Redis: what the previous (pydantic) version wrote reads back and is written the same;
keys a newer version adds are ignored and fields an older one lacked take their defaults."""

from __future__ import annotations

import json
from typing import get_args

from bot.incidents.model import Incident, IncidentSource, PageOrder
from bot.incidents.notice import AlertSource
from checks.fixes import FixOffer
from checks.schema import dump_json, parse_json

# An alert's incident with a verdict offering a fix and one page order, as pydantic's model_dump_json wrote it.
WRITTEN_BEFORE = (
    '{"id":"INC-3","number":3,"title":"t","severity":"P2","status":"investigating","service":null'
    ',"reporter":"alertmanager","commander":null,"roles":{"scribe":"U2"},"source":"alertmanager"'
    ',"private":false,"declared_at":1796423110.080307,"updated_at":1796423110.0803075'
    ',"origin_channel":"C1","mode":"channel","channel":null,"channel_name":null,"thread_ts":null'
    ',"header_ts":null,"announcement":["C9","1.2"],"place_note":null,"last_update_at":null'
    ',"last_update":null,"failing_checks":[],"diagnosis_runs":[],"latest_verdict":{"run_id":"r"'
    ',"service":"api","status":"fail","headline":"h","at":5.0,"since_last":null,"fixes":[{"action":"a"'
    ',"label":"l","params":{"x":"y"},"reverse_label":""}]},"resolved_at":null,"resolved_by":null'
    ',"resolution":null,"alert_group_key":null,"paging":{"severity":"P1","levels":[{"number":1'
    ',"routes":{"slack":["U1"]},"ack_timeout_s":300.0,"urgency":"high"}],"level":1'
    ',"orders":[{"dedup_key":"k","severity":"P1","level":1,"routes":{"slack":["U1"]},"urgency":"high"'
    ',"reason":"policy","actor":null,"schedules":{},"unpaged":[],"ordered_at":1796423110.0781736'
    ',"acks_before":0,"done":false,"withheld":""}],"first_paged_at":null,"acked_at":null,"acks":0'
    ',"acked_by":null,"ack_via":null,"next_escalation_at":null,"timer_gen":0,"slack_paged":[]}'
    ',"reminder_due":null,"reminder_gen":0,"link":null,"ready":false}'
)


def test_a_record_the_previous_version_wrote_reads_back_and_is_written_the_same() -> None:
    incident = parse_json(Incident, WRITTEN_BEFORE)
    assert incident.source == AlertSource.ALERTMANAGER and incident.announcement == ("C9", "1.2")
    assert incident.latest_verdict is not None
    assert incident.latest_verdict.fixes == [FixOffer(action="a", label="l", params={"x": "y"})]
    assert isinstance(incident.paging.orders[0], PageOrder) and incident.paging.orders[0].acks_before == 0
    assert dump_json(incident) == WRITTEN_BEFORE


def test_unknown_keys_are_ignored_and_missing_fields_take_their_defaults() -> None:
    stored = json.loads(WRITTEN_BEFORE)
    stored["added_later"] = {"x": 1}
    del stored["ready"], stored["paging"]["slack_paged"], stored["paging"]["orders"][0]["acks_before"]
    incident = parse_json(Incident, json.dumps(stored))
    assert incident.ready is False and incident.paging.slack_paged == []
    assert incident.paging.orders[0].acks_before is None


def test_an_incident_source_is_slack_or_an_alert_source() -> None:
    assert set(get_args(IncidentSource)) == {"slack", *AlertSource}
