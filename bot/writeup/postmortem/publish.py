"""Publishing the postmortem draft: a canvas in the incident channel, else a Markdown file; optionally S3; and a
link posted once in the incident channel and under the announcement.

    canvas   the channel's canvas (conversations.canvases.create) in an incident channel of its own; a standalone
             canvas shared in the channel (canvases.create with channel_id) when the channel already has one or
             the incident lives in a thread. Later publications edit the same canvas (canvases.edit, replace).
    file     when canvases are off (POSTMORTEM_CANVAS=false) or refused (free plan, missing canvases:write):
             files_upload_v2 of `<INC-n>-postmortem.md` into the channel (the incident thread in thread mode).
    chart    when the service's metrics were measured: a PNG of the key metric with the milestones marked
             (chart.py), shared in the channel when it changed, linked from the draft, and in S3 beside it
    S3       with POSTMORTEM_S3_BUCKET: put `<prefix><INC-n>/postmortem.md` (boto3, in a thread, default
             credentials and region); every publication overwrites it.

Runs as the `writeup.postmortem` job (coalesced per incident); a job may run twice: the canvas id and the posted
link are remembered in Redis, so a re-run edits rather than duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.incidents.timeline import EntryKind
from bot.queue import Job, Permanent
from bot.queue.replies import as_text
from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.writeup.context import writeup_of
from bot.writeup.postmortem.assemble import (
    PostmortemError,
    gather_facts,
    render_markdown,
)
from bot.writeup.requests import request_backfill
from bot.writeup.view import IncidentView, load_incident

log = logging.getLogger("bot.postmortem")

# Errors that mean "canvases are not for this workspace/app": fall back to a file and do not try again.
CANVAS_REFUSALS = {"not_allowed_token_type", "missing_scope", "canvas_disabled_user_team", "team_tier_cannot_create_canvases",
                   "free_team_canvas_tab_already_exists", "not_supported_by_local_slack", "unknown_method",
                   "restricted_action", "feature_not_enabled", "canvas_creation_failed", "invalid_arguments",
                   "not_allowed", "channel_canvas_already_exists", "method_deprecated"}

# Under a private incident's public announcement: no link, no title (the announcement itself says only the id).
PRIVATE_READY = ":page_facing_up: {id}: the postmortem draft is ready; its people find it in the incident's channel."


@dataclass
class Published:
    incident_id: str
    markdown: str
    canvas_id: str | None = None
    file_id: str | None = None
    link: str | None = None
    s3_uri: str | None = None
    announced: bool = False


def _key(rt: Runtime, incident_id: str) -> str:
    return rt.key("wu", "pm", incident_id)


async def publish_postmortem(rt: Runtime, incident_id: str) -> Published:
    """Assemble and publish (or re-publish) the draft of one incident."""
    w = writeup_of(rt)
    incident = await load_incident(rt, incident_id)
    if incident is None:
        raise PostmortemError(f"There is no incident {incident_id}.")
    facts = await gather_facts(rt, incident_id)
    state = {as_text(k): as_text(v) for k, v in (await rt.redis.hgetall(_key(rt, incident_id))).items()}
    facts.chart_link = await _chart(rt, incident, facts, state)
    try:
        markdown = render_markdown(facts, w.settings.postmortem_template)
    except PostmortemError as exc:  # the team's template is broken: publish the built-in one rather than nothing
        if w.settings.postmortem_template is None:
            raise
        log.error("%s; publishing with the built-in template", exc)
        markdown = render_markdown(facts)
    result = Published(incident_id, markdown)
    title = f"Postmortem {incident.id}: {' '.join(incident.title.split())[:120]}"
    if w.settings.postmortem_canvas and state.get("mode") != "file" and incident.channel:
        await _canvas(rt, incident, title, markdown, state, result)
    if result.canvas_id is None and incident.channel:
        await _file(rt, incident, title, markdown, result)
    if w.settings.postmortem_s3_bucket:
        result.s3_uri = await _s3(w.settings.postmortem_s3_bucket, w.settings.postmortem_s3_prefix, incident_id,
                                  markdown)
    await rt.redis.hset(_key(rt, incident_id), mapping={
        k: v for k, v in {"canvas": result.canvas_id, "file": result.file_id, "link": result.link,
                          "s3": result.s3_uri, "at": str(time.time()),
                          "mode": "canvas" if result.canvas_id else "file"}.items() if v})
    result.announced = await _announce(rt, incident, result, previous_link=state.get("link"))
    await w.timeline.record(incident_id, EntryKind.POSTMORTEM, entry_id=f"postmortem:{result.canvas_id or result.file_id}",
                            actor="bot", text=result.link or "",
                            data={"canvas_id": result.canvas_id, "file_id": result.file_id, "s3": result.s3_uri})
    return result


async def _chart(rt: Runtime, incident: IncidentView, facts: Any, state: dict[str, str]) -> str | None:
    """The timeline chart, shared in the channel (and put beside the Markdown in S3) when it changed since the last
    publication; its link for the draft. A chart that cannot be drawn or shared leaves the draft without it."""
    from bot.writeup.postmortem.chart import timeline_png

    png = await asyncio.to_thread(timeline_png, facts)
    if png is None or not incident.channel:
        return None
    digest = hashlib.sha256(png).hexdigest()[:16]
    if state.get("chart_sha") == digest and state.get("chart_link"):
        return state["chart_link"]
    w = writeup_of(rt)
    thread = incident.thread_ts if incident.mode == "thread" else None
    try:
        shared = await rt.slack.upload_file(incident.channel, png, f"{incident.id}-timeline.png", thread_ts=thread,
                                            title=f"{incident.id}: the key metric over the incident",
                                            alt_txt=f"{incident.id} timeline chart")
    except SlackError as exc:
        log.warning("%s: the timeline chart was not shared: %s", incident.id, exc.error)
        return None
    link = str(shared.get("permalink") or "") or None
    if w.settings.postmortem_s3_bucket:
        await _s3(w.settings.postmortem_s3_bucket, w.settings.postmortem_s3_prefix, incident.id, png,
                  name="timeline.png", content_type="image/png")
    await rt.redis.hset(_key(rt, incident.id), mapping={"chart_sha": digest, "chart_link": link or ""})
    return link


async def _canvas(rt: Runtime, incident: IncidentView, title: str, markdown: str, state: dict[str, str],
                  result: Published) -> None:
    content = {"type": "markdown", "markdown": markdown}
    canvas_id = state.get("canvas")
    try:
        if canvas_id:
            await rt.slack.call("canvases.edit", canvas_id=canvas_id,
                                changes=[{"operation": "replace", "document_content": content}])
        else:
            canvas_id = await _create_canvas(rt, incident, title, content)
    except SlackError as exc:
        if exc.error == "canvas_not_found" and state.get("canvas"):
            await rt.redis.hdel(_key(rt, incident.id), "canvas")  # deleted by someone: make a new one next time
            state.pop("canvas", None)
            return await _canvas(rt, incident, title, markdown, state, result)
        if exc.error not in CANVAS_REFUSALS:
            raise
        log.info("%s: canvases refused (%s); publishing the postmortem as a file", incident.id, exc.error)
        await rt.redis.hset(_key(rt, incident.id), "mode", "file")
        return None
    result.canvas_id = canvas_id
    result.link = state.get("link") if state.get("canvas") == canvas_id and state.get("link") else \
        await _canvas_link(rt, incident, canvas_id)
    return None


async def _create_canvas(rt: Runtime, incident: IncidentView, title: str, content: dict) -> str:
    """The channel canvas for an incident channel; a standalone canvas shared in the channel otherwise."""
    if incident.mode == "channel":
        try:
            answer = await rt.slack.call("conversations.canvases.create", channel_id=incident.channel,
                                         title=title, document_content=content)
            return str(answer["canvas_id"])
        except SlackError as exc:
            if exc.error not in CANVAS_REFUSALS:
                raise
            log.info("%s: no channel canvas (%s); creating a standalone canvas", incident.id, exc.error)
    answer = await rt.slack.call("canvases.create", title=title, document_content=content,
                                 channel_id=incident.channel)
    return str(answer["canvas_id"])


async def _canvas_link(rt: Runtime, incident: IncidentView, canvas_id: str) -> str | None:
    """A canvas is a file: files.info knows its permalink. Else Slack's canvas URL from the workspace's base."""
    try:
        answer = await rt.slack.call("files.info", file=canvas_id)
        link = (answer.get("file") or {}).get("permalink")
        if link:
            return str(link)
    except SlackError:
        pass
    if incident.link and "/archives/" in incident.link:
        base = incident.link.split("/archives/", 1)[0]
        team = await _team_id(rt)
        return f"{base}/docs/{team}/{canvas_id}" if team else None
    return None


async def _team_id(rt: Runtime) -> str | None:
    try:
        return str((await rt.slack.call("auth.test")).get("team_id") or "") or None
    except SlackError:
        return None


async def _file(rt: Runtime, incident: IncidentView, title: str, markdown: str, result: Published) -> None:
    thread = incident.thread_ts if incident.mode == "thread" else None
    try:
        answer = await rt.slack.web.files_upload_v2(
            channel=incident.channel, content=markdown, filename=f"{incident.id}-postmortem.md", title=title,
            thread_ts=thread, initial_comment=f"Postmortem draft for {incident.id} (Markdown).")
    except SlackApiError as exc:
        error = str(exc.response.get("error", "unknown_error")) if exc.response is not None else "unknown_error"
        raise SlackError("files_upload_v2", error) from None
    files = answer.get("files") or ([answer.get("file")] if answer.get("file") else [])
    if files:
        result.file_id = str(files[0].get("id"))
        result.link = files[0].get("permalink")


async def _s3(bucket: str, prefix: str, incident_id: str, body: str | bytes, *, name: str = "postmortem.md",
              content_type: str = "text/markdown; charset=utf-8") -> str:
    key = f"{prefix}{incident_id}/{name}"
    data = body.encode() if isinstance(body, str) else body

    def put() -> None:
        import boto3
        from botocore.config import Config

        # Bounded like every other external call: botocore's defaults wait 60 s per read.
        config = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "total_max_attempts": 4})
        boto3.client("s3", config=config).put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    await asyncio.to_thread(put)
    return f"s3://{bucket}/{key}"


async def _announce(rt: Runtime, incident: IncidentView, result: Published, *, previous_link: str | None) -> bool:
    """Post the link once in the incident channel and under the announcement (again only if the link changed).
    Under a private incident's announcement only that a draft exists: its link would unfurl the draft's title."""
    if not incident.channel:
        return False
    posted_key = rt.key("wu", "pm", incident.id, "posted")
    where = result.link or (f"`{result.s3_uri}`" if result.s3_uri else None)
    if where is None:
        return False
    if result.link and result.link == previous_link and await rt.redis.hget(posted_key, "channel"):
        return False
    draft = "an updated postmortem draft" if previous_link else "the postmortem draft"
    link = f"<{result.link}|{draft}>" if result.link else f"{draft} ({where})"
    extra = f" A copy is in `{result.s3_uri}`." if result.s3_uri and result.link else ""
    text = (f":page_facing_up: {incident.id}: {link} is ready — facts from the timeline are filled in; "
            f"root cause, impact and lessons are for the team to write.{extra}")
    thread = incident.thread_ts if incident.mode == "thread" else None
    answer = await rt.slack.post_message(incident.channel, text, thread_ts=thread)
    await rt.redis.hset(posted_key, "channel", str(answer["ts"]))
    if incident.announcement and incident.announcement[0] != incident.channel:
        channel, ts = incident.announcement
        public = PRIVATE_READY.format(id=incident.id) if incident.private else text
        try:
            reply = await rt.slack.post_message(channel, public, thread_ts=ts)
            await rt.redis.hset(posted_key, "announcement", str(reply["ts"]))
        except SlackError as exc:
            log.warning("%s: could not reply under the announcement: %s", incident.id, exc.error)
    return True


# ------------------------------------------------------------------------------------------------ jobs


async def postmortem_job(rt: Runtime, job: Job) -> None:
    incident_id = job.payload["incident"]
    try:
        published = await publish_postmortem(rt, incident_id)
    except PostmortemError as exc:
        raise Permanent(str(exc)) from None
    log.info("%s: postmortem published (%s)", incident_id, published.link or published.s3_uri)
    if job.payload.get("reason") == "resolved":  # after the draft exists, so each ticket links to it
        from bot.writeup.trackers.export import request_tickets, tracker_settings

        if tracker_settings(rt).tracker_on_resolve:
            await request_tickets(rt, incident_id, reason="resolved")
    if job.payload.get("backfill"):
        await request_backfill(rt, incident_id, reason="resolved", republish=True)


__all__ = ["Published", "postmortem_job", "publish_postmortem"]
