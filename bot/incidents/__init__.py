"""Incidents: declare, run, page, escalate and resolve — from Slack, alert sources (bot/alerts/) and PagerDuty.

    config.py      IncidentSettings (INCIDENT_*, ALERT*, PAGERDUTY_WEBHOOK_SECRET; the paging policy file)
    model.py       Incident, Paging, PageOrder, PageRecord, FrozenLevel; ids, channel names
    store.py       IncidentStore: the records in Redis, the per-incident lock, lookups, posted/steps/page records
    service.py     Incidents: the per-process context, `rt.feature(Incidents)`; post-once, authorisation
    lifecycle.py   declare (a resumable job), status/note/commander/resolve, reminders, the auditor
    escalation.py  page orders and exactly-once delivery, escalation timers, acks, severity changes, /escalate
    messages.py    the header, the announcement, the lines posted into the channel
    timeline.py    Timeline: the incident's recorded entries, read by the write-up features
    notice.py      AlertNotice: what any alert source tells the intake; AlertSource, the sources' names
    alerts.py      the alert intake: a notice (notice.py) provider_acks.py   POST /hooks/pagerduty (acks flow back)
                   opens, annotates, resolves
    jobs.py        the job kinds                       install.py         wiring into a Runtime

Other features use only service.py, store.py, timeline.py, model.py and notice.py, and the alert sources
(bot/alerts/) the intake, alerts.py (an import-linter contract holds this).

Timeline kinds recorded here (bot/incidents/timeline.py; entry ids are deterministic, so retries land on one entry):

    declared             actor = reporter (or the alert source); text = title; data: severity, service, source,
                         origin_channel, alert_group_key, private              entry id "declared"
    status               data: from, to, next_update_due; text = the note       "status:<key>"
    severity             data: from, to, paged (names paged for the difference); text = reason  "severity:<key>"
    commander            data: from, to                                         "commander:<key>"
    note                 text                                                   "note:<key>"
    page_sent            actor "bot"; data: dedup_key, delivery ("pagerduty", "slack:U123"), severity, level,
    page_failed            reason (policy|timer|manual|severity|people), urgency, provider_ref; text = error
                                                                                "page:<dedup key>|<delivery>"
    page_withheld        not sent, the incident acknowledged or resolved before its turn: data as page_sent, and
                         withheld (acknowledged|resolved); text says so         "withheld:<dedup key>|<delivery>"
    page_acked           actor = who (Slack id, or a PagerDuty name); data: via (button|command|pagerduty),
                         after_s, severity, level                               "page_acked:<gen>"
    page_resolved        a PagerDuty alert resolved in PagerDuty (the incident stays as it is)
    escalated            data: level, reason (timer|manual|people), severity; timers add due, lateness_s;
                         people pages add people                                "escalated:<sev>:L<n>"
    reminder             data: since_update_s, every_s                          "reminder:<gen>"
    diagnosis_requested  data: service, run_id, joined, planned                 "diagnosis_requested:<run>"
    diagnosis            text = verdict headline; data: run_id, service, status, suggested_severity,
                         failing_checks, counts                                 "diagnosis:<run>"
    alert                an alert source: text = summary; data: status, labels, source, fingerprint,
                         starts_at, ...; or a note (CloudWatch no data)           "alert:…", "alert-note:…"
    resolved             text = what fixed it; data: from, duration_s, severity  "resolved"

`<key>` is the Slack trigger_id of the command (or button click) that made the change.
"""
