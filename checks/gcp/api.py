"""Google Cloud REST calls for the GCP checks: Application Default Credentials, one table of operations, errors.

REST through httpx with `google-auth` for the token, not the client libraries: Cloud Run's async client, Cloud
Logging's and Monitoring's are gRPC-only and Cloud SQL has no REST client at all, so five libraries (and grpcio)
would buy less than one small table of URL templates. `OPERATIONS` is the one place that says, per call, its
path, the IAM permission it needs and the read-only role that grants it; `deploy/gcp-roles.md` lists the same.

Credentials (in this order): the key file named by `GOOGLE_APPLICATION_CREDENTIALS`, else google-auth's own ADC
search (the gcloud ADC file, then the metadata server of GCE / Cloud Run / GKE). No credentials is an `error`
result that says how to provide them, never an exception. Endpoints: `GCP_API_ENDPOINT` points every API at one
server (`http://127.0.0.1:8085`), `GCP_<API>_ENDPOINT` (`GCP_RUN_ENDPOINT`, `GCP_SQLADMIN_ENDPOINT`,
`GCP_STORAGE_ENDPOINT`, `GCP_MONITORING_ENDPOINT`, `GCP_LOGGING_ENDPOINT`, `GCP_COMPUTE_ENDPOINT`,
`GCP_CLOUDRESOURCEMANAGER_ENDPOINT`) one API; paths stay the full REST paths (`/compute/v1/...`).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from checks.model import CheckResult, Status
from checks.registry import CheckContext

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]  # Cloud SQL Admin has no read-only scope; IAM limits
CALL_TIMEOUT_S = 10.0
TOKEN_TIMEOUT_S = 10.0
ADC_TIMEOUT_S = 15.0  # google-auth pings the metadata server up to 3 × 3 s when nothing else is found
HOW_TO_AUTHENTICATE = (
    "Give the bot Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
    "run `gcloud auth application-default login` as the bot's user, or run it with an attached service account "
    "(workload identity); the read-only roles are in deploy/gcp-roles.md."
)
_ROOTS = {
    "run": "https://run.googleapis.com",
    "sqladmin": "https://sqladmin.googleapis.com",
    "storage": "https://storage.googleapis.com",
    "monitoring": "https://monitoring.googleapis.com",
    "logging": "https://logging.googleapis.com",
    "compute": "https://compute.googleapis.com",
    "cloudresourcemanager": "https://cloudresourcemanager.googleapis.com",
}


@dataclass(frozen=True)
class Operation:
    api: str
    method: str
    path: str  # template; values are percent-encoded whole (an object name's "/" included)
    permission: str
    role: str  # a predefined read-only role that grants it, or the custom role of deploy/gcp-roles.md


_CUSTOM = "custom role chatops.gcpReader"
_GLOBAL_BS = "/compute/v1/projects/{project}/global/backendServices/{name}"
_REGION_BS = "/compute/v1/projects/{project}/regions/{region}/backendServices/{name}"
OPERATIONS: dict[str, Operation] = {
    "run.services.get": Operation(
        "run", "GET", "/v2/projects/{project}/locations/{region}/services/{name}", "run.services.get",
        "roles/run.viewer"),
    "run.revisions.list": Operation(
        "run", "GET", "/v2/projects/{project}/locations/{region}/services/{name}/revisions", "run.revisions.list",
        "roles/run.viewer"),
    "sql.instances.get": Operation(
        "sqladmin", "GET", "/v1/projects/{project}/instances/{name}", "cloudsql.instances.get",
        "roles/cloudsql.viewer"),
    "storage.buckets.get": Operation(
        "storage", "GET", "/storage/v1/b/{name}", "storage.buckets.get", _CUSTOM),
    "storage.buckets.getIamPolicy": Operation(
        "storage", "GET", "/storage/v1/b/{name}/iam", "storage.buckets.getIamPolicy", _CUSTOM),
    "storage.objects.insert": Operation(
        "storage", "POST", "/upload/storage/v1/b/{name}/o", "storage.objects.create", "opt-in: write probe"),
    "storage.objects.get": Operation(
        "storage", "GET", "/storage/v1/b/{name}/o/{object}", "storage.objects.get", "opt-in: write probe"),
    "storage.objects.delete": Operation(
        "storage", "DELETE", "/storage/v1/b/{name}/o/{object}", "storage.objects.delete", "opt-in: write probe"),
    "projects.getIamPolicy": Operation(
        "cloudresourcemanager", "POST", "/v1/projects/{project}:getIamPolicy",
        "resourcemanager.projects.getIamPolicy", "roles/iam.securityReviewer"),
    "monitoring.timeSeries.list": Operation(
        "monitoring", "GET", "/v3/projects/{project}/timeSeries", "monitoring.timeSeries.list",
        "roles/monitoring.viewer"),
    "logging.entries.list": Operation(
        "logging", "POST", "/v2/entries:list", "logging.logEntries.list", "roles/logging.viewer"),
    "compute.backendServices.get": Operation(
        "compute", "GET", _GLOBAL_BS, "compute.backendServices.get", "roles/compute.viewer"),
    "compute.backendServices.getHealth": Operation(
        "compute", "POST", _GLOBAL_BS + "/getHealth", "compute.backendServices.get", "roles/compute.viewer"),
    "compute.regionBackendServices.get": Operation(
        "compute", "GET", _REGION_BS, "compute.regionBackendServices.get", "roles/compute.viewer"),
    "compute.regionBackendServices.getHealth": Operation(
        "compute", "POST", _REGION_BS + "/getHealth", "compute.regionBackendServices.get", "roles/compute.viewer"),
}


class GcpCheckError(Exception):
    """A Google Cloud call failed in a way the check reports as `error`, in a sentence that says what to do."""

    def __init__(self, sentence: str, *, status: int = 0, hint: str | None = None) -> None:
        super().__init__(sentence)
        self.status = status
        self.hint = hint


class GcpNotFound(GcpCheckError):
    """The resource named in the services file does not exist (HTTP 404)."""


class GcpDenied(GcpCheckError):
    """The bot's credentials lack the permission (HTTP 403) — or, for the write probe, the finding itself."""


