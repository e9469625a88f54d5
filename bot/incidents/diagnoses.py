"""A diagnosis belongs to its incident, and confirms its recovery.

`diagnose_for_incident` starts a run that belongs to an incident (its buttons, a declaration, an alert); a
`/diagnose` typed in its channel is queued as the channel's and given to the incident by its start job
(`on_diagnosis_starting`). Every finished run of an incident's diagnosis (`record_verdict`, from lifecycle.on_diagnosis_finished) replaces the
header's latest verdict. When the incident moves to `monitoring`, `arm` queues `incident.recheck`: it re-runs
the diagnosis of the incident's service at once and every RECOVERY_RECHECK_S after that until the incident leaves
`monitoring` (delayed jobs on the queue, so a restart loses none; a generation counter retires the chain of an
earlier monitoring period). A run while monitoring that passes every check posts "recovered: all N checks that
failed since HH:MM now pass" with the header's Resolve button — N counts every distinct check+target that failed
in any run of the service since its first failing run, not only that run's. One of those the run no longer runs
(the services file changed) cannot pass: the message says how many pass and names those no longer run. A run with
new failures is posted at once.
"""

from __future__ import annotations

import time
import logging
from datetime import UTC, datetime
from typing import Any

from bot.diagnosis import history
from bot.diagnosis.run import DiagnosisStarted, request_diagnosis, run_results
from bot.diagnosis.render.text import change_line, change_text
from bot.incidents import messages
from bot.incidents.model import Incident, LatestVerdict
from bot.incidents.service import Incidents
from bot.incidents.timeline import EntryKind
from bot.queue import Job
from bot.slack.mrkdwn import escape, inert
from checks.compare import FAILING, RunDiff

log = logging.getLogger(__name__)
SHOWN_GONE = 3  # checks named in a recovery message as no longer run; the rest are counted


def _gen_key(ctx: Incidents, incident_id: str) -> str:
    return ctx.store.key("recheck", incident_id)


async def diagnose_for_incident(ctx: Incidents, incident: Incident, user: str, service: str) -> DiagnosisStarted:
    """A run whose verdict reaches the incident's header, timeline, catch-ups and postmortem."""
    assert incident.channel is not None
    started = await request_diagnosis(ctx.rt, service, incident.channel, user, incident_id=incident.id)
    await _belongs(ctx, incident.id, started.run_id, user, service, joined=started.joined, planned=started.planned)
    return started


async def on_diagnosis_starting(rt: Any, run_id: str, state: dict[str, str]) -> None:
    """Hook for bot.diagnosis.run: a run asked for in an incident's own channel while it was open (`/diagnose`
    typed there; one resolved since, behind a queue backlog, still gets its verdict) is that incident's. Decided by
    the run's start job, not the ack: the ack then queues the run in one round trip instead of ten (channel,
    record, queue, timeline, record again). Thread-mode incidents share their channel with others, so a run there
    stays the channel's."""
    ctx: Incidents | None = rt.feature(Incidents)
    if ctx is None or state.get("incident_id"):
        return
    incident_id = await ctx.store.by_channel(state["channel"])
    incident = await ctx.store.get(incident_id) if incident_id else None
    if incident is None or incident.mode != "channel" or not _open_at(incident, float(state["started"])):
        return
    state["incident_id"] = incident.id
    await _belongs(ctx, incident.id, run_id, state["user"], state["service"], joined=False,
                   planned=int(state["total"]))


def _open_at(incident: Incident, moment: float) -> bool:
    return incident.is_open or (incident.resolved_at or 0.0) >= moment


async def _belongs(ctx: Incidents, incident_id: str, run_id: str, user: str, service: str, *, joined: bool,
                   planned: int) -> None:
    """The run in the incident's timeline and its list of runs; both idempotent, as a retried job needs."""
    await ctx.timeline.record(incident_id, EntryKind.DIAGNOSIS_REQUESTED, entry_id=f"diagnosis_requested:{run_id}",
                              actor=user, text=service,
                              data={"service": service, "run_id": run_id, "joined": joined, "planned": planned})
    async with ctx.store.mutate(incident_id) as current:
        if run_id not in current.diagnosis_runs:
            current.diagnosis_runs.append(run_id)


def latest_verdict(run_id: str, state: dict[str, str], verdict: Any, diff: RunDiff | None) -> LatestVerdict:
    at = float(state.get("finished_at") or state.get("started") or time.time())  # no stamp: it finished now
    return LatestVerdict(run_id=run_id, service=verdict.target, status=str(verdict.status.value),
                         headline=verdict.headline, at=at, since_last=change_line(diff) if diff else None,
                         fixes=[fix for finding in verdict.findings for fix in finding.fixes])


