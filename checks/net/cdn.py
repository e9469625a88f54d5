"""CDN caching: do assets come back cacheable and from the cache, and does the distribution cache by default?

`cdn.cache_headers` fetches each asset URL of the services file twice from the same edge address. An asset listed
there is one the service expects the CDN to cache, so `Cache-Control: no-store | private | no-cache | max-age=0`
(without a positive `s-maxage` that lets shared caches keep it), or a second request that is still a miss
(`X-Cache: Miss from cloudfront`, `cf-cache-status: MISS/BYPASS/DYNAMIC`), means every request goes to the origin
→ warn P2. Both requests go to one address because a different edge would have its own, cold, cache.

`cdn.distribution` reads the CloudFront distribution's default cache behaviour: a legacy DefaultTTL/MaxTTL of 0, or
the managed CachingDisabled policy, means objects without their own Cache-Control are never cached → warn P2.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from checks.aws.clients import AwsCheckError
from checks.model import CheckResult, Status
from checks.net import guard
from checks.net.probe import Outcome, probe_http, request_timeouts, time_left, with_route
from checks.registry import CheckContext, check

CHECK_LIMIT_S = 20.0
RESOLVE_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 5.0

_UNCACHEABLE = ("no-store", "private", "no-cache")
_MISS_VALUES = ("miss", "bypass", "dynamic", "expired")

# AWS managed cache policies (ids are the same in every account).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
MANAGED_POLICY_TTLS = {
    CACHING_DISABLED: {"name": "CachingDisabled", "MinTTL": 0, "DefaultTTL": 0, "MaxTTL": 0},
    "658327ea-f89d-4fab-a63d-7e88639e58f6": {"name": "CachingOptimized", "MinTTL": 1, "DefaultTTL": 86400,
                                             "MaxTTL": 31536000},
    "b2884449-e4de-46a7-ac36-70bc7f1ddd6d": {"name": "CachingOptimizedForUncompressedObjects", "MinTTL": 1,
                                             "DefaultTTL": 86400, "MaxTTL": 31536000},
}


# ---------------------------------------------------------------------------------------------- cache headers


@check("cdn.cache_headers", timeout_s=CHECK_LIMIT_S)
async def cdn_cache_headers(asset: Any, ctx: CheckContext) -> CheckResult:
    """CDN: an asset is cacheable and the repeat request is a cache hit."""
    url = httpx.URL(str(asset))
    ends_at = time.monotonic() + time_left(ctx.remaining(), CHECK_LIMIT_S)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = await guard.allowed_addresses(url.host, port, ctx, timeout=RESOLVE_TIMEOUT_S)
    except guard.NameNotResolved as exc:
        return CheckResult(status=Status.error, resource=str(url),
                           summary=f"Could not fetch {url}: {url.host} does not resolve ({exc}).")
    except guard.TargetRefused as exc:
        return CheckResult(status=Status.error, summary=str(exc), resource=str(url))

    address = with_route(addresses)[0]
    first = await _fetch(ctx, url, address, ends_at)
    repeat = await _fetch(ctx, url, address, ends_at) if first.kind == "response" else None
    return judge_headers(url, first, repeat)


async def _fetch(ctx: CheckContext, url: httpx.URL, address: str, ends_at: float) -> Outcome:
    timeout, cap = request_timeouts(REQUEST_TIMEOUT_S, (ends_at - time.monotonic()) / 2)
    return await probe_http(ctx.http, url, address, timeout=timeout, cap=cap)


def judge_headers(url: httpx.URL, first: Outcome, repeat: Outcome | None) -> CheckResult:
    evidence: dict[str, Any] = {"url": str(url), "address": first.address,
                                "first": _response_evidence(first), "repeat": _response_evidence(repeat)}
    base: dict[str, Any] = {"resource": str(url), "evidence": evidence}
    failed = next((o for o in (first, repeat) if o is not None and o.kind != "response"), None)
    if failed is not None or repeat is None:
        failed = failed or first
        return CheckResult(status=Status.error, **base,
                           summary=f"Could not fetch {url} at {failed.address}: {failed.detail or failed.phrase}.",
                           hint="http.health and tcp.connect say whether the CDN endpoint is reachable at all.")
    if not (200 <= (repeat.status or 0) < 300 or repeat.status == 304):
        return CheckResult(status=Status.fail, severity="P1", **base,
                           summary=f"The asset {url} returns HTTP {repeat.status}; pages that load it break.",
                           hint="Check the asset was deployed (path, build output) and the CDN origin/behaviour "
                                "that serves this path.")
    problems = cache_problems(first.headers, repeat.headers)
    evidence["problems"] = problems
    if problems:
        return CheckResult(status=Status.warn, severity="P2", **base,
                           summary=f"{url} is not served from the CDN cache: {'; '.join(problems)}.",
                           hint="Every request goes to the origin. Have the origin send a long max-age (or "
                                "s-maxage) for static assets, and check the distribution's cache policy "
                                "(cdn.distribution).")
    cache_control = repeat.headers.get("cache-control", "none")
    x_cache = _cache_status(repeat.headers) or "no cache-status header"
    return CheckResult(status=Status.ok, **base,
                       summary=f"{url} is cacheable (Cache-Control: {cache_control}) and the repeat request was "
                               f"served from cache ({x_cache}).")


def cache_problems(first: dict[str, str], repeat: dict[str, str]) -> list[str]:
    """What keeps an asset out of the cache, in words; empty when nothing does."""
    problems = []
    cache_control = repeat.get("cache-control") or first.get("cache-control") or ""
    directives = _directives(cache_control)
    blocking = [d for d in _UNCACHEABLE if d in directives]
    shared_max_age = _seconds(directives.get("s-maxage"))
    if directives.get("max-age") is not None and _seconds(directives["max-age"]) == 0 and not shared_max_age:
        blocking.append("max-age=0")
    if shared_max_age == 0 and "s-maxage" in directives:
        blocking.append("s-maxage=0")
    if blocking:
        problems.append(f"Cache-Control says {', '.join(blocking)} ({cache_control!r})")
    status = _cache_status(repeat)
    if status and any(value in status.lower() for value in _MISS_VALUES) and "hit" not in status.lower():
        problems.append(f"the repeat request was still a cache miss ({status})")
    return problems


def _directives(cache_control: str) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"') if value else None
    return directives


def _seconds(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _cache_status(headers: dict[str, str]) -> str | None:
    if "x-cache" in headers:
        return f"X-Cache: {headers['x-cache']}"
    if "cf-cache-status" in headers:
        return f"cf-cache-status: {headers['cf-cache-status']}"
    return None


def _response_evidence(outcome: Outcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    return {**outcome.evidence(), "headers": outcome.headers}


# ---------------------------------------------------------------------------------------------- distribution


@check("cdn.distribution", timeout_s=CHECK_LIMIT_S)
async def cdn_distribution(distribution_id: str, ctx: CheckContext) -> CheckResult:
    """CloudFront: the default cache behaviour caches (TTLs above 0)."""
    assert ctx.aws is not None and ctx.service.aws is not None
    region = ctx.service.aws.region  # CloudFront is global; the region only picks the client
    try:
        config = (await ctx.aws.call("cloudfront", region, "get_distribution_config", Id=distribution_id))[
            "DistributionConfig"]
        behavior = config["DefaultCacheBehavior"]
        ttls = await _ttls(ctx, region, behavior)
    except AwsCheckError as exc:
        return CheckResult(status=Status.error, resource=distribution_id, summary=str(exc))
    return judge_distribution(distribution_id, config, ttls)


async def _ttls(ctx: CheckContext, region: str, behavior: dict[str, Any]) -> dict[str, Any]:
    """The TTLs in force: from the cache policy when one is attached, else the legacy fields on the behaviour."""
    policy_id = behavior.get("CachePolicyId") or ""
    if not policy_id:
        return {"source": "legacy TTL settings",
                **{key: behavior.get(key) for key in ("MinTTL", "DefaultTTL", "MaxTTL")}}
    if policy_id in MANAGED_POLICY_TTLS:
        managed = MANAGED_POLICY_TTLS[policy_id]
        return {"source": f"managed cache policy {managed['name']}", "CachePolicyId": policy_id,
                **{key: managed[key] for key in ("MinTTL", "DefaultTTL", "MaxTTL")}}
    assert ctx.aws is not None
    policy = (await ctx.aws.call("cloudfront", region, "get_cache_policy", Id=policy_id))["CachePolicy"]
    policy_config = policy["CachePolicyConfig"]
    return {"source": f"cache policy {policy_config.get('Name', policy_id)}", "CachePolicyId": policy_id,
            **{key: policy_config.get(key) for key in ("MinTTL", "DefaultTTL", "MaxTTL")}}


def judge_distribution(distribution_id: str, config: dict[str, Any], ttls: dict[str, Any]) -> CheckResult:
    evidence = {"distribution": distribution_id, "enabled": config.get("Enabled"),
                "aliases": config.get("Aliases", {}).get("Items", []), **ttls}
    zero = [key for key in ("DefaultTTL", "MaxTTL") if ttls.get(key) == 0]
    if zero:
        return CheckResult(
            status=Status.warn, severity="P2", resource=distribution_id, evidence=evidence,
            summary=f"CloudFront distribution {distribution_id} caches nothing by default: "
                    f"{', '.join(f'{key}=0' for key in zero)} ({ttls['source']}); objects without their own "
                    "Cache-Control are fetched from the origin on every request.",
            hint="Attach a caching cache policy (e.g. the managed CachingOptimized) to the default behaviour, or "
                 "raise DefaultTTL/MaxTTL, then create an invalidation if stale errors were cached.",
        )
    return CheckResult(status=Status.ok, resource=distribution_id, evidence=evidence,
                       summary=f"CloudFront distribution {distribution_id} caches by default "
                               f"(DefaultTTL={ttls.get('DefaultTTL')}, MaxTTL={ttls.get('MaxTTL')}; {ttls['source']}).")
