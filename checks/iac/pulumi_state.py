"""A Pulumi stack's state as read from its backend, and what it says is wrong. Pure data: no I/O here.

The shapes are the ones the CLI writes (pulumi/pulumi `sdk/go/common/apitype`, `pkg/backend/diy`):
- a checkpoint `{"version": 3, "checkpoint": {"stack": …, "latest": <deployment>}}` (Pulumi Cloud's export is
  `{"version": 3, "deployment": <deployment>}`); the deployment holds `resources` and `pending_operations`;
- a lock `{"pid": 1234, "username": "ci", "hostname": "runner-1", "timestamp": "2026-…Z"}`;
- an update record (`UpdateInfo`): `kind`, `startTime`/`endTime` (Unix seconds), `result` (`succeeded` |
  `failed` | `in-progress`), `environment` (`git.head`, `git.author`…), `resourceChanges`.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from checks.model import CheckResult, Problem, Status, fold

# An update that has held the lock this long has most likely died: CloudFront or RDS changes take tens of
# minutes, very few updates take an hour.
STALE_AFTER = timedelta(minutes=60)
LISTED = 5  # resources named in a sentence; the evidence has them all


class StateReadError(Exception):
    """The backend could not be read; the message says what to do."""


@dataclass(frozen=True)
class Lock:
    where: str  # the lock file, or the running update on Pulumi Cloud
    since: datetime | None
    holder: str  # "ci@runner-1 (pid 4242)"

    def as_evidence(self, now: datetime) -> dict[str, Any]:
        return {"lock": self.where, "held_by": self.holder, "since": _iso(self.since), "minutes": _age(self, now)}


@dataclass(frozen=True)
class Update:
    kind: str  # update | preview | destroy | refresh | import …
    result: str  # succeeded | failed | in-progress
    started: datetime
    ended: datetime | None
    by: str = ""
    commit: str = ""
    version: int | None = None
    changes: dict[str, int] = field(default_factory=dict)

    def as_evidence(self) -> dict[str, Any]:
        return {"kind": self.kind, "result": self.result, "started": _iso(self.started), "ended": _iso(self.ended),
                "by": self.by, "commit": self.commit, "version": self.version,
                "changes": ", ".join(f"{op} {n}" for op, n in sorted(self.changes.items()) if op != "same")}


@dataclass(frozen=True)
class StackState:
    ref: str  # project/stack as the services file names it
    where: str  # where the checkpoint lives (s3://…, a path, an API URL)
    deployment: dict[str, Any] | None  # None: the backend has no such stack
    locks: list[Lock] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)  # oldest first
    cloud: bool = False  # Pulumi Cloud: a "lock" is a running update, which `pulumi cancel` cancels


# --- parsing -------------------------------------------------------------------------------------------------


def decode(raw: bytes, name: str) -> Any:
    """JSON from a `.json` or `.json.gz` file; `.zst` needs a decompressor this bot does not ship."""
    if name.endswith(".zst"):
        raise StateReadError(f"{name} is zstd-compressed; set PULUMI_DIY_BACKEND_GZIP=true (or no compression) "
                             "for the stacks the bot reads")
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise StateReadError(f"{name} is not valid JSON: {exc}") from exc


def deployment_of(document: Any) -> dict[str, Any]:
    """The deployment inside a checkpoint file or a Pulumi Cloud export."""
    if not isinstance(document, dict):
        raise StateReadError("the checkpoint is not a JSON object")
    if isinstance(document.get("deployment"), dict):
        return document["deployment"]
    latest = (document.get("checkpoint") or {}).get("latest")
    return latest if isinstance(latest, dict) else {}  # a stack that was never updated has no `latest`


def parse_lock(raw: bytes, where: str, written: datetime | None) -> Lock:
    """A lock file; an unreadable one is still a lock (the CLI refuses to update either way)."""
    try:
        content = json.loads(raw)
    except ValueError:
        content = {}
    content = content if isinstance(content, dict) else {}
    since = _parse_time(content.get("timestamp")) or written
    who = f"{content.get('username') or '?'}@{content.get('hostname') or '?'}"
    return Lock(where, since, f"{who} (pid {content['pid']})" if content.get("pid") else who)


def parse_update(record: dict[str, Any]) -> Update:
    """An `UpdateInfo` (a DIY history file), or one entry of Pulumi Cloud's update list (`info` + extras)."""
    info = record.get("info", record)
    env = info.get("environment") or {}
    requested = record.get("requestedBy") or {}
    return Update(
        kind=str(info.get("kind", "update")),
        result=str(info.get("result", "")),
        started=_from_unix(info.get("startTime")) or datetime.fromtimestamp(0, UTC),
        ended=_from_unix(info.get("endTime")),
        by=requested.get("githubLogin") or requested.get("name") or env.get("git.author") or env.get("git.committer")
        or "",
        commit=str(env.get("git.head", ""))[:12],
        version=record.get("version") or info.get("version") or None,
        changes={str(k): int(v) for k, v in (info.get("resourceChanges") or {}).items() if isinstance(v, int)},
    )


