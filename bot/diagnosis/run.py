"""A diagnosis run, from `/diagnose api` to the verdict in the channel, as durable jobs on the queue.

    diagnose.start   post the parent message, queue one diagnose.check per planned check, arm the deadline
    diagnose.check   run one check (once), store its result, reply in the thread, nudge the parent (and share
                     its chart when the verdict was drawn before its reply got out)
    diagnose.refresh redraw the parent from the stored state (debounced: at most one pending per run)
    diagnose.finish  when all results are in or the deadline passed: verdict, what changed since the previous run
                     of the service in the same incident or channel (bot/diagnosis/history.py), final parent,
                     the charts of replied-to metric checks (marked with the run's deploy and first error),
                     grouped reply

Jobs may run more than once (a worker dies, a job is retried), so every effect is guarded: a check's result is
stored with HSETNX and reused, every post goes through `post_once` (a worker killed between Slack's answer and
the record does not post twice), the parent is redrawn from state.
Redis keys live under `<namespace>:diag:` and expire a day after the run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.exceptions import RedisError

from bot.diagnosis import history
from bot.diagnosis.render import slack as render
from bot.queue import Job
from bot.runtime import Runtime
from bot.slack.posts import post_once
from checks.model import CheckResult, Status
from checks.registry import CheckContext
from checks.runner import PlannedCheck, plan, run_check
from checks.schema import dump_json, parse_json
from checks.verdict import build_verdict

log = logging.getLogger(__name__)

GROUP_AFTER = 10  # with more checks than this, unremarkable results share one reply at the end
RUN_TTL_S = 86400
DEADLINE_GRACE_S = 2.0


class DiagnosisStarted(msgspec.Struct, frozen=True):
    run_id: str
    joined: bool  # an identical run was already going in this channel: no second probe
    planned: int
    parent_ts: str | None = None


def _run_key(rt: Runtime, run_id: str, part: str = "") -> str:
    return rt.key("diag", "run", run_id, *([part] if part else []))


def _active_key(rt: Runtime, channel: str, service: str) -> str:
    return rt.queue.key("diag", "active", channel, service)  # set by the start job's enqueue: the queue's slot


async def request_diagnosis(rt: Runtime, service: str, channel: str, user: str, *,
                            incident_id: str | None = None) -> DiagnosisStarted:
    """Queue a run (or join the one already going for this service in this channel)."""
    spec = rt.services().services[service]
    planned = plan(spec)
    run_id = uuid.uuid4().hex[:12]
    deadline_s = rt.settings.diagnose_deadline_s
    now = time.time()
    state = {
        "service": service, "channel": channel, "user": user, "total": len(planned), "started": now,
        "deadline": now + deadline_s, "incident_id": incident_id or "",
        "plan": json.dumps([[p.check, p.index, p.target] for p in planned]),
    }
    # One round trip on the ack path: claim "the run of this service in this channel" and queue its start job
    # together. The run's state rides in the start job, which writes it before anything else reads it.
    existing = await rt.queue.enqueue_claimed(
        _active_key(rt, channel, service), run_id, deadline_s + 120,
        "diagnose.start", {"run": run_id, "state": state}, job_id=f"{run_id}:start")
    if existing is None:
        raise RuntimeError(f"diagnosis {run_id}: its start job id was already taken")  # fresh ids: cannot be
    if existing != run_id:
        parent_ts = await rt.redis.hget(_run_key(rt, existing), "parent_ts")  # None until the parent is posted
        return DiagnosisStarted(existing, True, len(planned), parent_ts.decode() if parent_ts else None)
    return DiagnosisStarted(run_id, False, len(planned))


async def run_state(rt: Runtime, run_id: str) -> dict[str, str]:
    """A run's state (service, channel, incident_id, …); {} once it expired."""
    return await _state(rt, run_id)