# --- credentials --------------------------------------------------------------------------------------------------

_credentials: dict[str, Any] = {}  # key file path ("" for ADC) → google-auth credentials, reused across runs
_lock = threading.Lock()


def _load_credentials(key_file: str) -> Any:
    import google.auth
    import google.auth.exceptions

    try:
        if key_file:
            return _from_file(key_file)
        credentials, _ = google.auth.default(scopes=SCOPES)
    except (google.auth.exceptions.DefaultCredentialsError, OSError, ValueError) as exc:
        raise GcpCheckError(f"No usable Google Cloud credentials: {_first_line(exc)}",
                            hint=HOW_TO_AUTHENTICATE) from exc
    return credentials


def _from_file(key_file: str) -> Any:
    """A service-account key explicitly (google-auth warns against loading unchecked credential types); other
    types (a gcloud user file, workload identity federation) through google-auth's generic loader."""
    import json

    import google.auth
    from google.oauth2 import service_account

    with open(key_file, encoding="utf-8") as handle:
        kind = json.load(handle).get("type")
    if kind == "service_account":
        return service_account.Credentials.from_service_account_file(key_file, scopes=SCOPES)
    credentials, _ = google.auth.load_credentials_from_file(key_file, scopes=SCOPES)
    return credentials


def _fresh_token(key_file: str) -> str:
    """A valid access token, minted (or refreshed) at most once at a time; blocking, so run it in a thread."""
    import google.auth.exceptions

    with _lock:
        credentials = _credentials.get(key_file) or _load_credentials(key_file)
        _credentials[key_file] = credentials
        if not credentials.valid:
            try:
                credentials.refresh(_timed_request_class()())
            except (google.auth.exceptions.GoogleAuthError, OSError) as exc:
                raise GcpCheckError(f"Could not get a Google Cloud access token: {_first_line(exc)}",
                                    hint=HOW_TO_AUTHENTICATE) from exc
        return str(credentials.token)


