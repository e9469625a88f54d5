"""Who is who: auth.test, users.*, usergroups.*; and apps.connections.open for Socket Mode."""

from __future__ import annotations

import time

from bot.slack.local.model import SlackError
from bot.slack.local.params import Params, page_by_offset
from bot.slack.local.workspace import Workspace


def auth_test(ws: Workspace, p: Params) -> dict:
    bot = ws.users[ws.bot_user_id]
    return {"url": "https://local.slack/", "team": "Local Workspace", "user": bot.name, "team_id": ws.team_id,
            "user_id": bot.id, "bot_id": ws.bot_id, "is_enterprise_install": False}


def apps_connections_open(ws: Workspace, p: Params) -> dict:
    """Socket Mode's WebSocket URL: whatever a test set as `LocalSlack.socket_mode_url`."""
    if not ws.socket_mode_url:
        raise SlackError("socket_mode_not_available")  # hypothetical code: this workspace has no WebSocket end
    return {"url": ws.socket_mode_url}


def api_test(ws: Workspace, p: Params) -> dict:
    if p.text("error"):
        raise SlackError(p.text("error"))
    return {"args": {k: v for k, v in p.data.items() if k != "token"}}


def users_info(ws: Workspace, p: Params) -> dict:
    return {"user": ws.user_view(ws.user(p.text("user")))}


def users_list(ws: Workspace, p: Params) -> dict:
    page, cursor = page_by_offset(list(ws.users.values()), p, default_limit=200)
    return {"members": [ws.user_view(u) for u in page], "cache_ts": int(time.time()),
            "response_metadata": {"next_cursor": cursor}}


def users_lookup_by_email(ws: Workspace, p: Params) -> dict:
    email = (p.text("email") or "").lower()
    user = next((u for u in ws.users.values() if u.email and u.email.lower() == email), None)
    if user is None:
        raise SlackError("users_not_found")
    return {"user": ws.user_view(user)}


def usergroups_list(ws: Workspace, p: Params) -> dict:
    groups = [_group_view(g, users=p.flag("include_users")) for g in ws.usergroups.values()]
    return {"usergroups": groups}


def usergroups_users_list(ws: Workspace, p: Params) -> dict:
    group = ws.usergroups.get(p.text("usergroup") or "")
    if group is None:
        raise SlackError("no_such_subteam")
    return {"users": list(group["users"])}


def _group_view(group: dict, *, users: bool) -> dict:
    view = {k: v for k, v in group.items() if k != "users"}
    view["user_count"] = len(group["users"])
    return {**view, "users": list(group["users"])} if users else view


METHODS = {
    "auth.test": auth_test,
    "api.test": api_test,
    "apps.connections.open": apps_connections_open,
    "users.info": users_info,
    "users.list": users_list,
    "users.lookupByEmail": users_lookup_by_email,
    "usergroups.list": usergroups_list,
    "usergroups.users.list": usergroups_users_list,
}
