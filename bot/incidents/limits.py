"""How many incidents may be declared from Slack: per person and per workspace, in a sliding window.

A declaration pages people and opens a channel, so one person (or a script with their token) declaring thirty
P0s must be stopped at the limit with a plain answer, before anything is opened or paged. Defaults (settings,
bot/incidents/config.py): 3 per person and 20 per workspace in 10 minutes; incident admins are not limited;
alert-opened incidents are not counted (the alert intake de-duplicates by alert group instead).

Both windows are sorted sets in Redis, checked and added to by one script, so concurrent declarations on several
processes cannot all slip under the limit together. A command's own retry (same trigger id) is counted once.
"""

from __future__ import annotations

import time
import uuid

from bot.durations import format_duration
from bot.errors import UserError
from bot.incidents.service import Incidents, mention_all
from bot.queue.keys import tagged

# KEYS: the person's window, the workspace's. ARGV: now, window seconds, per-person limit, per-workspace limit,
# this declaration's member. Answers {0, 0} (counted) or {1 person | 2 workspace, seconds until a slot frees}.
_CHECK_AND_COUNT = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, 2 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window) end
if redis.call('ZSCORE', KEYS[1], ARGV[5]) then return {0, '0'} end
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
for i = 1, 2 do
  if redis.call('ZCARD', KEYS[i]) >= limits[i] then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    return {i, tostring(tonumber(oldest[2]) + window - now)}
  end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[i], math.ceil(window * 1000))
end
return {0, '0'}
"""


def limits_prefix(namespace: str) -> str:
    """What the windows' keys start with: one hash tag, because one script counts both."""
    return tagged(namespace, "declare-limit")


async def check_declaration(ctx: Incidents, user: str, trigger_id: str | None) -> None:
    """Count this declaration, or raise UserError (nothing counted, nothing declared) when over a limit."""
    if await ctx.is_admin(user):
        return
    settings = ctx.settings
    member = f"{user}:{trigger_id or uuid.uuid4().hex}"
    limits = limits_prefix(ctx.rt.namespace)
    keys = [f"{limits}:user:{user}", f"{limits}:workspace"]
    script = ctx.rt.redis.register_script(_CHECK_AND_COUNT)
    which, wait = await script(keys=keys, args=[time.time(), settings.incident_declare_window_s,
                                                settings.incident_declare_per_user,
                                                settings.incident_declare_per_workspace, member])
    if int(which):
        raise UserError(refusal(ctx, int(which) == 1, float(wait)))


def refusal(ctx: Incidents, personal: bool, wait_s: float) -> str:
    settings = ctx.settings
    minutes = max(round(settings.incident_declare_window_s / 60), 1)
    if personal:
        said = f"You have declared {settings.incident_declare_per_user} incidents in the last {minutes} minutes"
    else:
        said = f"{settings.incident_declare_per_workspace} incidents were declared in the last {minutes} minutes"
    admins = settings.incident_admins
    ask = f" or ask an incident admin ({mention_all(admins)})" if admins else ""
    return (f"{said}, the limit. Nothing was declared and nobody was paged. If it is part of an open incident, "
            f"add to it (`/incident list`){ask}; you can declare again in {format_duration(max(wait_s, 1))}.")
