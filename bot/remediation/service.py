"""Preview → request → approve or deny → the `remediation.apply` job → result, timeline, re-diagnosis.

Nothing a button carries is trusted: an offer's button names a diagnosis run and a digest of the offer, and the
offer itself is read back from the run's stored results; an approval names a request, whose plan was stored
when it was requested. An approval takes the request's decision and queues its job in one Redis script, so no
crash leaves an approved fix that never runs; the decision, not the request record, says who approved (the job
writes it into the record). The job runs the action at most once per request: the result is stored before
anything is posted, an attempt marker tells a retry that an earlier delivery may have started, and the action
re-reads the resource and refuses when it differs from the preview (so a retry after a write does not write
again); a retry that finds the state already at the plan's "after" reports the fix as applied.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import msgspec

from bot.diagnosis.render.slack import offer_digest
from bot.diagnosis.run import request_diagnosis, run_results, run_state
from bot.errors import UserError
from bot.incidents import diagnoses
from bot.incidents.model import Incident
from bot.incidents.service import Incidents, incidents_of
from bot.incidents.timeline import EntryKind
from bot.logs import escape_controls
from bot.queue import Job
from bot.remediation import guard, messages
from bot.remediation.records import RECORD_TTL_S, FixRequest, Origin, Preview, Records, as_dict
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.slack.posts import post_once
from checks.fixes import FixAction, FixChanged, FixOffer, FixPlan, FixRefused, FixResult

log = logging.getLogger(__name__)

APPLY_JOB = "remediation.apply"
DISABLED = ("Fixes are turned off here (REMEDIATION_ENABLED=false). Nothing was changed; "
            "the finding's hint says how to fix it by hand.")


class Remediation(msgspec.Struct):
    ctx: Incidents
    records: Records
    _actions: dict[str, FixAction] | None = None

    @property
    def actions(self) -> dict[str, FixAction]:
        """Built on first use: the fixes import boto3, which a process answering Slack need not load."""
        if self._actions is None:
            from checks.aws.fixes import fix_actions

            self._actions = fix_actions()
        return self._actions

    @property
    def rt(self) -> Runtime:
        return self.ctx.rt

    def require_enabled(self) -> None:
        if not self.rt.settings.remediation_enabled:
            raise UserError(DISABLED)

    def action(self, name: str) -> FixAction:
        if name not in self.actions:
            raise UserError(f"This bot has no fix called `{name[:60]}` any more. Nothing was changed.")
        return self.actions[name]

    async def plan(self, offer: FixOffer, params: dict[str, str] | None = None) -> FixPlan:
        """The action's read-only preview; its refusal becomes the user's answer."""
        try:
            return await self.action(offer.action).plan(self.rt.aws, params or offer.params)
        except FixRefused as exc:
            raise UserError(f"{exc}") from None

    async def incident(self, origin: Origin) -> Incident | None:
        return await self.ctx.store.get(origin.incident_id) if origin.incident_id else None


def remediation_of(rt: Runtime) -> Remediation:
    fx = rt.feature(Remediation)
    if fx is None:
        raise RuntimeError("remediation is not installed in this runtime (bot.remediation.service.install)")
    return fx


async def install(rt: Runtime) -> Remediation:
    """Idempotent. Needs the incidents feature (its policy, permissions, timeline)."""
    if (installed := rt.feature(Remediation)) is not None:
        return installed
    records = Records(rt.redis, rt.key, lambda request_id: rt.queue.key("fix", "decided", request_id))
    fx = Remediation(incidents_of(rt), records)
    rt.provide(fx)
    rt.hooks.job_handlers.append(job_handlers)
    return fx


# ------------------------------------------------------------------------------------------------ offers

async def resolve_source(fx: Remediation, source: str) -> tuple[FixOffer, Origin]:
    """A button's value → the offer it means and where it was made: `<run>:<digest>` or `undo:<request>`."""
    kind, _, rest = source.partition(":")
    if kind == "undo":
        request = await fx.records.get(rest)
        result = request.fix_result() if request else None
        if request is None or result is None or result.reverse is None:
            raise UserError("That undo belongs to a fix I no longer know (they are kept a day). Nothing was changed.")
        return result.reverse, request.origin
    state = await run_state(fx.rt, kind)
    offers = [o for r in (await run_results(fx.rt, kind)).values() for o in r.fixes if offer_digest(o) == rest]
    if not state or not offers:
        raise UserError("That fix belongs to a diagnosis I no longer have (runs are kept a day); run /diagnose "
                        "again. Nothing was changed.")
    return offers[0], await _origin(fx, kind, state)


