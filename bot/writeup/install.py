"""Wires the write-up features into a runtime: `await install(rt)` (from bot.features.create_full_runtime, after
the incidents feature). Idempotent.

Puts into `rt.extras`:
    writeup                 the `Writeup` context (settings, timeline, capture rules, optional summariser)
    event_recorders         + bot.capture.record_event (timeline) and bot.summaries.record_thread_event (threads)
    job_handler_factories   + writeup.postmortem, writeup.backfill, summary.thread, summary.incident
    on_diagnosis_finished   + the findings of a diagnosis, with evidence, into the incident's timeline
    postmortem_markdown     what `chatops postmortem INC-n` prints
    closers, secrets        + the summariser's HTTP client; SUMMARIZER_API_KEY for log redaction

and observes the incidents' timeline: a `resolved` entry queues the postmortem (then a back-fill that
re-publishes if it found gaps), `declared` and `severity` entries (re)arm the catch-up summary cadence.
`/incident postmortem` and `/incident summary` plug into handlers/commands/incident.py's subcommand registry.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.runtime import Runtime
from bot.timeline import Entry, Timeline
from bot.writeup.config import WriteupSettings, load_writeup_settings
from bot.writeup.context import CaptureRules, Writeup

log = logging.getLogger("bot.writeup")

RESOLVE_GRACE_S = 0.8


async def install(rt: Runtime, *, settings: WriteupSettings | None = None) -> Writeup:
    if "writeup" in rt.extras:
        return rt.extras["writeup"]
    settings = settings or load_writeup_settings()
    incidents = rt.extras.get("incidents")
    timeline = incidents.timeline if incidents is not None else Timeline(rt.redis, rt.namespace)
    w = Writeup(rt=rt, settings=settings, timeline=timeline, rules=CaptureRules.from_settings(settings))
    from bot.summaries import make_summarizer

    w.summarizer = make_summarizer(w)
    rt.extras["writeup"] = w
    _wire(rt, w)
    return w


def _wire(rt: Runtime, w: Writeup) -> None:
    from bot import capture, summaries
    from bot.postmortem.assemble import postmortem_markdown

    capture.install(rt)
    recorders = rt.extras.setdefault("event_recorders", [])
    if summaries.record_thread_event not in recorders:
        recorders.append(summaries.record_thread_event)
    rt.extras.setdefault("job_handler_factories", []).append(job_handlers)
    rt.extras.setdefault("on_diagnosis_finished", []).append(record_findings)
    rt.extras["postmortem_markdown"] = postmortem_markdown
    rt.extras.setdefault("closers", []).append(_close)
    rt.extras.setdefault("secrets", []).extend(w.settings.secrets())
    w.timeline.observers.append(lambda entry: on_timeline_entry(rt, entry))
    _plug_subcommands()


def _plug_subcommands() -> None:
    try:
        from handlers.commands import incident
        from handlers.commands.incident_writeup import SUBCOMMANDS
    except ImportError:  # the /incident command is not in this build
        return
    registry = getattr(incident, "SUBCOMMAND_HANDLERS", None)
    if isinstance(registry, dict):
        for name, handler in SUBCOMMANDS.items():
            registry.setdefault(name, handler)


def job_handlers(rt: Runtime) -> dict[str, Any]:
    from bot import summaries
    from bot.backfill import backfill_job
    from bot.postmortem.publish import postmortem_job

    def bind(fn: Any) -> Any:
        async def handler(job: Any) -> None:
            await fn(rt, job)

        return handler

    return {"writeup.postmortem": bind(postmortem_job), "writeup.backfill": bind(backfill_job),
            **summaries.job_handlers(rt)}


async def on_timeline_entry(rt: Runtime, entry: Entry) -> None:
    """React to what the incident feature records (runs inside its call: only quick enqueues here)."""
    w: Writeup = rt.extras["writeup"]
    if entry.kind == "resolved" and w.settings.postmortem_on_resolve:
        from bot.postmortem.publish import request_postmortem

        # A moment's delay, so the resolution's own channel post (queued right after this entry) exists to link.
        await request_postmortem(rt, entry.incident_id, reason="resolved", backfill=w.settings.backfill_on_resolve,
                                 delay_s=RESOLVE_GRACE_S)
    elif entry.kind == "declared":
        from bot.summaries import arm_catch_up

        await arm_catch_up(rt, entry.incident_id, str(entry.data.get("severity") or "P2"))
    elif entry.kind == "severity" and entry.data.get("to"):
        from bot.summaries import arm_catch_up

        await arm_catch_up(rt, entry.incident_id, str(entry.data["to"]), replace=True)


async def record_findings(rt: Runtime, run_id: str, state: dict[str, str], verdict: Any) -> None:
    """on_diagnosis_finished hook: the verdict's findings with their evidence, for the postmortem's root cause."""
    incident_id = state.get("incident_id")
    w: Writeup | None = rt.extras.get("writeup")
    if not incident_id or w is None:
        return
    findings = [{"check": f.check, "target": f.target, "status": str(getattr(f.status, "value", f.status)),
                 "summary": f.summary, "severity": f.severity, "evidence": _jsonable(f.evidence or {}),
                 "hint": f.hint, "resource": f.resource} for f in verdict.findings]
    await w.timeline.record(incident_id, "diagnosis_findings", entry_id=f"diagnosis_findings:{run_id}",
                            actor="bot", text=verdict.headline,
                            data={"run_id": run_id, "service": verdict.target,
                                  "status": str(getattr(verdict.status, "value", verdict.status)),
                                  "counts": dict(verdict.counts or {}), "findings": findings,
                                  "parent_ts": state.get("parent_ts"), "channel": state.get("channel")})


def _jsonable(value: Any) -> Any:
    """Evidence may hold datetimes or other objects: keep what JSON can carry, as text."""
    import json

    return json.loads(json.dumps(value, default=str))


async def _close(rt: Runtime) -> None:
    w: Writeup | None = rt.extras.get("writeup")
    if w is not None and w.summarizer is not None and hasattr(w.summarizer, "aclose"):
        await w.summarizer.aclose()