@functools.cache
def _timed_request_class() -> type:
    import google.auth.transport.requests

    class TimedRequest(google.auth.transport.requests.Request):  # google-auth passes no timeout of its own
        def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                     timeout: Any = None, **kwargs: Any) -> Any:
            return super().__call__(url, method, body, headers, timeout=TOKEN_TIMEOUT_S, **kwargs)

    return TimedRequest


async def access_token(ctx: CheckContext) -> str:
    key_file = ctx.env.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    try:
        return await asyncio.wait_for(asyncio.to_thread(_fresh_token, key_file), ADC_TIMEOUT_S)
    except TimeoutError as exc:
        raise GcpCheckError("Looking for Google Cloud credentials took too long (no key file, no metadata server "
                            "answered).", hint=HOW_TO_AUTHENTICATE) from exc


def forget_credentials() -> None:
    """Drop cached credentials (tests; a rotated key file)."""
    with _lock:
        _credentials.clear()


# --- calls --------------------------------------------------------------------------------------------------------


def endpoint(ctx: CheckContext, api: str) -> str:
    own = ctx.env.get(f"GCP_{api.upper()}_ENDPOINT") or ctx.env.get("GCP_API_ENDPOINT")
    return (own or _ROOTS[api]).rstrip("/")


def url(ctx: CheckContext, op: str, **values: str) -> str:
    operation = OPERATIONS[op]
    return endpoint(ctx, operation.api) + operation.path.format(**{k: quote(v, safe="") for k, v in values.items()})


async def call(
    ctx: CheckContext, op: str, *, params: Any = None, body: Any = None, content: bytes | None = None,
    **values: str,
) -> dict[str, Any]:
    """One REST call; the JSON answer, or GcpCheckError with a sentence that names what is missing."""
    operation = OPERATIONS[op]
    headers = {"Authorization": f"Bearer {await access_token(ctx)}"}
    try:
        response = await ctx.http.request(
            operation.method, url(ctx, op, **values), params=params, json=body, content=content, headers=headers,
            timeout=min(CALL_TIMEOUT_S, max(1.0, ctx.remaining())),
        )
    except httpx.HTTPError as exc:
        raise GcpCheckError(f"Google Cloud {operation.api} API unreachable: {type(exc).__name__}") from exc
    if response.status_code >= 400:
        raise _error(op, response)
    return response.json() if response.content else {}


def _error(op: str, response: httpx.Response) -> GcpCheckError:
    operation = OPERATIONS[op]
    message = _google_message(response)
    if response.status_code == 404:
        return GcpNotFound(f"Not found: {message}", status=404)
    if response.status_code in (401, 403):
        return GcpDenied(
            f"Permission denied: the bot's credentials need {operation.permission} ({operation.role})",
            status=response.status_code,
            hint=f"Grant {operation.role} (or a role with {operation.permission}) to the bot's service account; "
                 "deploy/gcp-roles.md lists them all.",
        )
    return GcpCheckError(f"Google Cloud {op} answered HTTP {response.status_code}: {message}",
                         status=response.status_code)


def _google_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return response.text[:200]
    return str(error.get("message") if isinstance(error, dict) else error)[:200]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


# --- the decorator ------------------------------------------------------------------------------------------------

Item = TypeVar("Item")
CheckFn = Callable[[Item, CheckContext], Awaitable[CheckResult]]


def gcp_check(func: CheckFn[Item]) -> CheckFn[Item]:
    """Make `func` return an `error` result, rather than raise, when a Google Cloud call fails."""

    @functools.wraps(func)
    async def run(item: Item, ctx: CheckContext) -> CheckResult:
        try:
            return await func(item, ctx)
        except GcpCheckError as exc:
            return CheckResult(status=Status.error, summary=str(exc), hint=exc.hint or _default_hint(exc))

    return run


def _default_hint(exc: GcpCheckError) -> str:
    if isinstance(exc, GcpNotFound):
        return "Check the name, project and region in the services file's gcp block."
    return "Rerun in a minute; if it persists, call the API by hand with the same credentials."


def spec(ctx: CheckContext) -> Any:
    assert ctx.service.gcp is not None, "GCP checks run only for services with a `gcp` block"
    return ctx.service.gcp
