"""Documents the bot produces: files (the three-step v2 upload), canvases, and views (modals, App Home)."""

from __future__ import annotations

import secrets
import time

from bot.slack.limits import SLACK
from bot.slack.local.blocks import check_blocks
from bot.slack.local.model import SlackError
from bot.slack.local.params import Params
from bot.slack.local.workspace import Channel, StoredFile, Workspace

ALT_TXT_MAX = 1000  # Slack answers alt_txt_too_large past this many characters


def get_upload_url(ws: Workspace, p: Params) -> dict:
    """Step 1 of files_upload_v2: reserve a file id and hand out a URL on this server to POST the bytes to."""
    filename, length = p.required("filename"), p.text("length", "")
    if not length.isdigit():
        raise SlackError("invalid_arguments")
    if len(p.text("alt_txt") or "") > ALT_TXT_MAX:
        raise SlackError("alt_txt_too_large")
    stored = StoredFile(id=ws.ids.next("F"), name=filename, length=int(length), created=int(time.time()),
                        user=ws.bot_user_id, upload_key=secrets.token_hex(12), alt_txt=p.text("alt_txt"),
                        snippet_type=p.text("snippet_type"))
    ws.files[stored.id] = stored
    ws.uploads[stored.upload_key] = stored.id
    return {"upload_url": f"{ws.base}/upload/v1/{stored.upload_key}", "file_id": stored.id}


def receive_upload(ws: Workspace, key: str, content: bytes) -> StoredFile | None:
    """Step 2: the bytes arrive at the upload URL. None for a URL this server never issued."""
    stored = ws.files.get(ws.uploads.get(key, ""))
    if stored is not None:
        stored.content = content
    return stored


def complete_upload(ws: Workspace, p: Params) -> dict:
    """Step 3: name the files and share them; a share is a bot message carrying the files (in a thread if asked)."""
    files = _uploaded(ws, p.get("files"))
    targets = [ws.channel(c) for c in (p.ids("channels") or p.ids("channel_id"))]
    for channel in targets:
        ws.require_member(channel)
    for stored, title in files:
        stored.title, stored.completed = title or stored.name, True
    for channel in targets:
        _share(ws, channel, [f for f, _ in files], p)
    if not targets:
        for stored, _ in files:
            ws.emit("file", {"file": ws.file_view(stored), "content": stored.content, "channel": None,
                             "thread_ts": None})
    return {"files": [ws.file_view(f) for f, _ in files]}


def _uploaded(ws: Workspace, items: object) -> list[tuple[StoredFile, str | None]]:
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise SlackError("invalid_arguments")
    found = [(ws.files.get(str(item.get("id"))), item.get("title")) for item in items]
    if any(stored is None or stored.content is None for stored, _ in found):
        raise SlackError("file_not_found")
    return found


def _share(ws: Workspace, channel: Channel, files: list[StoredFile], p: Params) -> None:
    thread_ts = ws.thread_root(channel, p.text("thread_ts"))
    message = ws.add_message(channel, ws.bot_user_id, p.text("initial_comment", ""), bot_id=ws.bot_id,
                             thread_ts=thread_ts, files=[ws.file_view(f) for f in files])
    for stored in files:
        stored.shares.setdefault(channel.id, []).append(
            {"ts": message.ts, "channel_name": channel.name, **({"thread_ts": thread_ts} if thread_ts else {})})
        ws.emit("file", {"file": ws.file_view(stored), "content": stored.content, "channel": channel.id,
                         "thread_ts": thread_ts})


def files_info(ws: Workspace, p: Params) -> dict:
    stored = ws.files.get(p.text("file") or "")
    if stored is None or not stored.completed:
        raise SlackError("file_not_found")
    return {"file": ws.file_view(stored)}


def files_upload(ws: Workspace, p: Params) -> dict:
    raise SlackError("method_deprecated")  # retired by Slack: files_upload_v2 is the way


def canvases_create(ws: Workspace, p: Params) -> dict:
    channel_id = p.text("channel_id")
    if channel_id:
        ws.channel(channel_id)
    canvas = _new_canvas(ws, p, channel=channel_id, kind="standalone")
    return {"canvas_id": canvas["canvas_id"]}


def channel_canvas_create(ws: Workspace, p: Params) -> dict:
    channel = ws.channel(p.required("channel_id", "channel_not_found"))
    ws.require_member(channel)
    if channel.canvas_id:
        raise SlackError("channel_canvas_already_exists")
    channel.canvas_id = _new_canvas(ws, p, channel=channel.id, kind="channel")["canvas_id"]
    return {"canvas_id": channel.canvas_id}


