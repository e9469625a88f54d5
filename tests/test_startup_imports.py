"""A process that answers Slack over HTTP imports only what answering needs: building the app as `chatops run
--no-worker` does and acking a signed `/incident list`, `/diagnose api` and `/diagnose list` leaves pydantic (the
bot validates with msgspec), the Postgres driver, boto3 and botocore, Jinja2, the postmortem code, google-auth, Pillow and matplotlib (charts), cryptography's
X.509 (SNS signatures), httpx (probes, trackers), the alert sources' parsers and every check module unimported: each
costs start-up time and memory in every HTTP process, and the code that uses them imports them when it first runs
(a check's module and SDK with the check, in a worker; a source's parser with its first webhook; the timeline
capture and thread summaries with the first channel event). Planning reads checks/catalog.py alone. A fresh
interpreter, so nothing another test imported counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from checks.catalog import MODULES
from tests.app_harness import BOT_TOKEN
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET

ROOT = Path(__file__).resolve().parent.parent
NOT_ON_THE_HTTP_PATH = ["pydantic", "psycopg", "boto3", "botocore", "jinja2", "bot.writeup.postmortem.assemble", "google.auth",
                        "PIL", "matplotlib", "cryptography.x509", "httpx",
                        *(f"bot.alerts.{m}" for m in ("alertmanager", "cloudwatch", "datadog", "generic", "grafana",
                                                      "sns", "sns_fetch")),
                        "bot.writeup.capture", "bot.writeup.summaries",
                        *sorted(set(MODULES.values())), "checks.aws", "checks.gcp", "checks.net", "checks.iac"]

SCRIPT = """
import asyncio, gc, json, sys
from urllib.parse import urlencode

from bot.app.bolt import create_app
from bot.app.features import create_full_runtime
from bot.app.http_server import create_asgi
from bot.app.processes import hold_collection, warm_up
from bot.settings import load_settings
from tests.fixtures.slack import SLACK_TEST_SIGNING_SECRET, signed_headers


async def post(asgi, form):
    body = urlencode({"team_id": "T0LOCAL", "user_id": "U1", "user_name": "u", "channel_id": "CIMPORTS",
                      "channel_name": "c", "trigger_id": "t", "response_url": sys.argv[1], **form}).encode()
    signed = signed_headers(body.decode(), SLACK_TEST_SIGNING_SECRET)
    headers = [(k.lower().encode(), v.encode()) for k, v in signed.items()]
    scope = {"type": "http", "method": "POST", "path": "/slack/events", "query_string": b"", "headers": headers,
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    messages, sent = [{"type": "http.request", "body": body, "more_body": False}], []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await asgi(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()


async def main():
    hold_collection()
    rt = await create_full_runtime(load_settings(), redis_url=None)
    try:
        rt.services()
        warm_up()
        collecting = gc.isenabled()
        asgi = create_asgi(create_app(rt), rt)
        answers = [await post(asgi, {"command": "/incident", "text": "list"}),
                   await post(asgi, {"command": "/diagnose", "text": "api"}),
                   await post(asgi, {"command": "/diagnose", "text": "list"})]
    finally:
        await rt.aclose()
    print(json.dumps({"answers": answers, "loaded": sorted(sys.modules), "collecting": collecting}))


asyncio.run(main())
"""


def test_answering_slack_over_http_leaves_the_heavy_modules_unimported(local_slack, redis_url: str, tmp_path) -> None:
    local_slack.add_user("U1", "u1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "REDIS_", "HTTP_WORKERS"))}
    env.update(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SLACK_TEST_SIGNING_SECRET, SLACK_API_URL=local_slack.url,
               REDIS_URL=redis_url, REDIS_NAMESPACE=f"imports{os.getpid()}", LOG_LEVEL="ERROR",
               CHATOPS_DATA_DIR=str(tmp_path), SERVICES_FILE=str(ROOT / "services.example.yml"))
    done = subprocess.run([sys.executable, "-c", SCRIPT, local_slack.response_url()], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    (list_status, list_text), (diagnose_status, diagnose_text), (services_status, services_text) = report["answers"]
    assert list_status == 200 and "incident" in list_text.lower(), list_text
    # the plan really ran: services.example.yml's api has an HTTP probe, a DNS name and a TLS endpoint
    assert diagnose_status == 200 and "Queued 3 checks for `api`" in diagnose_text, diagnose_text
    assert services_status == 200 and "`api`" in services_text and "http.health" in services_text, services_text
    assert "postgres.locks" in services_text  # the db service's checks, named without importing their module
    assert report["collecting"]  # the collector, off while the process started, is on again when it answers
    loaded = report["loaded"]
    assert [m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in NOT_ON_THE_HTTP_PATH)] == []