def newer(current: LatestVerdict | None, candidate: LatestVerdict) -> bool:
    """Runs can finish out of order (a slow one after a quick re-run): the header keeps the newest."""
    return current is None or candidate.at >= current.at


# ------------------------------------------------------------------------------------------------ monitoring

async def arm(ctx: Incidents, incident: Incident) -> None:
    """The incident just moved to monitoring: re-check now, then on the cadence."""
    if not incident.service:
        return
    gen = await ctx.rt.redis.incr(_gen_key(ctx, incident.id))
    await _enqueue(ctx, incident.id, int(gen), 0, delay_s=0.0)


async def _enqueue(ctx: Incidents, incident_id: str, gen: int, n: int, *, delay_s: float) -> None:
    await ctx.rt.queue.enqueue("incident.recheck", {"incident": incident_id, "gen": gen, "n": n},
                               job_id=f"recheck:{incident_id}:{gen}:{n}", delay_s=delay_s)


async def recheck_job(ctx: Incidents, job: Job) -> None:
    incident_id, gen, n = job.payload["incident"], int(job.payload["gen"]), int(job.payload["n"])
    incident = await ctx.store.get(incident_id)
    current = await ctx.rt.redis.get(_gen_key(ctx, incident_id))
    if incident is None or incident.status != "monitoring" or current is None or int(current) != gen:
        return  # resolved, back to investigating, or a later monitoring period has its own chain
    if incident.service and incident.service in ctx.rt.services().services:
        await diagnose_for_incident(ctx, incident, "bot", incident.service)
    await _enqueue(ctx, incident_id, gen, n + 1, delay_s=ctx.rt.settings.recovery_recheck_s)


async def judge_while_monitoring(ctx: Incidents, incident: Incident, run_id: str, state: dict[str, str],
                                 verdict: Any, diff: RunDiff | None) -> None:
    """Recovery confirmed, or a regression, posted at once."""
    if incident.status != "monitoring":
        return
    failing = [f for f in verdict.findings if f.status.value in FAILING]
    if diff is not None and diff.regressed:
        await ctx.say(incident.id, f"regression:{run_id}", *messages.line(regression_text(verdict.target, diff)))
        return
    reference = await history.first_failing_run(ctx.rt, state)
    if failing or reference is None:
        return
    failed = await history.failed_since_first(ctx.rt, state) | {o.key for o in reference.failing}
    ran = {(r.check, r.target) for r in (await run_results(ctx.rt, run_id)).values()}
    gen = await ctx.rt.redis.get(_gen_key(ctx, incident.id))
    text = recovered_text(len(failed), sorted(failed - ran), reference.at)
    await ctx.say(incident.id, f"recovered:{verdict.target}:{int(gen or 0)}", text,
                  recovered_blocks(incident, text))


def recovered_text(failed: int, gone: list[tuple[str, str]], at: float) -> str:
    """`failed`: how many check+targets failed since `at`; `gone`: those of them this run did not run."""
    since = f"since {datetime.fromtimestamp(at, UTC):%H:%M} UTC"
    if not gone:
        return f"recovered: all {failed} checks that failed {since} now pass"
    named = ", ".join(f"{check} {target}" for check, target in gone[:SHOWN_GONE])
    more = f" and {len(gone) - SHOWN_GONE} more" if len(gone) > SHOWN_GONE else ""
    return (f"recovered: {failed - len(gone)} of the {failed} checks that failed {since} now pass; "
            f"{len(gone)} no longer run{'s' if len(gone) == 1 else ''} ({escape(named)}{more})")


def recovered_blocks(incident: Incident, text: str) -> list[dict]:
    resolve = next(e for e in messages.header_actions(incident)["elements"]
                   if e["action_id"] == messages.RESOLVE_ACTION)  # the header's button: same action, same checks
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f":white_check_mark: *{text}*. "
                                                                    f"Resolve {incident.id} if you agree."}},
            {"type": "actions", "block_id": f"recovered:{incident.id}", "elements": [resolve]}]


def regression_text(service: str, diff: RunDiff) -> str:
    listed = "\n".join(f"• new: {inert(change_text(c))}" for c in diff.new[:5])
    return (f":rotating_light: *Regression while monitoring* `{escape(service)}`: "
            f"{escape(change_line(diff))}\n{listed}")