async def _state(rt: Runtime, run_id: str) -> dict[str, str]:
    raw = await rt.redis.hgetall(_run_key(rt, run_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def _plan(state: dict[str, str]) -> list[PlannedCheck]:
    return [PlannedCheck(c, i, t) for c, i, t in json.loads(state["plan"])]


async def run_results(rt: Runtime, run_id: str) -> dict[str, CheckResult]:
    """The results stored so far for a run, by planned-check key (`http.health#0`)."""
    raw = await rt.redis.hgetall(_run_key(rt, run_id, "results"))
    return {k.decode(): parse_json(CheckResult, v) for k, v in raw.items()}


async def start_job(rt: Runtime, job: Job) -> None:
    run_id = job.payload["run"]
    if "state" in job.payload and not await rt.redis.exists(_run_key(rt, run_id)):
        first = dict(job.payload["state"])
        for hook in rt.hooks.diagnosis_starting:
            await _starting(hook, rt, run_id, first)
        async with rt.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_run_key(rt, run_id), mapping=first)
            pipe.expire(_run_key(rt, run_id), RUN_TTL_S)
            await pipe.execute()
    state = await _state(rt, run_id)
    if not state:
        log.warning("diagnosis %s vanished before it started", run_id)
        return
    # The parent first: every reply and the verdict hang off it. (Posting it while the checks already ran saved a
    # Slack round trip, but left replies and verdicts waiting on a post that Slack may pace or refuse for long.)
    if not state.get("parent_ts"):
        text, blocks = render.progress_message(state["service"], 0, int(state["total"]), {})
        parent_ts = await post_once(rt.redis, rt.slack, _run_key(rt, run_id, "replies"), "_parent",
                                    state["channel"], text, blocks=blocks, ttl_s=RUN_TTL_S)
        await rt.redis.hset(_run_key(rt, run_id), "parent_ts", parent_ts)
    # All at once: the queue sends enqueues made together in one round trip, and the checks start sooner.
    await asyncio.gather(
        *(rt.queue.enqueue("diagnose.check", {"run": run_id, "check": planned.check, "index": planned.index,
                                              "target": planned.target}, job_id=f"{run_id}:{planned.key}")
          for planned in _plan(state)),
        rt.queue.enqueue("diagnose.finish", {"run": run_id}, job_id=f"{run_id}:deadline",
                         run_at=float(state["deadline"]) + DEADLINE_GRACE_S))
    if not state["total"] or state["total"] == "0":
        await rt.queue.enqueue("diagnose.finish", {"run": run_id}, job_id=f"{run_id}:finish")


async def _starting(hook: Any, rt: Runtime, run_id: str, state: dict[str, str]) -> None:
    """A hook's failure (an incident's lock held too long) is logged, never the run's: the responder was told it is
    queued, and a failed start would leave its channel claimed, with no thread, until the claim expires. Redis
    failing is the exception: the worker runs the whole job again on the new primary (hooks are idempotent)."""
    try:
        await hook(rt, run_id, state)
    except RedisError:
        raise
    except Exception:
        log.exception("diagnosis %s: a start hook failed; the run goes on without it", run_id)


def _written(result: CheckResult) -> str:
    """The result as stored; evidence no JSON can hold (a check's bug) is dropped and said, so the run still ends
    with a verdict instead of the job failing on every delivery."""
    try:
        return dump_json(result)
    except (TypeError, ValueError, NotImplementedError) as exc:
        log.warning("%s: its evidence cannot be stored (%s); kept without it", result.check, type(exc).__name__)
        return dump_json(msgspec.structs.replace(result, evidence={"unstored": "this evidence could not be stored"}))


async def check_job(rt: Runtime, job: Job) -> None:
    run_id, payload = job.payload["run"], job.payload
    planned = PlannedCheck(payload["check"], int(payload["index"]), payload["target"])
    state = await _state(rt, run_id)
    if not state or state.get("finished"):
        return  # the deadline already closed this run; its result would arrive too late to matter
    results_key = _run_key(rt, run_id, "results")
    stored = await rt.redis.hget(results_key, planned.key)
    if stored is None:
        result = await run_check(planned, _context(rt, run_id, state))
        if not rt.settings.remediation_enabled:
            result.fixes = []  # the one gate: an offer that is not stored is shown nowhere
        if await rt.redis.hsetnx(results_key, planned.key, _written(result)):
            await rt.redis.expire(results_key, RUN_TTL_S)
        stored = await rt.redis.hget(results_key, planned.key)
    result = parse_json(CheckResult, stored)
    total = int(state["total"])
    # Nudge the parent before replying: the reply waits for Slack's per-channel pace, the verdict need not.
    if await rt.redis.hlen(results_key) >= total:
        await rt.queue.enqueue("diagnose.finish", {"run": run_id}, job_id=f"{run_id}:finish")
    else:
        await rt.queue.enqueue("diagnose.refresh", {"run": run_id}, job_id=f"{run_id}:refresh",
                               delay_s=rt.settings.diagnose_update_interval_s)
    if total <= GROUP_AFTER or result.status.is_problem:
        await _reply_once(rt, run_id, state, planned.key, *render.result_message(result, run_id))
        # The verdict's charts pass by a reply not yet posted; such a reply shares its own chart.
        if await rt.redis.hexists(_run_key(rt, run_id), "verdict"):
            await _share_charts(rt, run_id, state, [planned.key])


def _context(rt: Runtime, run_id: str, state: dict[str, str]) -> CheckContext:
    import os

    service = rt.services().services[state["service"]]
    remaining = float(state["deadline"]) - time.time()
    return CheckContext(service_name=state["service"], service=service, now=datetime.now(UTC), http=rt.probe_http,
                        aws=rt.aws_for_run(run_id) if service.needs_aws else None,
                        deadline=time.monotonic() + remaining, env=dict(os.environ),
                        previous=functools.partial(history.previous_sample, rt, state))


async def _reply_once(rt: Runtime, run_id: str, state: dict[str, str], key: str, text: str,
                      blocks: list[dict]) -> None:
    await post_once(rt.redis, rt.slack, _run_key(rt, run_id, "replies"), key, state["channel"], text, blocks=blocks,
                    thread_ts=state["parent_ts"], ttl_s=RUN_TTL_S)


async def _share_charts(rt: Runtime, run_id: str, state: dict[str, str], keys: list[str],
                        results: dict[str, CheckResult] | None = None) -> None:
    """Charts once every result is in, so each marks the deploy and first error the run's other checks found."""
    if not rt.settings.diagnose_charts:
        return
    from bot.diagnosis import charts  # the worker's: a process that only answers Slack never draws one

    found = results if results is not None else await run_results(rt, run_id)
    await charts.attach_run_charts(rt, _run_key(rt, run_id, "replies"), keys, state["channel"], state["parent_ts"],
                                   found, RUN_TTL_S)


async def refresh_job(rt: Runtime, job: Job) -> None:
    await redraw_parent(rt, job.payload["run"])


async def redraw_parent(rt: Runtime, run_id: str) -> None:
    state = await _state(rt, run_id)
    if not state.get("parent_ts"):
        return
    if state.get("verdict"):
        text, blocks = _final_message(state)
        await rt.slack.update_message(state["channel"], state["parent_ts"], text, blocks=blocks)
        return
    results = await run_results(rt, run_id)
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    text, blocks = render.progress_message(state["service"], len(results), int(state["total"]), counts)
    if not await rt.slack.redraw_if_free(state["channel"], state["parent_ts"], text, blocks=blocks):
        return  # Slack's chat.update budget is spent for now: the next redraw, or the verdict's, shows the count
    # A progress update held back by rate limiting can land after the verdict was drawn; whoever drew progress
    # last makes sure the verdict is what stays on screen.
    if await rt.redis.hexists(_run_key(rt, run_id), "verdict"):
        await redraw_parent(rt, run_id)


def _final_message(state: dict[str, str]) -> tuple[str, list[dict]]:
    from checks.model import Verdict

    verdict = parse_json(Verdict, state["verdict"])
    duration = float(state.get("finished_at", state["started"])) - float(state["started"])
    return render.verdict_message(verdict, duration_s=duration, diff=history.stored_diff(state))


async def finish_job(rt: Runtime, job: Job) -> None:
    run_id = job.payload["run"]
    state = await _state(rt, run_id)
    if not state or state.get("finished"):
        return
    results_key = _run_key(rt, run_id, "results")
    planned = _plan(state)
    if await rt.redis.hlen(results_key) < len(planned):
        if time.time() < float(state["deadline"]):
            return  # an early nudge; the deadline job will come back
        for item in planned:  # whatever has not reported by the deadline is told as such, not dropped
            late = CheckResult(check=item.check, target=item.target, status=Status.error,
                               summary="The check did not finish before the diagnosis deadline.",
                               hint="Rerun /diagnose; if it repeats, the target or the AWS API is hanging.")
            await rt.redis.hsetnx(results_key, item.key, dump_json(late))
    results = await run_results(rt, run_id)
    ordered = [results[p.key] for p in planned if p.key in results]
    verdict = build_verdict(state["service"], ordered)
    state["finished_at"] = str(time.time())
    diff = await history.diff_and_remember(rt, run_id, state, ordered, _run_key(rt, run_id))
    state["diff"] = diff.to_json() if diff else ""  # the hooks see it too
    await rt.redis.hset(_run_key(rt, run_id),
                        mapping={"verdict": dump_json(verdict), "finished_at": state["finished_at"]})
    await redraw_parent(rt, run_id)
    await _share_charts(rt, run_id, state, [p.key for p in planned], results)
    if len(planned) > GROUP_AFTER:
        quiet = [r for r in ordered if not r.status.is_problem]
        if quiet:
            await _reply_once(rt, run_id, state, "_grouped", *render.grouped_message(quiet))
    await rt.redis.hset(_run_key(rt, run_id), "finished", "1")
    await _release_active(rt, state, run_id)
    await rt.queue.cancel(f"{run_id}:deadline")
    # Two finish jobs (the early one and the deadline's) can both get here; the hooks run for one of them.
    hooks_key = _run_key(rt, run_id, "hooks")
    if await rt.redis.set(hooks_key, 1, nx=True, ex=RUN_TTL_S):
        try:
            for hook in rt.hooks.diagnosis_finished:
                await hook(rt, run_id, state, verdict)
        except Exception:
            await rt.redis.delete(hooks_key)  # the job's retry runs them again rather than never
            raise


async def _release_active(rt: Runtime, state: dict[str, str], run_id: str) -> None:
    key = _active_key(rt, state["channel"], state["service"])
    current = await rt.redis.get(key)
    if current is not None and current.decode() == run_id:
        await rt.redis.delete(key)


def job_handlers(rt: Runtime) -> dict[str, Any]:
    def bind(fn: Any) -> Any:
        async def handler(job: Job) -> None:
            await fn(rt, job)

        return handler

    return {"diagnose.start": bind(start_job), "diagnose.check": bind(check_job),
            "diagnose.refresh": bind(refresh_job), "diagnose.finish": bind(finish_job)}
