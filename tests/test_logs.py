"""Logs: JSON lines that carry the job's and incident's ids, with every known secret redacted."""

from __future__ import annotations

import io
import json
import logging

from bot.app.jobs import wrap_job_handler
from bot.logs import AddContext, JsonFormatter, RedactSecrets
from bot.queue import Job


async def test_a_jobs_log_lines_carry_its_job_incident_and_run_ids_and_no_secret() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(AddContext())
    handler.addFilter(RedactSecrets(["xoxb-secret-token-123"]))
    logger = logging.getLogger("test.jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def page(job: Job) -> None:
        logger.info("paging for %s with xoxb-secret-token-123", job.payload["incident"])

    try:
        await wrap_job_handler(page)(Job(id="j-1", kind="incident.page", payload={"incident": "INC-7", "run": "r9"},
                                         attempt=1, enqueued_at=0.0))
        logger.info("outside any job")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["job_id"] == "j-1" and inside["job_kind"] == "incident.page"
    assert inside["incident_id"] == "INC-7" and inside["run_id"] == "r9"
    assert inside["msg"] == "paging for INC-7 with [redacted]"
    assert "job_id" not in outside and "incident_id" not in outside