def pending_operations(deployment: dict[str, Any]) -> list[dict[str, str]]:
    return [{"operation": str(op.get("type", "?")), **_resource_row(op.get("resource") or {})}
            for op in deployment.get("pending_operations") or []]


def failed_resources(deployment: dict[str, Any]) -> list[dict[str, str]]:
    """Resources the provider created but could not finish initialising (`initErrors`): their last update failed."""
    return [{**_resource_row(r), "error": "; ".join(str(e) for e in r["initErrors"])[:300]}
            for r in deployment.get("resources") or [] if r.get("initErrors")]


def _resource_row(resource: dict[str, Any]) -> dict[str, str]:
    urn = str(resource.get("urn", ""))
    return {"name": urn.rsplit("::", 1)[-1], "type": str(resource.get("type", "")), "id": str(resource.get("id", "")),
            "urn": urn}


# --- assessing -----------------------------------------------------------------------------------------------


def assess(state: StackState, now: datetime) -> CheckResult:
    """One result for the stack: every problem found, worst first, in one summary; the tables in evidence."""
    if state.deployment is None:
        return CheckResult(status=Status.error, summary=f"No stack {state.ref} at {state.where}.",
                           resource=state.ref, evidence={"backend": state.where},
                           hint="Check the stack name (project/stack) and the backend URL in the services file.")
    pending, failed = pending_operations(state.deployment), failed_resources(state.deployment)
    evidence = {"backend": state.where, "resources": len(state.deployment.get("resources") or []),
                "locks": [lock.as_evidence(now) for lock in state.locks], "pending_operations": pending,
                "failed_resources": failed, "updates": [u.as_evidence() for u in state.updates[-5:]]}
    return fold(_problems(state, now, pending, failed), ok=_healthy(state, now), resource=state.ref,
                evidence=evidence)


def _problems(state: StackState, now: datetime, pending: list[dict[str, str]],
              failed: list[dict[str, str]]) -> list[Problem]:
    lock = min(state.locks, key=lambda lk: lk.since or now, default=None)
    stale = lock is not None and (lock.since is None or now - lock.since > STALE_AFTER)
    problems = []
    if lock and stale:
        problems.append(_stale_lock(state, lock, now))
    elif lock:
        problems.append(Problem(Status.warn, "P3", f"An update of {state.ref} is running: {_lock_phrase(lock, now)}"
                                f"{_in_flight(pending)}.", "Wait for it to finish before deploying a fix."))
    if pending and (lock is None or stale):
        problems.append(_interrupted(state, pending))
    last = state.updates[-1] if state.updates else None
    if last and last.result == "failed":
        problems.append(_failed_update(state, last, failed))
    elif failed:
        problems.append(Problem(Status.fail, "P2", f"{_count(failed, 'resource')} of {state.ref} failed to "
                                f"initialise: {_names(failed)}.", _refresh_hint(state)))
    return problems


