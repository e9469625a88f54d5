"""Reading a Pulumi stack's state straight from its backend, without the Pulumi CLI.

Self-managed ("DIY") backends, in the layout the CLI writes under the bucket or directory root:

    .pulumi/stacks/<project>/<stack>.json[.gz]              the checkpoint (the newest variant wins)
    .pulumi/locks/organization/<project>/<stack>/<id>.json  one file per process holding the lock
    .pulumi/history/<project>/<stack>/<stack>-<unixnano>.history.json[.gz]   one record per finished operation

A stack named without a project (`stack`) is read in the legacy layout (`stacks/<stack>.json`,
`locks/<stack>/`, `history/<stack>/`). S3 goes through the checks' AwsClients (s3:ListBucket, s3:GetObject); a
`file://` backend through the filesystem, off the event loop. Pulumi Cloud through its REST API: the latest updates
(an `in-progress` one stands for the lock) and the stack export (the checkpoint).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from checks.iac.pulumi_state import Lock, StackState, StateReadError, Update, decode, deployment_of, parse_lock, \
    parse_update
from checks.registry import CheckContext
from checks.services import PulumiSpec

HISTORY_WINDOW = timedelta(days=30)  # history older than this is not listed (a stack can have thousands)
HISTORY_READ = 10  # update records read per stack, newest first
MAX_LISTED = 5000  # keys listed under one prefix at most
CLOUD_TIMEOUT_S = 10.0
_HISTORY_FILE = re.compile(r"-(\d{19})\.history\.json(\.gz|\.zst)?$")


@dataclass(frozen=True)
class Entry:
    key: str  # relative to the backend root, `/`-separated
    modified: datetime


class ObjectStore(Protocol):
    """The two operations a DIY backend needs: list keys under a prefix, read one key."""

    def describe(self, key: str) -> str: ...
    async def list(self, prefix: str, start_after: str = "") -> list[Entry]: ...
    async def read(self, key: str) -> bytes | None: ...


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self, key: str) -> str:
        return str(self.root / key)

    async def list(self, prefix: str, start_after: str = "") -> list[Entry]:
        return await asyncio.to_thread(self._list, prefix, start_after)

    def _list(self, prefix: str, start_after: str) -> list[Entry]:
        folder = (self.root / prefix).parent if not prefix.endswith("/") else self.root / prefix
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.iterdir())[:MAX_LISTED]:
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and key > start_after:
                found.append(Entry(key, datetime.fromtimestamp(path.stat().st_mtime, UTC)))
        return found

    async def read(self, key: str) -> bytes | None:
        path = self.root / key
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateReadError(f"Cannot read {path}: {exc.strerror}") from exc


class S3Store:
    def __init__(self, ctx: CheckContext, region: str, bucket: str, prefix: str) -> None:
        assert ctx.aws is not None
        self.aws, self.region, self.bucket, self.prefix = ctx.aws, region, bucket, prefix

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    async def list(self, prefix: str, start_after: str = "") -> list[Entry]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix,
                                  "PaginationConfig": {"MaxItems": MAX_LISTED}}
        if start_after:
            params["StartAfter"] = self.prefix + start_after
        objects = await self.aws.paginate("s3", self.region, "list_objects_v2", "Contents", **params)
        return [Entry(o["Key"][len(self.prefix):], o["LastModified"]) for o in objects]

    async def read(self, key: str) -> bytes | None:
        return await self.aws.read_object(self.region, self.bucket, self.prefix + key)


def diy_store(ctx: CheckContext, spec: PulumiSpec) -> ObjectStore:
    parts = urlsplit(spec.backend)
    if spec.kind == "file":
        return FileStore(Path(parts.path).expanduser())
    default_region = ctx.service.aws.region if ctx.service.aws else "us-east-1"
    prefix = parts.path.strip("/")
    return S3Store(ctx, spec.region or default_region, parts.netloc, f"{prefix}/" if prefix else "")


# --- DIY -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiyPaths:
    stack: str
    checkpoint: str  # without the compression suffix
    locks: str
    history: str

    @classmethod
    def of(cls, ref: str) -> DiyPaths:
        project, _, stack = ref.rpartition("/")
        project = project.split("/")[-1]  # `organization/project/stack`: the org is always the literal one
        if not project:
            return cls(stack, f".pulumi/stacks/{stack}.json", f".pulumi/locks/{stack}/", f".pulumi/history/{stack}/")
        return cls(stack, f".pulumi/stacks/{project}/{stack}.json", f".pulumi/locks/organization/{project}/{stack}/",
                   f".pulumi/history/{project}/{stack}/")


async def read_diy_stack(store: ObjectStore, ref: str, now: datetime) -> StackState:
    paths = DiyPaths.of(ref)
    checkpoint, locks, updates = await asyncio.gather(
        _checkpoint(store, paths), _locks(store, paths), _updates(store, paths, now))
    where = store.describe(paths.checkpoint)
    if checkpoint is None:
        return StackState(ref, where, None)
    return StackState(ref, where, deployment_of(checkpoint), locks, updates)


async def _checkpoint(store: ObjectStore, paths: DiyPaths) -> Any:
    variants = {paths.checkpoint + suffix for suffix in ("", ".gz", ".zst")}
    found = [e for e in await store.list(paths.checkpoint) if e.key in variants]
    if not found:
        return None
    newest = max(found, key=lambda e: e.modified)  # the CLI reads the most recently written variant too
    raw = await store.read(newest.key)
    return None if raw is None else decode(raw, newest.key)


async def _locks(store: ObjectStore, paths: DiyPaths) -> list[Lock]:
    entries = [e for e in await store.list(paths.locks) if e.key.endswith(".json")]
    contents = await asyncio.gather(*(store.read(e.key) for e in entries))
    return [parse_lock(raw, store.describe(e.key), e.modified)
            for e, raw in zip(entries, contents, strict=True) if raw is not None]


async def _updates(store: ObjectStore, paths: DiyPaths, now: datetime) -> list[Update]:
    """The newest update records of the last 30 days; file names carry the time, so older ones are not listed."""
    since_ns = int((now - HISTORY_WINDOW).timestamp()) * 10**9
    entries = await store.list(paths.history, start_after=f"{paths.history}{paths.stack}-{since_ns:019d}")
    records = sorted(e.key for e in entries if _HISTORY_FILE.search(e.key))[-HISTORY_READ:]
    contents = await asyncio.gather(*(store.read(key) for key in records))
    return sorted((parse_update(decode(raw, key)) for key, raw in zip(records, contents, strict=True) if raw),
                  key=lambda u: u.started)


# --- Pulumi Cloud --------------------------------------------------------------------------------------------


async def read_cloud_stack(ctx: CheckContext, spec: PulumiSpec, ref: str) -> StackState:
    token = ctx.env.get(spec.token_env or "")
    if not token:
        raise StateReadError(f"No Pulumi access token: set {spec.token_env} in the bot's environment")
    base = f"{spec.backend.rstrip('/')}/api/stacks/{'/'.join(quote(p, safe='') for p in ref.split('/'))}"
    headers = {"Authorization": f"token {token}", "Accept": "application/vnd.pulumi+8"}
    listing = await _cloud_get(ctx, f"{base}/updates", headers,
                               {"output-type": "service", "pageSize": str(HISTORY_READ), "page": "1"})
    if listing is None:
        return StackState(ref, base, None, cloud=True)
    exported = await _cloud_get(ctx, f"{base}/export", headers, {})
    updates = sorted((parse_update(u) for u in listing.get("updates") or []), key=lambda u: u.started)
    running = [Lock(f"update {u.version or '?'}", u.started, u.by or "?") for u in updates
               if u.result in ("in-progress", "not-started")]
    done = [u for u in updates if u.result not in ("in-progress", "not-started")]
    return StackState(ref, base, deployment_of(exported or {}), running, done, cloud=True)


async def _cloud_get(ctx: CheckContext, url: str, headers: dict[str, str], params: dict[str, str]) -> Any:
    """One GET; None for 404 (no such stack); StateReadError with a sentence for everything else that fails."""
    try:
        response = await ctx.http.get(url, headers=headers, params=params, timeout=CLOUD_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise StateReadError(f"Pulumi Cloud did not answer ({type(exc).__name__})") from exc
    if response.status_code == 404:
        return None
    if response.status_code in (401, 403):
        raise StateReadError(f"Pulumi Cloud refused the token ({response.status_code}): check that the access "
                             "token can read this stack")
    if response.status_code != 200:
        raise StateReadError(f"Pulumi Cloud answered {response.status_code} for {urlsplit(url).path}")
    try:
        return response.json()
    except ValueError as exc:
        raise StateReadError("Pulumi Cloud answered with something that is not JSON") from exc
