"""A worker process SIGKILLed after a fix's AWS write and before its result is stored, then restarted: AWS is
written exactly once and the result posted says the fix was applied. Both processes share AWS through a moto
server and the queue through the real Redis."""

from __future__ import annotations

import asyncio
import signal

from bot.remediation import messages
from tests.incident_harness import buttons, incident_bot
from tests.remediation_flow import diagnosed_incident, request_fix
from tests.test_remediation import FAST, SERVICES, reserved, throttled


async def test_a_worker_killed_between_the_fix_and_its_record_applies_it_once_and_reports_it_applied(
        served_aws, local_slack, redis_url, tmp_path):
    throttled(served_aws)
    marker, trail = tmp_path / "killed", tmp_path / "writes"
    async with incident_bot(local_slack, redis_url, tmp_path, services=SERVICES, settings=FAST) as bot:
        inc, incident = await diagnosed_incident(bot)
        _, approval = await request_fix(bot, incident, typed={"value": "5"})
        await bot.stop_workers()  # from here on only the worker processes run jobs
        doomed = bot.worker_process(tmp_path, kill_after_fix=marker, fix_trail=trail)
        try:
            request_id = buttons({"blocks": approval.blocks})[messages.APPROVE_ACTION]
            await bot.click(messages.APPROVE_ACTION, request_id, user="U2", channel=incident.channel)
            await bot.wait_for(lambda: doomed.poll() is not None, 30, "the worker's death")
        finally:
            if doomed.poll() is None:
                doomed.kill()
        assert doomed.returncode == -signal.SIGKILL and marker.read_text() == request_id
        assert reserved(served_aws) == 5  # the write happened…
        assert not [m for m in local_slack.messages(incident.channel) if m.text.startswith("Fix")]  # …unreported

        restarted = bot.worker_process(tmp_path, fix_trail=trail)
        try:
            posted = await bot.wait_for(lambda: [m for m in local_slack.messages(incident.channel)
                                                 if m.text.startswith("Fix")], 40, "the result after the restart")
        finally:
            restarted.send_signal(signal.SIGTERM)
            await asyncio.to_thread(restarted.wait, 30)
        assert posted[0].text.startswith("Fixed: Lift reserved concurrency 0 from api-handler")
        assert "an earlier attempt made the change" in posted[0].text and "reserved_concurrency 5" in posted[0].text
        assert len(trail.read_text().splitlines()) == 1 and reserved(served_aws) == 5
        stages = [e.data["stage"] for e in await bot.timeline(inc, "remediation")]
        assert stages == ["requested", "approved", "applied"]