async def _origin(fx: Remediation, run_id: str, state: dict[str, str]) -> Origin:
    incident = await fx.ctx.store.get(state["incident_id"]) if state.get("incident_id") else None
    thread = incident.thread_ts if incident and incident.mode == "thread" else None
    return Origin(channel=state["channel"], service=state.get("service", ""),
                  incident_id=incident.id if incident else "", run_id=run_id, thread_ts=thread or "")


async def open_preview(fx: Remediation, source: str, user: str, trigger_id: str) -> str:
    """A click on an offer (or an undo): the preview dialog, from the action's read-only plan."""
    fx.require_enabled()
    offer, origin = await resolve_source(fx, source)
    incident = await fx.incident(origin)
    await guard.may_request(fx.ctx, origin, incident, user)
    plan = await fx.plan(offer)
    token = await fx.records.save_preview(Preview(offer=as_dict(offer), origin=origin),
                                          fx.rt.settings.remediation_request_ttl_s)
    view = messages.preview_view(offer, plan, token, needs_text(fx, offer.action, origin, incident))
    try:
        await fx.rt.slack.call("views.open", trigger_id=trigger_id, view=view)
    except SlackError as exc:
        log.warning("views.open for a fix preview failed: %s", exc.error)
        return "The preview could not open (Slack was slower than the click); press the button again."
    return f"Preview of “{offer.label}” opened: nothing runs until you request it and it is approved."


def needs_text(fx: Remediation, action: str, origin: Origin, incident: Incident | None) -> str:
    severity = incident.severity if incident else None
    who = guard.approvers_text(fx.ctx, origin, incident)
    if fx.ctx.policy.remediation.needs_second_person(action, severity):
        return f"a second person: {who}"
    return f"{who} (the requester may approve it)"


# ------------------------------------------------------------------------------------------------ requests

async def submit_request(fx: Remediation, token: str, typed: dict[str, str], user: str) -> FixRequest:
    """The dialog's "Request": re-plan with what was typed, store the request, post it for approval."""
    fx.require_enabled()
    preview = await fx.records.preview(token)
    if preview is None:
        raise UserError("This preview expired; press the fix's button again.")
    offer, origin = preview.fix_offer(), preview.origin
    incident = await fx.incident(origin)
    await guard.may_request(fx.ctx, origin, incident, user)
    params = {**offer.params, **{k: v for k, v in typed.items() if offer.params.get(k) == ""}}
    plan = await fx.plan(offer, params)
    request = FixRequest(label=offer.label, plan=as_dict(plan), origin=origin, requester=user,
                         severity=incident.severity if incident else None,
                         expires_at=time.time() + fx.rt.settings.remediation_request_ttl_s)
    await fx.records.save(request)
    text, blocks = messages.approval_message(offer.label, plan, user, needs_text(fx, plan.action, origin, incident),
                                             request.expires_at, request.id)
    request.message_ts = await _post(fx, request, "request", text, blocks)
    await fx.records.save(request)
    await _record(fx, request, "requested", user, {"calls": plan.calls})
    return request