def canvases_edit(ws: Workspace, p: Params) -> dict:
    canvas = _canvas(ws, p)
    changes = p.get("changes")
    if not isinstance(changes, list) or not changes:
        raise SlackError("invalid_arguments")
    for change in changes:
        canvas["markdown"] = _edited(canvas["markdown"], change)
    ws.emit("canvas", {**canvas, "action": "edited"})
    return {}


def canvases_delete(ws: Workspace, p: Params) -> dict:
    canvas = _canvas(ws, p)
    del ws.canvases[canvas["canvas_id"]]
    owner = ws.channels.get(canvas["channel"] or "")
    if owner is not None and owner.canvas_id == canvas["canvas_id"]:
        owner.canvas_id = None
    ws.emit("canvas", {**canvas, "action": "deleted"})
    return {}


def _new_canvas(ws: Workspace, p: Params, *, channel: str | None, kind: str) -> dict:
    canvas = {"canvas_id": ws.ids.next("F"), "title": p.text("title", ""),
              "markdown": _markdown(p.get("document_content")), "channel": channel, "kind": kind,
              "created": int(time.time())}
    ws.canvases[canvas["canvas_id"]] = canvas
    ws.emit("canvas", {**canvas, "action": "created"})
    return canvas


def _canvas(ws: Workspace, p: Params) -> dict:
    canvas = ws.canvases.get(p.text("canvas_id") or "")
    if canvas is None:
        raise SlackError("canvas_not_found")
    return canvas


def _markdown(document: object) -> str:
    if document is None:
        return ""
    if not isinstance(document, dict) or document.get("type") != "markdown":
        raise SlackError("invalid_arguments")
    return str(document.get("markdown", ""))


def _edited(markdown: str, change: object) -> str:
    """Whole-document edits only; section-addressed edits are refused loudly rather than faked."""
    if not isinstance(change, dict):
        raise SlackError("invalid_arguments")
    operation, new = change.get("operation"), _markdown(change.get("document_content"))
    if change.get("section_id"):
        raise SlackError("not_supported_by_local_slack")
    if operation == "insert_at_end":
        return f"{markdown}\n{new}" if markdown else new
    if operation == "insert_at_start":
        return f"{new}\n{markdown}" if markdown else new
    if operation == "replace":
        return new
    raise SlackError("invalid_arguments")


def views_open(ws: Workspace, p: Params) -> dict:
    p.required("trigger_id")
    return {"view": _store_view(ws, p, "views.open")}


def views_push(ws: Workspace, p: Params) -> dict:
    p.required("trigger_id")
    return {"view": _store_view(ws, p, "views.push")}


def views_publish(ws: Workspace, p: Params) -> dict:
    ws.user(p.required("user_id"))
    return {"view": _store_view(ws, p, "views.publish")}


def views_update(ws: Workspace, p: Params) -> dict:
    wanted = p.text("view_id") or p.text("external_id")
    existing = next((v for v in ws.views.values() if wanted in (v["id"], v.get("external_id"))), None)
    if existing is None:
        raise SlackError("not_found")
    return {"view": _store_view(ws, p, "views.update", view_id=existing["id"])}


def _store_view(ws: Workspace, p: Params, method: str, *, view_id: str | None = None) -> dict:
    view = p.get("view")
    if not isinstance(view, dict) or not view.get("type"):
        raise SlackError("invalid_arguments")
    check_blocks(view.get("blocks", []), max_blocks=SLACK.view_blocks, max_total_text=None)
    view_id = view_id or ws.ids.next("V")
    stored = {**view, "id": view_id, "team_id": ws.team_id, "state": {"values": {}}, "hash": ws.clock.next(),
              "root_view_id": view_id, "app_id": ws.app_id, "bot_id": ws.bot_id}
    ws.views[view_id] = stored
    ws.emit("view", {"method": method, "view": stored, "trigger_id": p.text("trigger_id"),
                     "user_id": p.text("user_id")})
    return stored


METHODS = {
    "files.getUploadURLExternal": get_upload_url,
    "files.completeUploadExternal": complete_upload,
    "files.info": files_info,
    "files.upload": files_upload,
    "canvases.create": canvases_create,
    "canvases.edit": canvases_edit,
    "canvases.delete": canvases_delete,
    "conversations.canvases.create": channel_canvas_create,
    "views.open": views_open,
    "views.push": views_push,
    "views.publish": views_publish,
    "views.update": views_update,
}