def _stale_lock(state: StackState, lock: Lock, now: datetime) -> Problem:
    if state.cloud:
        return Problem(Status.fail, "P2", f"An update of {state.ref} has been running {_lock_phrase(lock, now)}"
                       "; deployments queue behind it.",
                       f"If it is stuck, `pulumi cancel --stack {state.ref}` (cancelling mid-update can leave "
                       "pending operations; `pulumi refresh` afterwards).")
    return Problem(Status.fail, "P2", f"Stack {state.ref} has been locked {_lock_phrase(lock, now)}: the update "
                   "that took the lock most likely died, and every `pulumi up` fails with \"the stack is currently "
                   "locked\".",
                   f"Make sure no pulumi process of {lock.holder} still runs, then `pulumi cancel --stack "
                   f"{state.ref}` (it deletes the lock files) and `pulumi refresh --stack {state.ref}`.")


def _interrupted(state: StackState, pending: list[dict[str, str]]) -> Problem:
    ops = ", ".join(f"{p['operation']} {p['name']} ({p['type']})" for p in pending[:LISTED])
    more = f" and {len(pending) - LISTED} more" if len(pending) > LISTED else ""
    creates = " Add `--clear-pending-creates` once you know whether the creates happened (or "\
              "`--import-pending-creates <URN> <ID>` when they did)." if any(
                  p["operation"] == "creating" for p in pending) else ""
    return Problem(Status.fail, "P2", f"Stack {state.ref} has {_count(pending, 'pending operation')} left by an "
                   f"interrupted update ({ops}{more}); the next `pulumi up` fails with \"stack has pending "
                   "operations\" and those resources may be half-made.",
                   f"`pulumi refresh --stack {state.ref}` reconciles them with the cloud.{creates} Or `pulumi stack "
                   f"export --stack {state.ref} --file state.json`, empty `pending_operations`, `pulumi stack import "
                   f"--stack {state.ref} --file state.json`.")


def _failed_update(state: StackState, last: Update, failed: list[dict[str, str]]) -> Problem:
    who = f" by {last.by}" if last.by else ""
    commit = f", commit {last.commit}" if last.commit else ""
    at = last.ended or last.started
    resources = f"; resources that failed: {_names(failed)}" if failed else ""
    return Problem(Status.fail, "P2", f"The last {last.kind} of {state.ref} failed at {at:%Y-%m-%d %H:%M} UTC"
                   f"{who}{commit}{resources}.", _refresh_hint(state))


def _refresh_hint(state: StackState) -> str:
    return (f"Read the failed update's output (`pulumi stack history --stack {state.ref}`), fix the cause and "
            f"rerun `pulumi up`; `pulumi refresh --stack {state.ref}` first if resources changed outside Pulumi.")


def _healthy(state: StackState, now: datetime) -> str:
    if not state.updates:
        return f"Stack {state.ref}: not locked, no pending operations; no update recorded recently."
    last = state.updates[-1]
    hours = (now - (last.ended or last.started)).total_seconds() / 3600
    when = f"{hours:.0f} h ago" if hours >= 1 else f"{hours * 60:.0f} min ago"
    return f"Stack {state.ref}: last {last.kind} {last.result} {when}; not locked, no pending operations."


def _lock_phrase(lock: Lock, now: datetime) -> str:
    minutes = _age(lock, now)
    length = "for an unknown time" if minutes is None else (
        f"for {minutes / 60:.1f} h" if minutes >= 120 else f"for {minutes} min")
    return f"{length} by {lock.holder}"


def _in_flight(pending: list[dict[str, str]]) -> str:
    return f" ({_count(pending, 'operation')} in flight)" if pending else ""


def _age(lock: Lock, now: datetime) -> int | None:
    return None if lock.since is None else max(0, int((now - lock.since).total_seconds() // 60))


def _names(rows: list[dict[str, str]]) -> str:
    listed = ", ".join(f"{r['name']} ({r['type']})" for r in rows[:LISTED])
    return listed + (f" and {len(rows) - LISTED} more" if len(rows) > LISTED else "")


def _count(items: list[Any], noun: str) -> str:
    return f"1 {noun}" if len(items) == 1 else f"{len(items)} {noun}s"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)  # Go's RFC 3339 with nanoseconds: 3.11 drops the extra digits
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _from_unix(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) and value > 0 else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
