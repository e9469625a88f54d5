"""A diagnosis run, from `/diagnose api` to the verdict in the channel, as durable jobs on the queue.

    diagnose.start   queue one diagnose.check per planned check, arm the deadline, post the parent message
    diagnose.check   run one check (once), store its result, reply in the thread, nudge the parent
    diagnose.refresh redraw the parent from the stored state (debounced: at most one pending per run)
    diagnose.finish  when all results are in or the deadline passed: verdict, grouped reply, final parent

The checks run while the parent is being posted; a reply or verdict that is ready first waits for the parent.
When Slack refuses the parent for good (channel gone), the run is marked abandoned and its jobs stand down.

Jobs may run more than once (a worker dies, a job is retried), so every effect is guarded: a check's result is
stored with HSETNX and reused, a reply's ts is recorded and not posted again, the parent is redrawn from state.
Redis keys live under `<namespace>:diag:` and expire a day after the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.posts import post_once, recorded_post
from bot.queue import Job, Retry
from bot.render import slack as render
from bot.runtime import Runtime
from bot.slack_client import SlackError
from checks.model import CheckResult, Status
from checks.registry import CheckContext
from checks.runner import PlannedCheck, plan, run_check
from checks.verdict import build_verdict

log = logging.getLogger(__name__)

GROUP_AFTER = 10  # with more checks than this, unremarkable results share one reply at the end
RUN_TTL_S = 86400
DEADLINE_GRACE_S = 2.0
PARENT_WAIT_S = 5.0  # how long a reply or the verdict waits in its job for the parent message to be posted


@dataclass(frozen=True)
class DiagnosisStarted:
    run_id: str
    joined: bool  # an identical run was already going in this channel: no second probe
    planned: int
    parent_ts: str | None = None


def _run_key(rt: Runtime, run_id: str, part: str = "") -> str:
    return rt.key("diag", "run", run_id, *([part] if part else []))


def _active_key(rt: Runtime, channel: str, service: str) -> str:
    return rt.key("diag", "active", channel, service)


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


async def _state(rt: Runtime, run_id: str) -> dict[str, str]:
    raw = await rt.redis.hgetall(_run_key(rt, run_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def _plan(state: dict[str, str]) -> list[PlannedCheck]:
    return [PlannedCheck(c, i, t) for c, i, t in json.loads(state["plan"])]


async def run_results(rt: Runtime, run_id: str) -> dict[str, CheckResult]:
    """The results stored so far for a run, by planned-check key (`http.health#0`)."""
    raw = await rt.redis.hgetall(_run_key(rt, run_id, "results"))
    return {k.decode(): CheckResult.model_validate_json(v) for k, v in raw.items()}


async def start_job(rt: Runtime, job: Job) -> None:
    run_id = job.payload["run"]
    if "state" in job.payload and not await rt.redis.exists(_run_key(rt, run_id)):
        async with rt.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_run_key(rt, run_id), mapping=job.payload["state"])
            pipe.expire(_run_key(rt, run_id), RUN_TTL_S)
            await pipe.execute()
    state = await _state(rt, run_id)
    if not state or state.get("abandoned"):
        log.warning("diagnosis %s vanished or was abandoned before it started", run_id)
        return
    # The checks first, all in one round trip, and the parent message is posted while they run: a check takes
    # longer than a Slack post (100-300 ms on Slack itself), so no diagnosis waits for the post. Whatever needs
    # the parent (a threaded reply, the verdict) waits for it in `_parent_ts`. Once queued they are not queued
    # again when this job is retried (a failed post): their ids are free again once they have started.
    if not state.get("checks_queued"):
        await asyncio.gather(
            *(rt.queue.enqueue("diagnose.check", {"run": run_id, "check": planned.check, "index": planned.index,
                                                  "target": planned.target}, job_id=f"{run_id}:{planned.key}")
              for planned in _plan(state)),
            rt.queue.enqueue("diagnose.finish", {"run": run_id}, job_id=f"{run_id}:deadline",
                             run_at=float(state["deadline"]) + DEADLINE_GRACE_S))
        if not state["total"] or state["total"] == "0":
            await rt.queue.enqueue("diagnose.finish", {"run": run_id}, job_id=f"{run_id}:finish")
        await rt.redis.hset(_run_key(rt, run_id), "checks_queued", "1")
    if not state.get("parent_ts"):
        text, blocks = render.progress_message(state["service"], 0, int(state["total"]), {})
        try:
            parent_ts = await post_once(rt.redis, rt.slack, _run_key(rt, run_id, "replies"), "_parent",
                                        state["channel"], text, blocks=blocks, ttl_s=RUN_TTL_S)
        except SlackError as exc:
            if exc.permanent:  # the channel is gone or closed to us: the run's other jobs stand down
                await _abandon(rt, run_id, state, str(exc))
            raise
        await rt.redis.hset(_run_key(rt, run_id), "parent_ts", parent_ts)
        # Checks that finished during the post could not draw their progress on it.
        await rt.queue.enqueue("diagnose.refresh", {"run": run_id}, job_id=f"{run_id}:refresh")


async def _parent_ts(rt: Runtime, run_id: str, state: dict[str, str]) -> str | None:
    """The parent message's ts, once the start job has posted it; None when the run was abandoned. A job that
    gets here first (a check that failed fast) waits a little, then asks the queue to come back later."""
    if state.get("parent_ts"):
        return state["parent_ts"]
    waited_until = time.monotonic() + PARENT_WAIT_S
    while True:
        parent_ts, abandoned = await rt.redis.hmget(_run_key(rt, run_id), ["parent_ts", "abandoned"])
        if parent_ts or abandoned:
            return parent_ts.decode() if parent_ts else None
        if time.monotonic() >= waited_until:
            raise Retry(f"diagnosis {run_id}: the parent message is not posted yet")
        await asyncio.sleep(0.05)


async def _abandon(rt: Runtime, run_id: str, state: dict[str, str], reason: str) -> None:
    log.warning("diagnosis %s abandoned: %s", run_id, reason)
    await rt.redis.hset(_run_key(rt, run_id), "abandoned", reason)
    await _release_active(rt, state, run_id)
    await rt.queue.cancel(f"{run_id}:deadline")


async def check_job(rt: Runtime, job: Job) -> None:
    run_id, payload = job.payload["run"], job.payload
    planned = PlannedCheck(payload["check"], int(payload["index"]), payload["target"])
    state = await _state(rt, run_id)
    if not state or state.get("finished") or state.get("abandoned"):
        return  # the deadline already closed this run (its result would come too late), or Slack refused it
    results_key = _run_key(rt, run_id, "results")
    stored = await rt.redis.hget(results_key, planned.key)
    if stored is None:
        result = await run_check(planned, _context(rt, run_id, state))
        if await rt.redis.hsetnx(results_key, planned.key, result.model_dump_json()):
            await rt.redis.expire(results_key, RUN_TTL_S)
        stored = await rt.redis.hget(results_key, planned.key)
    result = CheckResult.model_validate_json(stored)
    total = int(state["total"])
    # Nudge the parent before replying: the reply waits for Slack's per-channel pace, the verdict need not.
    if await rt.redis.hlen(results_key) >= total:
        await rt.queue.enqueue("diagnose.finish", {"run": run_id}, job_id=f"{run_id}:finish")
    else:
        await rt.queue.enqueue("diagnose.refresh", {"run": run_id}, job_id=f"{run_id}:refresh",
                               delay_s=rt.settings.diagnose_update_interval_s)
    if total <= GROUP_AFTER or result.status.is_problem:
        await _reply_once(rt, run_id, state, planned.key, *render.result_message(result))


def _context(rt: Runtime, run_id: str, state: dict[str, str]) -> CheckContext:
    import os

    service = rt.services().services[state["service"]]
    remaining = float(state["deadline"]) - time.time()
    return CheckContext(service_name=state["service"], service=service, now=datetime.now(UTC), http=rt.probe_http,
                        aws=rt.aws_for_run(run_id) if service.aws else None, deadline=time.monotonic() + remaining,
                        env=dict(os.environ))


async def _reply_once(rt: Runtime, run_id: str, state: dict[str, str], key: str, text: str,
                      blocks: list[dict]) -> None:
    replies_key = _run_key(rt, run_id, "replies")
    if await recorded_post(rt.redis, replies_key, key):
        return  # posted already; no need to wait for the parent
    parent_ts = await _parent_ts(rt, run_id, state)
    if parent_ts is not None:
        await post_once(rt.redis, rt.slack, replies_key, key, state["channel"], text, blocks=blocks,
                        thread_ts=parent_ts, ttl_s=RUN_TTL_S)


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
    await rt.slack.update_message(state["channel"], state["parent_ts"], text, blocks=blocks)
    # A progress update held back by rate limiting can land after the verdict was drawn; whoever drew progress
    # last makes sure the verdict is what stays on screen.
    if await rt.redis.hexists(_run_key(rt, run_id), "verdict"):
        await redraw_parent(rt, run_id)


def _final_message(state: dict[str, str]) -> tuple[str, list[dict]]:
    from checks.model import Verdict

    verdict = Verdict.model_validate_json(state["verdict"])
    duration = float(state.get("finished_at", state["started"])) - float(state["started"])
    return render.verdict_message(verdict, duration_s=duration)


async def finish_job(rt: Runtime, job: Job) -> None:
    run_id = job.payload["run"]
    state = await _state(rt, run_id)
    if not state or state.get("finished") or state.get("abandoned"):
        return
    parent_ts = await _parent_ts(rt, run_id, state)  # the verdict is drawn on it
    if parent_ts is None:
        return
    state["parent_ts"] = parent_ts
    results_key = _run_key(rt, run_id, "results")
    planned = _plan(state)
    if await rt.redis.hlen(results_key) < len(planned):
        if time.time() < float(state["deadline"]):
            return  # an early nudge; the deadline job will come back
        for item in planned:  # whatever has not reported by the deadline is told as such, not dropped
            late = CheckResult(check=item.check, target=item.target, status=Status.error,
                               summary="The check did not finish before the diagnosis deadline.",
                               hint="Rerun /diagnose; if it repeats, the target or the AWS API is hanging.")
            await rt.redis.hsetnx(results_key, item.key, late.model_dump_json())
    results = await run_results(rt, run_id)
    ordered = [results[p.key] for p in planned if p.key in results]
    verdict = build_verdict(state["service"], ordered)
    await rt.redis.hset(_run_key(rt, run_id), mapping={"verdict": verdict.model_dump_json(), "finished_at": time.time()})
    await redraw_parent(rt, run_id)
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
            for hook in rt.extras.get("on_diagnosis_finished", []):
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