async def approve(fx: Remediation, request_id: str, user: str) -> str:
    fx.require_enabled()
    request = await _pending(fx, request_id)
    await guard.may_approve(fx.ctx, request, await fx.incident(request.origin), user)
    decision = f"approved:{user}:{uuid.uuid4().hex[:8]}"
    holder = await fx.rt.queue.enqueue_claimed(fx.records.decision_key(request.id), decision, RECORD_TTL_S,
                                               APPLY_JOB, {"request": request.id}, job_id=f"fix:{request.id}")
    if holder != decision:
        return "Someone decided this request a moment ago; nothing more to do."
    request.decided_by = user  # the job records the approval: a save here could overwrite its result
    await _redraw(fx, request, f"Approved by <@{user}>: running.")
    await _record(fx, request, "approved", user, {})
    return f"Approved: “{request.label}” runs now; the result is posted here."


async def deny(fx: Remediation, request_id: str, user: str) -> str:
    fx.require_enabled()
    request = await _pending(fx, request_id)
    await guard.may_request(fx.ctx, request.origin, await fx.incident(request.origin), user)
    if not await fx.records.deny(request.id, user):
        return "Someone decided this request a moment ago; nothing more to do."
    request.status, request.decided_by = "denied", user
    await fx.records.save(request)
    await _redraw(fx, request, f"Denied by <@{user}>: nothing was changed.")
    await _record(fx, request, "denied", user, {})
    return f"Denied: “{request.label}” will not run."


async def _pending(fx: Remediation, request_id: str) -> FixRequest:
    request = await fx.records.get(request_id)
    if request is None:
        raise UserError("I don't know that fix request any more (they are kept a day). Nothing was changed.")
    decided = await fx.records.decision(request.id)
    if decided is not None:
        raise UserError(f"This request was already {decided[0]} by <@{decided[1]}>.")
    if request.expired:
        raise UserError(f"This request expired {int(fx.rt.settings.remediation_request_ttl_s // 60)} min after it "
                        f"was made, unapproved. Nothing was changed; request it again from the finding.")
    return request


# ------------------------------------------------------------------------------------------------ the job

async def apply_job(fx: Remediation, job: Job) -> None:
    request = await fx.records.get(str(job.payload["request"]))
    decided = await fx.records.decision(request.id) if request else None
    if request is None or decided is None or decided[0] != "approved":
        return
    if request.result is None:
        await _run(fx, request, decided[1])
    await announce(fx, request)


async def _run(fx: Remediation, request: FixRequest, approver: str) -> None:
    request.status, request.decided_by = "approved", approver
    first = await fx.records.claim(request.id, "attempt")
    result = await execute(fx, request.fix_plan(), first_attempt=first)
    request.result, request.status = as_dict(result), "done"
    await fx.records.save(request)  # before anything is said: a retry from here on never applies again


async def run_from_shell(fx: Remediation, plan: FixPlan, label: str, requester: str,
                         incident: Incident | None) -> FixRequest:
    """`chatops fix --yes`, once the policy let the requester approve it: the same request record, decision,
    once-only run and audit (log lines; the incident's timeline when one is named) as a Slack request approved
    by its requester, run in this process. Not posted and not re-diagnosed: a shell may have no Slack and no
    worker, so the caller prints the re-check command."""
    origin = Origin(channel=incident.channel or "" if incident else "", incident_id=incident.id if incident else "",
                    service=incident.service or "" if incident else "")
    request = FixRequest(label=label, plan=as_dict(plan), origin=origin, requester=requester,
                         severity=incident.severity if incident else None, expires_at=time.time())
    await fx.records.save(request)
    await _record(fx, request, "requested", requester, {"calls": plan.calls})
    await fx.records.decide(request.id, "approved", requester)
    await _record(fx, request, "approved", requester, {})
    await _run(fx, request, requester)
    result = request.fix_result()
    assert result is not None
    await _record(fx, request, "applied" if result.ok else "failed", requester,
                  {"ok": result.ok, "message": result.message, "calls": plan.calls, "before": plan.before,
                   "after": result.after})
    return request


