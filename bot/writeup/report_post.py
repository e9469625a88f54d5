"""`/incident report` as a message with a chart: the command acks at once and queues `writeup.report`, which
builds the report, draws its chart in a thread and shares both as one message (the PNG with the report as its
text) in the channel where the command was typed.

A message in a channel is seen by everyone in it, so a posted report always leaves private incidents out
(`chatops report` counts them). Posted at most once per command: a Redis key is claimed before the upload, so a
retried job never shares a second copy; a worker that dies between the claim and the share loses that report,
which the person can ask for again. Where the bot cannot share in the channel (a private channel it was not
invited to, a DM with someone else), the report goes to the person's DM with the bot instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bot.runtime import Runtime
from bot.slack.client import SlackError
from bot.writeup.report import Report, build_report, slack_text

log = logging.getLogger(__name__)

JOB = "writeup.report"
CLAIM_TTL_S = 24 * 3600
NOTE = "_Private incidents are left out of a report posted in a channel; `chatops report` counts them._"


async def request_report(rt: Runtime, *, channel: str, user: str, since_s: float, service: str | None,
                         request_id: str) -> None:
    """Queue the report (one job per command: a Slack retry of the same command is the same job)."""
    await rt.queue.enqueue(JOB, {"channel": channel, "user": user, "since_s": since_s, "service": service,
                                 "at": time.time(), "request": request_id}, job_id=f"report:{request_id}")


async def report_job(rt: Runtime, job: Any) -> None:
    p = job.payload
    claim = rt.key("wu", "report", str(p["request"]))
    if not await rt.redis.set(claim, "claimed", nx=True, ex=CLAIM_TTL_S):
        return  # an earlier delivery of this job shared it (or tried to)
    report = await build_report(rt, since_s=float(p["since_s"]), service=p.get("service"), now=float(p["at"]),
                                include_private=False)
    await share_report(rt, report, str(p["channel"]), str(p["user"]))


async def share_report(rt: Runtime, report: Report, channel: str, user: str) -> str:
    """Share the chart with the report as its text in `channel`, else in the person's DM; the channel used."""
    from bot.writeup import report_chart

    png = await asyncio.to_thread(report_chart.report_png, report)
    text = slack_text(report, note=NOTE)
    try:
        await _upload(rt, channel, png, report, text)
        return channel
    except SlackError as exc:
        log.warning("the incident report could not be shared in %s (%s); sending it to the person's DM",
                    channel, exc.error)
    dm = await rt.slack.open_dm(user)
    await _upload(rt, dm, png, report, text)
    return dm


async def _upload(rt: Runtime, channel: str, png: bytes, report: Report, text: str) -> None:
    from bot.writeup import report_chart

    await rt.slack.upload_file(channel, png, report_chart.report_filename(report),
                               title=report_chart.chart_title(report), alt_txt=report_chart.alt_text(report),
                               initial_comment=text)
