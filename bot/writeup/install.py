"""Wires the write-up features into a runtime: `await install(rt)` (from bot.app.features.create_full_runtime, after
the incidents feature). Idempotent.

Provides the `Writeup` context (settings, timeline, capture rules, optional summariser) on the runtime, and adds
to `rt.hooks`:
    event_recorders     capture.record_event (timeline) and summaries.record_thread_event (threads)
    job_handlers        writeup.postmortem, writeup.backfill, writeup.tickets, writeup.report, summary.thread,
                        summary.incident
    diagnosis_finished  the findings of a diagnosis, with evidence, into the incident's timeline
    closers, secrets    the summariser's HTTP client; SUMMARIZER_API_KEY for log redaction

and observes the incidents' timeline: a `resolved` entry queues the postmortem (then a back-fill that
re-publishes if it found gaps), `declared` and `severity` entries (re)arm the catch-up summary cadence.
`/incident postmortem` and `/incident summary` are Slack listeners: handlers/ offers them when this feature is
installed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from bot.incidents.service import Incidents
from bot.incidents.timeline import Entry, EntryKind, Timeline
from bot.runtime import Runtime
from bot.writeup.config import WriteupSettings, load_writeup_settings
from bot.writeup.context import CaptureRules, Writeup, writeup_of

log = logging.getLogger("bot.writeup")
EventRecorder = Callable[[Runtime, dict, dict], Awaitable[None]]

RESOLVE_GRACE_S = 0.8


async def install(rt: Runtime, *, settings: WriteupSettings | None = None) -> Writeup:
    installed = rt.feature(Writeup)
    if installed is not None:
        return installed
    settings = settings or load_writeup_settings()
    incidents = rt.feature(Incidents)
    timeline = incidents.timeline if incidents is not None else Timeline(rt.redis, rt.namespace)
    w = Writeup(rt=rt, settings=settings, timeline=timeline, rules=CaptureRules.from_settings(settings))
    if settings.summarizer_enabled:
        from bot.writeup.summaries import make_summarizer

        w.summarizer = make_summarizer(w)
    rt.provide(w)
    from bot.writeup.trackers.config import load_tracker_settings

    trackers = rt.provide(load_tracker_settings())
    rt.hooks.secrets.extend(trackers.secrets())
    _wire(rt, w)
    return w


def _wire(rt: Runtime, w: Writeup) -> None:
    rt.hooks.event_recorders += [_recorder("capture", "record_event"), _recorder("summaries", "record_thread_event")]
    rt.hooks.job_handlers.append(job_handlers)
    rt.hooks.diagnosis_finished.append(record_findings)
    rt.hooks.closers.append(_close)
    rt.hooks.secrets.extend(w.settings.secrets())
    w.timeline.observers.append(lambda entry: on_timeline_entry(rt, entry))
    from bot.oncall.service import oncall_of
    if (oncall := oncall_of(rt)) is not None:  # installed before us: its handoff DMs list follow-ups too
        from bot.writeup.handoff import handoff_followups
        oncall.handoff_notes.append(lambda user: handoff_followups(rt, user))


def _recorder(module: str, name: str) -> EventRecorder:
    """An event recorder of bot.writeup.<module>, imported with the first Slack event it is given: a process that
    answers commands and buttons and is sent no channel messages never loads the capture and summary code."""
    async def record(rt: Runtime, event: dict, envelope: dict) -> None:
        await getattr(import_module(f"bot.writeup.{module}"), name)(rt, event, envelope)

    record.__qualname__ = f"{module}.{name}"
    return record


def job_handlers(rt: Runtime) -> dict[str, Any]:
    from bot.writeup import summaries
    from bot.writeup.backfill import backfill_job
    from bot.writeup.postmortem.publish import postmortem_job
    from bot.writeup.report_post import JOB as REPORT_JOB
    from bot.writeup.report_post import report_job
    from bot.writeup.trackers.export import tickets_job

    def bind(fn: Any) -> Any:
        async def handler(job: Any) -> None:
            await fn(rt, job)

        return handler

    return {"writeup.postmortem": bind(postmortem_job), "writeup.backfill": bind(backfill_job),
            "writeup.tickets": bind(tickets_job), REPORT_JOB: bind(report_job),
            **summaries.job_handlers(rt)}


async def on_timeline_entry(rt: Runtime, entry: Entry) -> None:
    """React to what the incident feature records (runs inside its call: only quick enqueues here)."""
    w = writeup_of(rt)
    if entry.kind == EntryKind.RESOLVED and w.settings.postmortem_on_resolve:
        from bot.writeup.requests import request_postmortem

        # A moment's delay, so the resolution's own channel post (queued right after this entry) exists to link.
        await request_postmortem(rt, entry.incident_id, reason="resolved", backfill=w.settings.backfill_on_resolve,
                                 delay_s=RESOLVE_GRACE_S)
    elif entry.kind == EntryKind.DECLARED:
        from bot.writeup.summaries import arm_catch_up

        await arm_catch_up(rt, entry.incident_id, str(entry.data.get("severity") or "P2"))
    elif entry.kind == EntryKind.SEVERITY and entry.data.get("to"):
        from bot.writeup.summaries import arm_catch_up

        await arm_catch_up(rt, entry.incident_id, str(entry.data["to"]), replace=True)


async def record_findings(rt: Runtime, run_id: str, state: dict[str, str], verdict: Any) -> None:
    """on_diagnosis_finished hook: the verdict's findings with their evidence, for the postmortem's root cause."""
    incident_id = state.get("incident_id")
    w = rt.feature(Writeup)
    if not incident_id or w is None:
        return
    findings = [{"check": f.check, "target": f.target, "status": str(getattr(f.status, "value", f.status)),
                 "summary": f.summary, "severity": f.severity, "evidence": _jsonable(f.evidence or {}),
                 "hint": f.hint, "resource": f.resource} for f in verdict.findings]
    await w.timeline.record(incident_id, EntryKind.DIAGNOSIS_FINDINGS, entry_id=f"diagnosis_findings:{run_id}",
                            actor="bot", text=verdict.headline,
                            data={"run_id": run_id, "service": verdict.target,
                                  "status": str(getattr(verdict.status, "value", verdict.status)),
                                  "counts": dict(verdict.counts or {}), "findings": findings,
                                  "parent_ts": state.get("parent_ts"), "channel": state.get("channel")})
    from bot.writeup.report import record_recurring

    await record_recurring(rt, incident_id, findings)  # for the report's recurring findings


def _jsonable(value: Any) -> Any:
    """Evidence may hold datetimes or other objects: keep what JSON can carry, as text."""
    import json

    return json.loads(json.dumps(value, default=str))


async def _close(rt: Runtime) -> None:
    w = rt.feature(Writeup)
    if w is not None and w.summarizer is not None and hasattr(w.summarizer, "aclose"):
        await w.summarizer.aclose()