async def execute(fx: Remediation, plan: FixPlan, *, first_attempt: bool) -> FixResult:
    action = fx.actions.get(plan.action)
    if action is None:
        return FixResult(False, f"this bot has no fix called {plan.action} any more")
    try:
        return await action.apply(fx.rt.aws, plan)
    except FixChanged as exc:
        if first_attempt or not exc.reached(plan.after):
            return _refused(exc, first_attempt)
        return FixResult(True, f"an earlier attempt made the change and was interrupted before it could say so; "
                               f"now {_state_text(exc.current, plan.after)}.", exc.current, action.reverse(plan))
    except FixRefused as exc:
        return _refused(exc, first_attempt)


def _refused(exc: FixRefused, first_attempt: bool) -> FixResult:
    if first_attempt:
        return FixResult(False, str(exc))
    return FixResult(False, f"an earlier attempt was interrupted, and now: {exc} If that attempt made the "
                            "change, the re-diagnosis shows it.")


def _state_text(current: dict[str, str], after: dict[str, str]) -> str:
    return ", ".join(f"{key} {current.get(key)}" for key in after)


async def announce(fx: Remediation, request: FixRequest) -> None:
    """Post the result, record it in the timeline, re-diagnose the service once; each step idempotent."""
    result = request.fix_result()
    assert result is not None
    await _post(fx, request, "result", *messages.result_message(request.label, result, request.id))
    await _record(fx, request, "applied" if result.ok else "failed", request.decided_by or "bot",
                  {"ok": result.ok, "message": result.message, "calls": request.plan["calls"],
                   "before": request.plan["before"], "after": result.after})
    if result.ok and request.rediagnosis is None:
        request.rediagnosis = await _rediagnose(fx, request)
        await fx.records.save(request)


async def _rediagnose(fx: Remediation, request: FixRequest) -> str:
    origin = request.origin
    if not origin.service or origin.service not in fx.rt.services().services:
        return ""
    incident = await fx.incident(origin)
    if incident is not None and incident.channel == origin.channel:
        return (await diagnoses.diagnose_for_incident(fx.ctx, incident, "bot", origin.service)).run_id
    return (await request_diagnosis(fx.rt, origin.service, origin.channel, "bot")).run_id


async def _post(fx: Remediation, request: FixRequest, what: str, text: str, blocks: list[dict]) -> str:
    return await post_once(fx.rt.redis, fx.rt.slack, fx.rt.key("fix", "posts"), f"{request.id}:{what}",
                           request.origin.channel, text, blocks=blocks,
                           thread_ts=request.origin.thread_ts or None, ttl_s=RECORD_TTL_S)


async def _redraw(fx: Remediation, request: FixRequest, outcome: str) -> None:
    if request.message_ts:
        text, blocks = messages.decided_message(request.label, request.fix_plan(), request.requester, outcome)
        await fx.rt.slack.update_message(request.origin.channel, request.message_ts, text, blocks=blocks)


async def _record(fx: Remediation, request: FixRequest, stage: str, actor: str, data: dict[str, Any]) -> None:
    """The audit trail: a log line for every stage (the only one outside an incident, beside the request record,
    kept a day), and the incident's timeline when there is one."""
    log.info("fix %s %s by %s: %s%s", request.id, stage, escape_controls(actor), escape_controls(request.label),
             f" ({escape_controls(str(data['message']))})" if "message" in data else "")
    if request.origin.incident_id:
        await fx.ctx.timeline.record(request.origin.incident_id, EntryKind.REMEDIATION,
                                     entry_id=f"remediation:{request.id}:{stage}", actor=actor, text=request.label,
                                     data={"request": request.id, "fix": request.plan["action"], "stage": stage,
                                           "requester": request.requester, **data})


def job_handlers(rt: Runtime) -> dict[str, Any]:
    async def handler(job: Job) -> None:
        await apply_job(remediation_of(rt), job)

    return {APPLY_JOB: handler}
